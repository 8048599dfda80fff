"""Who hears of an alert: the recipients of each alert event, and their in-app notifications.

The leader's `AlertService` hands every alert event here (`on_alert`): `raised` goes to the
active users who may see the alert's department and whose preferences allow it, `resolved` to
those of them who were told of it; `escalated` goes to the next tier whatever their filters
(level 1: the department's admins; level 2 and up: the super_admins).

Each recipient's in-app notification is written once (its idempotency key names the alert,
the event, the escalation level and the user: a retry or a second leader writes nothing
more) and pushed at once to that user's sockets as a `notification` event. Silenced alerts
(see `alerts/silences.py`) notify nobody; the alert itself is still shown.

In-app notifications are counted for Prometheus (`in_app`): written and pushed (`sent`), or
not written because the database refused (`failed`, one per recipient; the alert service
logs the error).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.alerts.messages import ESCALATED, RESOLVED, AlertMessage, Screens
from livedash.metrics.clock import Clock
from livedash.notifications.delivery import Delivery, DeliveryWorker
from livedash.notifications.messages import NOTIFICATION_EVENT, NotificationMessage
from livedash.notifications.preferences import (
    EMAIL,
    IN_APP,
    PUSH,
    Preferences,
    load_preferences,
    severity_rank,
)
from livedash.store.engine import write_locking
from livedash.store.models import (
    AlertSeverity,
    Notification,
    NotificationDelivery,
    PushSubscription,
    Role,
    User,
)

log = structlog.get_logger(__name__)

URGENT_RANK = severity_rank(AlertSeverity.HIGH.value)  # e-mail and push: HIGH and CRITICAL


@dataclass(frozen=True, slots=True)
class Recipient:
    username: str
    preferences: Preferences
    channels: frozenset[str]


Silenced = Callable[[AlertMessage, datetime], Awaitable[bool]]


class Dispatcher:
    """The alert events' recipients and in-app notifications; see the module's docstring."""

    def __init__(
        self,
        database: AsyncEngine,
        screens: Screens,
        clock: Clock,
        zone: ZoneInfo,
        *,
        silenced: Silenced | None = None,
        deliveries: DeliveryWorker | None = None,
    ) -> None:
        self._reader = database
        self._writer = write_locking(database)
        self._screens = screens
        self._clock = clock
        self._zone = zone
        self._silenced = silenced
        self._deliveries = deliveries
        self.in_app: Counter[str] = Counter()  # sent | failed

    async def on_alert(self, message: AlertMessage, event: str, level: int = 0) -> None:
        """Tell the recipients of `event` (raised, escalated, resolved) of `message`."""
        now = self._clock.now()
        if self._silenced is not None and await self._silenced(message, now):
            log.info("alert_notification_silenced", alert=message.id, alert_event=event)
            return
        async with self._reader.connect() as connection:
            recipients = await self._recipients(connection, message, event, level, now)
        try:
            written = await self._write_in_app(message, event, level, recipients, now)
        except Exception:
            self.in_app["failed"] += sum(IN_APP in r.channels for r in recipients)
            raise
        self.in_app["sent"] += len(written)
        for username, notification in written:
            await self._screens.to_user(
                username, NOTIFICATION_EVENT, notification.model_dump(mode="json")
            )
        if self._deliveries is not None:
            await self._deliveries.add(await self._outbound(message, event, level, recipients))
        log.info(
            "alert_notified",
            alert=message.id,
            alert_event=event,
            level=level,
            recipients=len(recipients),
            in_app=len(written),
        )

    async def _recipients(
        self,
        connection: AsyncConnection,
        message: AlertMessage,
        event: str,
        level: int,
        now: datetime,
    ) -> list[Recipient]:
        users = (
            await connection.execute(
                select(User.username, User.role, User.departments).where(User.active.is_(True))
            )
        ).all()
        escalation = event == ESCALATED
        chosen = [
            username
            for username, role, departments in users
            if _addressed(role, departments or [], message.department, escalation, level)
        ]
        if event == RESOLVED:
            # Only those who were told it began: a resolution of an alert someone never
            # heard of (silenced, muted, below their severity) is noise.
            told = set(
                (
                    await connection.execute(
                        select(Notification.username).where(
                            Notification.alert_id == message.id,
                            Notification.event != RESOLVED,
                        )
                    )
                ).scalars()
            ) | set(
                (
                    await connection.execute(
                        select(NotificationDelivery.username).where(
                            NotificationDelivery.alert_id == message.id,
                            NotificationDelivery.event != RESOLVED,
                        )
                    )
                ).scalars()
            )
            chosen = [username for username in chosen if username in told]
        preferences = await load_preferences(connection, chosen)
        sent = await _sent_last_hour(connection, chosen, now)
        local = now.astimezone(self._zone).time()
        recipients = []
        for username in chosen:
            channels = preferences[username].channels_for(
                severity=message.severity,
                department=message.department,
                escalation=escalation,
                local=local,
                sent_this_hour=sent.get(username, 0),
            )
            if channels:
                recipients.append(Recipient(username, preferences[username], frozenset(channels)))
        return recipients

    async def _write_in_app(
        self,
        message: AlertMessage,
        event: str,
        level: int,
        recipients: Sequence[Recipient],
        now: datetime,
    ) -> list[tuple[str, NotificationMessage]]:
        written: list[tuple[str, NotificationMessage]] = []
        at = now.astimezone(UTC).replace(tzinfo=None)
        async with self._writer.begin() as connection:
            for recipient in recipients:
                if IN_APP not in recipient.channels:
                    continue
                key = f"alert:{message.id}:{event}:{level}:{recipient.username}"
                exists = await connection.scalar(
                    select(Notification.id).where(Notification.idempotency_key == key)
                )
                if exists is not None:
                    continue  # written by an earlier attempt
                notification_id = await connection.scalar(
                    insert(Notification)
                    .values(
                        username=recipient.username,
                        alert_id=message.id,
                        event=event,
                        severity=message.severity,
                        title=message.title,
                        department=message.department,
                        created_at=at,
                        idempotency_key=key,
                    )
                    .returning(Notification.id)
                )
                assert notification_id is not None
                written.append(
                    (
                        recipient.username,
                        NotificationMessage(
                            id=notification_id,
                            alert_id=message.id,
                            event=event,
                            severity=message.severity,
                            title=message.title,
                            department=message.department,
                            created_at=now,
                        ),
                    )
                )
        return written

    async def _outbound(
        self, message: AlertMessage, event: str, level: int, recipients: Sequence[Recipient]
    ) -> list[Delivery]:
        """The e-mails and pushes of this event: HIGH and CRITICAL alerts only."""
        if self._deliveries is None or severity_rank(message.severity) < URGENT_RANK:
            return []
        available = self._deliveries.channels
        wanted = [r for r in recipients if r.channels & available & {EMAIL, PUSH}]
        if not wanted:
            return []
        async with self._reader.connect() as connection:
            rows = (
                await connection.execute(
                    select(PushSubscription.id, PushSubscription.username).where(
                        PushSubscription.username.in_([r.username for r in wanted])
                    )
                )
            ).all()
        devices: dict[str, list[int]] = {}
        for subscription_id, username in rows:
            devices.setdefault(username, []).append(subscription_id)
        base = f"alert:{message.id}:{event}:{level}"
        out: list[Delivery] = []
        for recipient in wanted:
            name = recipient.username
            if EMAIL in recipient.channels & available and recipient.preferences.email:
                out.append(
                    Delivery(f"{base}:{name}:email", EMAIL, name, message.id, event,
                             recipient.preferences.email)
                )  # fmt: skip
            if PUSH in recipient.channels & available:
                out += [
                    Delivery(f"{base}:{name}:push:{device}", PUSH, name, message.id, event,
                             str(device))
                    for device in devices.get(name, [])
                ]  # fmt: skip
        return out


def _addressed(
    role: str, departments: list[str], department: str | None, escalation: bool, level: int
) -> bool:
    """Whether a user of `role` and `departments` is addressed by the event."""
    if escalation:
        if level <= 1:
            return role == Role.ADMIN.value and department in departments
        return role == Role.SUPER_ADMIN.value
    if role == Role.SUPER_ADMIN.value:
        return True
    return department is not None and department in departments


async def _sent_last_hour(
    connection: AsyncConnection, usernames: Sequence[str], now: datetime
) -> dict[str, int]:
    if not usernames:
        return {}
    # The cap is of e-mails and pushes: what reaches a person outside the dashboard.
    since = (now - timedelta(hours=1)).astimezone(UTC).replace(tzinfo=None)
    rows = await connection.execute(
        select(NotificationDelivery.username, func.count())
        .where(
            NotificationDelivery.username.in_(usernames),
            NotificationDelivery.created_at >= since,
        )
        .group_by(NotificationDelivery.username)
    )
    return {username: count for username, count in rows.all()}
