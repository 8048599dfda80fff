"""The stored form of alerts: one row per alert, one row per transition of it.

Every writer of alerts goes through these (the threshold and anomaly rules on the leader, and
people acknowledging or resolving on any instance), inside the caller's transaction, and gets
the row back as it now is, to tell the screens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.store.models import Alert, AlertStatus, AlertTransition


def naive(moment: datetime) -> datetime:
    """`moment` as the database keeps times: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)


async def raise_alert(connection: AsyncConnection, **values: Any) -> RowMapping:
    """A new active alert with `values` (its columns); its row."""
    result = await connection.execute(
        insert(Alert)
        .values(status=AlertStatus.ACTIVE.value, **values)
        .returning(*Alert.__table__.c)
    )
    return result.mappings().one()


async def change_alert(
    connection: AsyncConnection, alert_id: int, **changes: Any
) -> RowMapping | None:
    """Change open alert `alert_id`'s columns; its row, or None if there is no such alert or
    it is resolved (checked in the update itself: a resolution made meanwhile on another
    instance is never undone)."""
    result = await connection.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status != AlertStatus.RESOLVED.value)
        .values(**changes)
        .returning(*Alert.__table__.c)
    )
    return result.mappings().one_or_none()


async def alert_row(connection: AsyncConnection, alert_id: int) -> RowMapping | None:
    result = await connection.execute(select(*Alert.__table__.c).where(Alert.id == alert_id))
    return result.mappings().one_or_none()


async def add_transition(
    connection: AsyncConnection,
    *,
    alert_id: int | None,
    rule: str,
    department_id: int | None,
    before: str,
    after: str,
    at: datetime,
    value: float | None,
    actor: str | None = None,
) -> None:
    """Record one transition (`at`: aware)."""
    await connection.execute(
        insert(AlertTransition).values(
            alert_id=alert_id,
            rule=rule,
            department_id=department_id,
            before=before,
            after=after,
            at=naive(at),
            value=value,
            actor=actor,
        )
    )
