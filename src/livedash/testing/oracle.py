"""Every metric, recomputed from scratch with plain SQL: the truth the engine must equal.

Written independently of `livedash.metrics`, against the raw tables, as a DBA would, on SQLite
and PostgreSQL alike. Where the two differ (SQLite stores timestamps as text, compared through
`julianday`; PostgreSQL has real timestamps) a `_Dialect` says how to spell it; the arithmetic
(rates, money, hours) is done in Python on the integers SQL returns, so both round the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from livedash.metrics.definitions import ALERT_SEVERITIES

Key = tuple[str, str | None]
"""(metric, department); `None` is the whole hospital."""
Values = dict[Key, int | float | Decimal]


@dataclass(frozen=True, slots=True)
class _Dialect:
    moment: str
    """A stored timestamp (column or bound parameter), as something that compares in time."""
    stay_seconds: str
    """Whole seconds from `admitted_at` to `discharged_at`, never below 0."""
    text_timestamps: bool
    """Bound timestamps are written as text (SQLite) rather than passed as datetimes."""

    def bound(self, moment: datetime) -> str | datetime:
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if self.text_timestamps else moment


_DIALECTS = {
    "sqlite": _Dialect(
        moment="julianday({})",
        stay_seconds="MAX(0, CAST(strftime('%s', discharged_at) AS INTEGER) "
        "- CAST(strftime('%s', admitted_at) AS INTEGER))",
        text_timestamps=True,
    ),
    "postgresql": _Dialect(
        moment="{}",
        stay_seconds="GREATEST(0, FLOOR(EXTRACT(EPOCH FROM discharged_at - admitted_at)))",
        text_timestamps=False,
    ),
}


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    """The local midnight starting `day`, as the naive UTC moment the tables store."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


async def recompute(database_url: str, zone: ZoneInfo, today: date) -> Values:
    """Every metric about the hospital's data (not the service's own health), per scope."""
    bounds = {
        "start": _day_start(today, zone),
        "end": _day_start(today + timedelta(days=1), zone),
        "week": _day_start(today - timedelta(days=today.weekday()), zone),
        "month": _day_start(today.replace(day=1), zone),
        "alos": _day_start(today - timedelta(days=29), zone),
    }
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            dialect = _DIALECTS[connection.dialect.name]
            parameters = {name: dialect.bound(moment) for name, moment in bounds.items()}
            departments = (await connection.execute(text("SELECT id, code FROM departments"))).all()
            values: Values = {}
            for department_id, code in [(None, None), *departments]:
                values.update(
                    await _department(connection, dialect, department_id, code, parameters)
                )
            return values
    finally:
        await engine.dispose()


