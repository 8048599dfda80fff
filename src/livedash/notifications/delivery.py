"""E-mail and Web Push deliveries: a durable ledger, sent once each, retried with backoff.

The dispatcher adds a delivery per (alert event, user, channel, target) to the
`notification_deliveries` ledger, keyed by its idempotency key: adding it again (a retry, a
second leader) changes nothing. `DeliveryWorker` takes due deliveries by *claiming* them (a
conditional update that only one worker can win, with a lease), sends, and marks them sent;
a failure is retried with exponential backoff up to `MAX_ATTEMPTS`, a permanent one is
marked failed, and an expired push subscription is removed. A worker that dies while sending
leaves its lease to expire; another worker then takes the delivery over.

Counted for Prometheus: deliveries sent and given up (`failed`: permanently, or after the
last attempt), by channel, and the ledger's deliveries still to send (`pending`), as of the
worker's last round.

Why the database rather than arq: the ledger is what makes a delivery happen once (arq's job
ids dedupe only while the job is queued or its result kept), it is the same on SQLite and
PostgreSQL, and it survives Redis being down. The worker runs on the leader, woken when a
delivery is added and otherwise at the next due time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.alerts.lifecycle import alert_message, department_codes
from livedash.alerts.records import naive
from livedash.metrics.clock import Clock
from livedash.notifications.notice import AlertNotice, DeliveryError, SubscriptionGone
from livedash.notifications.push import PushSubscription as Subscription
from livedash.store.engine import write_locking
from livedash.store.models import (
    Alert,
    Department,
    NotificationDelivery,
    PushSubscription,
)

log = structlog.get_logger(__name__)

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
MAX_ATTEMPTS = 6
FIRST_RETRY = timedelta(seconds=2)
BATCH = 20
RETRY_ROUND_SECONDS = 1.0  # after a round the database did not answer


@dataclass(frozen=True, slots=True)
class Delivery:
    """One e-mail or push to send."""

    key: str
    channel: str  # "email" or "push"
    username: str
    alert_id: int
    event: str
    target: str  # the address, or the push subscription's id


class EmailChannel(Protocol):
    async def send(self, to: str, notice: AlertNotice, *, idempotency_key: str) -> None: ...


class PushChannel(Protocol):
    application_server_key: str

    async def send(self, subscription: Subscription, notice: AlertNotice) -> None: ...


class DeliveryWorker:
    """Sends the ledger's due deliveries; see the module's docstring."""

    def __init__(
        self,
        database: AsyncEngine,
        clock: Clock,
        zone: ZoneInfo,
        *,
        hospital: str,
        public_url: str,
        email: EmailChannel | None,
        push: PushChannel | None,
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        self._reader = database
        self._writer = write_locking(database)
        self._clock = clock
        self._zone = zone
        self._hospital = hospital
        self._public_url = public_url.rstrip("/")
        self._email = email
        self._push = push
        self._lease = lease
        self._wake = asyncio.Event()
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (channel, sent | failed)
        self.pending = 0  # pending or being sent, as of the worker's last round

    @property
    def application_server_key(self) -> str | None:
        """The VAPID public key browsers subscribe with, if push is set up."""
        return self._push.application_server_key if self._push is not None else None

    @property
    def channels(self) -> frozenset[str]:
        """The channels this deployment can send on (configured)."""
        return frozenset(
            name for name, channel in (("email", self._email), ("push", self._push)) if channel
        )

    async def add(self, deliveries: Sequence[Delivery]) -> int:
        """Add deliveries to the ledger (those already there are left as they are)."""
        now = naive(self._clock.now())
        added = 0
        async with self._writer.begin() as connection:
            for delivery in deliveries:
                known = await connection.scalar(
                    select(NotificationDelivery.key).where(NotificationDelivery.key == delivery.key)
                )
                if known is not None:
                    continue
                await connection.execute(
                    insert(NotificationDelivery).values(
                        key=delivery.key,
                        channel=delivery.channel,
                        username=delivery.username,
                        alert_id=delivery.alert_id,
                        event=delivery.event,
                        target=delivery.target,
                        status=PENDING,
                        attempts=0,
                        due_at=now,
                        created_at=now,
                    )
                )
                added += 1
        if added:
            self._wake.set()
        return added

    async def run(self) -> None:
        """Send due deliveries until cancelled."""
        while True:
            self._wake.clear()
            try:
                if await self.work_once():
                    continue
                wait = await self._until_next_due()
            except Exception:  # the database is down, say: try again shortly
                log.exception("delivery_round_failed")
                wait = RETRY_ROUND_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def work_once(self) -> int:
        """Claim and send the deliveries due now; how many were claimed."""
        claimed = await self._claim()
        for delivery in claimed:
            await self._send(delivery)
        return len(claimed)

    async def _until_next_due(self) -> float:
        now = naive(self._clock.now())
        async with self._reader.connect() as connection:
            due = await connection.scalar(
                select(NotificationDelivery.due_at)
                .where(NotificationDelivery.status == PENDING)
                .order_by(NotificationDelivery.due_at)
                .limit(1)
            )
            lease = await connection.scalar(
                select(NotificationDelivery.lease_until)
                .where(NotificationDelivery.status == SENDING)
                .order_by(NotificationDelivery.lease_until)
                .limit(1)
            )
            self.pending = (
                await connection.scalar(
                    select(func.count())
                    .select_from(NotificationDelivery)
                    .where(NotificationDelivery.status.in_((PENDING, SENDING)))
                )
                or 0
            )
        moments = [moment for moment in (due, lease) if moment is not None]
        if not moments:
            return 60.0
        return max((min(moments) - now).total_seconds(), 0.05)

    async def _claim(self) -> list[Delivery]:
        now = naive(self._clock.now())
        due = or_(
            (NotificationDelivery.status == PENDING) & (NotificationDelivery.due_at <= now),
            (NotificationDelivery.status == SENDING) & (NotificationDelivery.lease_until < now),
        )
        claimed: list[Delivery] = []
        async with self._writer.begin() as connection:
            rows = (
                (
                    await connection.execute(
                        select(*NotificationDelivery.__table__.c)
                        .where(due)
                        .order_by(NotificationDelivery.due_at)
                        .limit(BATCH)
                    )
                )
                .mappings()
                .all()
            )
            for row in rows:
                # Only one worker's update matches: the row is no longer due after it.
                won = await connection.execute(
                    update(NotificationDelivery)
                    .where(NotificationDelivery.key == row["key"], due)
                    .values(
                        status=SENDING, lease_until=now + self._lease, attempts=row["attempts"] + 1
                    )
                )
                if won.rowcount == 1:
                    claimed.append(
                        Delivery(
                            row["key"],
                            row["channel"],
                            row["username"],
                            row["alert_id"],
                            row["event"],
                            row["target"],
                        )
                    )
        return claimed

    async def _send(self, delivery: Delivery) -> None:
        try:
            notice = await self._notice(delivery)
            if delivery.channel == "email":
                if self._email is None:
                    raise DeliveryError("no SMTP server is configured", retryable=False)
                await self._email.send(delivery.target, notice, idempotency_key=delivery.key)
            elif delivery.channel == "push":
                if self._push is None:
                    raise DeliveryError("no VAPID key is configured", retryable=False)
                subscription = await self._subscription(int(delivery.target), delivery.username)
                if subscription is None:
                    raise DeliveryError("the push subscription was removed", retryable=False)
                await self._push.send(subscription, notice)
            else:
                raise DeliveryError(f"unknown channel {delivery.channel!r}", retryable=False)
        except SubscriptionGone as gone:
            self.outcomes[delivery.channel, FAILED] += 1
            await self._finish(delivery, FAILED, str(gone))
            await self._forget_subscription(int(delivery.target))
        except DeliveryError as error:
            await self._retry_or_fail(delivery, error)
        except Exception as error:  # a bug or an unexpected library error: retried, logged
            log.exception("delivery_failed_unexpectedly", key=delivery.key)
            await self._retry_or_fail(delivery, DeliveryError(repr(error), retryable=True))
        else:
            await self._finish(delivery, SENT, None)
            self.outcomes[delivery.channel, SENT] += 1
            log.info("notification_sent", channel=delivery.channel, key=delivery.key)

    async def _retry_or_fail(self, delivery: Delivery, error: DeliveryError) -> None:
        async with self._reader.connect() as connection:
            attempts = await connection.scalar(
                select(NotificationDelivery.attempts).where(
                    NotificationDelivery.key == delivery.key
                )
            )
        if not error.retryable or (attempts or 0) >= MAX_ATTEMPTS:
            self.outcomes[delivery.channel, FAILED] += 1
            log.warning(
                "notification_failed", channel=delivery.channel, key=delivery.key, error=str(error)
            )
            await self._finish(delivery, FAILED, str(error))
            return
        delay = FIRST_RETRY * (2 ** ((attempts or 1) - 1))
        if error.retry_after is not None:
            delay = max(delay, timedelta(seconds=error.retry_after))
        log.info("notification_retry", channel=delivery.channel, key=delivery.key, error=str(error))
        async with self._writer.begin() as connection:
            await connection.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.key == delivery.key)
                .values(
                    status=PENDING,
                    due_at=naive(self._clock.now() + delay),
                    lease_until=None,
                    last_error=str(error)[:500],
                )
            )

    async def _finish(self, delivery: Delivery, status: str, error: str | None) -> None:
        now = naive(self._clock.now())
        async with self._writer.begin() as connection:
            await connection.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.key == delivery.key)
                .values(
                    status=status,
                    lease_until=None,
                    last_error=error[:500] if error else None,
                    sent_at=now if status == SENT else None,
                )
            )

    async def _notice(self, delivery: Delivery) -> AlertNotice:
        async with self._reader.connect() as connection:
            row = (
                (
                    await connection.execute(
                        select(*Alert.__table__.c).where(Alert.id == delivery.alert_id)
                    )
                )
                .mappings()
                .one()
            )
            codes = await department_codes(connection)
            department = codes.get(row["department_id"]) if row["department_id"] else None
            name = (
                await connection.scalar(
                    select(Department.name).where(Department.code == department)
                )
                if department is not None
                else None
            )
        message = alert_message(row, department, self._clock.now(), None)
        return AlertNotice.from_alert(
            message,
            department_name=name,
            link=f"{self._public_url}/?alert={message.id}",
            hospital=self._hospital,
            zone=self._zone.key,
        )

    async def _subscription(self, subscription_id: int, username: str) -> Subscription | None:
        """The subscription, if it is still `username`'s (a browser that another user signed
        up on since must not get this user's alerts)."""
        async with self._reader.connect() as connection:
            row = (
                (
                    await connection.execute(
                        select(*PushSubscription.__table__.c).where(
                            PushSubscription.id == subscription_id,
                            PushSubscription.username == username,
                        )
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return Subscription.from_json(
            {"endpoint": row["endpoint"], "keys": {"p256dh": row["p256dh"], "auth": row["auth"]}},
            allow_http=True,
        )

    async def _forget_subscription(self, subscription_id: int) -> None:
        async with self._writer.begin() as connection:
            await connection.execute(
                delete(PushSubscription).where(PushSubscription.id == subscription_id)
            )
        log.info("push_subscription_gone", subscription=subscription_id)
