"""A user's own notification things: the in-app history, the unread count, marking read,
and the browsers registered for Web Push."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.notifications.messages import NotificationMessage
from livedash.notifications.push import PushSubscription as Subscription
from livedash.store.engine import write_locking
from livedash.store.models import Notification, PushSubscription

MAX_LISTED = 200


class Inbox:
    """Every user's notifications; each call is for one user, who sees only their own."""

    def __init__(self, database: AsyncEngine) -> None:
        self._reader = database
        self._writer = write_locking(database)

    async def listed(
        self,
        username: str,
        *,
        unread_only: bool = False,
        before: int | None = None,
        limit: int = 50,
    ) -> tuple[int, list[NotificationMessage]]:
        """The unread count, and the newest notifications (only unread ones if asked); with
        `before`, only those of a smaller id (the next page)."""
        query = (
            select(*Notification.__table__.c)
            .where(Notification.username == username)
            .order_by(Notification.id.desc())
            .limit(min(limit, MAX_LISTED + 1))
        )
        if unread_only:
            query = query.where(Notification.read_at.is_(None))
        if before is not None:
            query = query.where(Notification.id < before)
        async with self._reader.connect() as connection:
            unread = await connection.scalar(
                select(func.count()).where(
                    Notification.username == username, Notification.read_at.is_(None)
                )
            )
            rows = (await connection.execute(query)).mappings().all()
        return int(unread or 0), [
            NotificationMessage(
                id=row["id"],
                alert_id=row["alert_id"],
                event=row["event"],
                severity=row["severity"],
                title=row["title"],
                department=row["department"],
                created_at=row["created_at"].replace(tzinfo=UTC),
                read=row["read_at"] is not None,
            )
            for row in rows
        ]

    async def mark_read(self, username: str, notification_id: int | None = None) -> int:
        """Mark one notification (or, with None, every one) of `username` read; how many
        changed. Another user's notification is never touched."""
        query = update(Notification).where(
            Notification.username == username, Notification.read_at.is_(None)
        )
        if notification_id is not None:
            query = query.where(Notification.id == notification_id)
        async with self._writer.begin() as connection:
            result = await connection.execute(
                query.values(read_at=datetime.now(UTC).replace(tzinfo=None))
            )
        return int(result.rowcount)


async def register_push(database: AsyncEngine, username: str, subscription: Subscription) -> int:
    """Store a browser's push subscription for `username`; its id. The same browser again
    keeps its row; a browser another user had registered becomes a new one (the other's
    pending pushes never reach it)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    async with write_locking(database).begin() as connection:
        existing = (
            await connection.execute(
                select(PushSubscription.id, PushSubscription.username).where(
                    PushSubscription.endpoint == subscription.endpoint
                )
            )
        ).first()
        if existing is not None and existing[1] == username:
            await connection.execute(
                update(PushSubscription)
                .where(PushSubscription.id == existing[0])
                .values(p256dh=subscription.p256dh, auth=subscription.auth, created_at=now)
            )
            return int(existing[0])
        if existing is not None:
            await connection.execute(
                delete(PushSubscription).where(PushSubscription.id == existing[0])
            )
        created = await connection.scalar(
            insert(PushSubscription)
            .values(
                username=username,
                endpoint=subscription.endpoint,
                p256dh=subscription.p256dh,
                auth=subscription.auth,
                created_at=now,
            )
            .returning(PushSubscription.id)
        )
        return int(created or 0)


async def forget_push(database: AsyncEngine, username: str, subscription_id: int) -> int:
    """Remove one of `username`'s push subscriptions; how many were removed (0 or 1)."""
    async with write_locking(database).begin() as connection:
        result = await connection.execute(
            delete(PushSubscription).where(
                PushSubscription.id == subscription_id, PushSubscription.username == username
            )
        )
    return int(result.rowcount)