async def _department(
    connection: AsyncConnection,
    dialect: _Dialect,
    department_id: int | None,
    key: str | None,
    bounds: dict[str, Any],
) -> Values:
    parameters: dict[str, Any] = {"d": department_id, **bounds}

    async def one(sql: str) -> int:
        return int((await connection.execute(text(sql), parameters)).scalar_one())

    def between(column: str, start: str) -> str:
        """`column` in [:start, :end)."""
        moment = dialect.moment
        return (
            f"{moment.format(column)} >= {moment.format(':' + start)} "
            f"AND {moment.format(column)} < {moment.format(':end')}"
        )

    values: Values = {}
    where = "1=1" if department_id is None else "department_id = :d"
    room_where = "1=1" if department_id is None else "r.department_id = :d"
    bed_join = "beds b" if department_id is None else "beds b JOIN rooms r ON r.id = b.room_id"
    bed_where = "1=1" if department_id is None else room_where

    values["patients_total", key] = await one(f"SELECT COUNT(*) FROM patients WHERE {where}")
    values["patients_active", key] = await one(
        f"SELECT COUNT(*) FROM patients WHERE {where} AND status = 'active'"
    )
    values["patients_waiting", key] = await one(
        f"SELECT COUNT(*) FROM patients WHERE {where} AND status = 'registered'"
    )
    values["patients_new_today", key] = await one(
        f"SELECT COUNT(*) FROM patients WHERE {where} AND " + between("registered_at", "start")
    )
    values["patients_emergency", key] = await one(
        f"SELECT COUNT(*) FROM patients WHERE {where} AND emergency AND status <> 'discharged'"
    )
    by_status: dict[str, int] = {
        status: int(count)
        for status, count in await connection.execute(
            text(f"SELECT b.status, COUNT(*) FROM {bed_join} WHERE {bed_where} GROUP BY b.status"),
            parameters,
        )
    }
    total = await one(f"SELECT COUNT(*) FROM {bed_join} WHERE {bed_where}")
    occupied = by_status.get("occupied", 0)
    out = by_status.get("out_of_service", 0)
    values["beds_total", key] = total
    values["beds_occupied", key] = occupied
    values["beds_free", key] = by_status.get("free", 0)
    values["beds_cleaning", key] = by_status.get("cleaning", 0)
    values["beds_out_of_service", key] = out
    values["bed_occupancy_rate", key] = _rate(occupied, total - out)
    rooms = await one(f"SELECT COUNT(*) FROM rooms r WHERE {room_where}")
    rooms_occupied = await one(
        f"SELECT COUNT(*) FROM rooms r WHERE {room_where} AND EXISTS "
        "(SELECT 1 FROM beds b WHERE b.room_id = r.id AND b.status = 'occupied')"
    )
    values["rooms_total", key] = rooms
    values["rooms_occupied", key] = rooms_occupied
    values["room_occupancy_rate", key] = _rate(rooms_occupied, rooms)
    values["staff_on_duty", key] = await one(
        f"SELECT COUNT(*) FROM staff_shifts WHERE {where} AND clock_out_at IS NULL"
    )
    values["appointments_today", key] = await one(
        f"SELECT COUNT(*) FROM appointments WHERE {where} AND " + between("scheduled_at", "start")
    )
    for status in ("scheduled", "checked_in", "completed", "cancelled", "no_show"):
        values[f"appointments_{status}_today", key] = await one(
            f"SELECT COUNT(*) FROM appointments WHERE {where} AND status = '{status}' AND "
            + between("scheduled_at", "start")
        )
    for severity in ALERT_SEVERITIES:
        values[f"alerts_active_{severity}", key] = await one(
            f"SELECT COUNT(*) FROM alerts WHERE {where} AND status <> 'resolved' "
            f"AND severity = '{severity}'"
        )
    for period, start in (("today", "start"), ("week", "week"), ("month", "month")):
        cents = await one(
            f"SELECT COALESCE(SUM(amount_cents), 0) FROM payments WHERE {where} AND "
            + between("paid_at", start)
        )
        values[f"revenue_{period}", key] = Decimal(cents) / 100
    values["admissions_today", key] = await one(
        f"SELECT COUNT(*) FROM admissions WHERE {where} AND " + between("admitted_at", "start")
    )
    values["discharges_today", key] = await one(
        f"SELECT COUNT(*) FROM admissions WHERE {where} AND " + between("discharged_at", "start")
    )
    stays, seconds = (
        await connection.execute(
            text(
                f"SELECT COUNT(*), COALESCE(SUM({dialect.stay_seconds}), 0) FROM admissions "
                f"WHERE {where} AND admitted_at IS NOT NULL AND " + between("discharged_at", "alos")
            ),
            parameters,
        )
    ).one()
    values["average_length_of_stay_hours", key] = (
        round(int(seconds) / 3600 / stays, 2) if stays else 0.0
    )
    return values


def snapshot_values(values: list[dict[str, Any]]) -> Values:
    """A `metrics_snapshot`'s values in the oracle's shape."""
    return {(value["metric"], value["department"]): value["value"] for value in values}


def comparable(value: Any) -> Any:
    """A value as received (money arrives as a decimal string) in the oracle's terms."""
    return Decimal(value) if isinstance(value, str) else value


def differences(
    shown: Mapping[Key, tuple[int, Any]], truth: Mapping[Key, Any]
) -> dict[Key, tuple[Any, Any]]:
    """(shown, SQL) for every key of `truth` that a screen (key -> (version, value)) does not
    show as SQL says; shown is None where the screen has no value."""
    wrong: dict[Key, tuple[Any, Any]] = {}
    for key, expected in truth.items():
        held = shown.get(key)
        value = None if held is None else comparable(held[1])
        if value != expected:
            wrong[key] = (value, expected)
    return wrong
