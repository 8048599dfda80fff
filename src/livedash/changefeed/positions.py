"""The `feed_positions` table: each consumer's last applied position, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_LOAD = text("SELECT position FROM feed_positions WHERE consumer = :consumer")
# Never moves back: a late confirm of an older position leaves the newer one.
_STORE = text(
    "INSERT INTO feed_positions (consumer, position, updated_at) "
    "VALUES (:consumer, :position, :now) "
    "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, "
    "updated_at = excluded.updated_at WHERE excluded.position > feed_positions.position"
)


async def load_position(connection: AsyncConnection, consumer: str) -> int:
    """The position stored for `consumer`, or 0."""
    return int(await connection.scalar(_LOAD, {"consumer": consumer}) or 0)


async def store_position(connection: AsyncConnection, consumer: str, position: int) -> None:
    """Store `position` for `consumer` in the caller's transaction."""
    await connection.execute(
        _STORE,
        {"consumer": consumer, "position": position, "now": datetime.now(UTC).replace(tzinfo=None)},
    )
