"""A user's in-app notifications: the history, the unread count, marking them read."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.realtime.schemas import NotificationMessage
from livedash.store.engine import write_locking
from livedash.store.models import Notification

MAX_LISTED = 200


class Inbox:
    """Every user's notifications; each call is for one user, who sees only their own."""

    def __init__(self, database: AsyncEngine) -> None:
        self._reader = database
        self._writer = write_locking(database)

    async def listed(
        self, username: str, *, unread_only: bool = False, limit: int = 50
    ) -> tuple[int, list[NotificationMessage]]:
        """The unread count, and the newest notifications (only unread ones if asked)."""
        query = (
            select(*Notification.__table__.c)
            .where(Notification.username == username)
            .order_by(Notification.id.desc())
            .limit(min(limit, MAX_LISTED))
        )
        if unread_only:
            query = query.where(Notification.read_at.is_(None))
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
