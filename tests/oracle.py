"""Every metric, recomputed from scratch with plain SQL: the truth the engine must equal.

Written independently of `livedash.metrics`, against the raw tables, as a DBA would.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

Values = dict[tuple[str, str | None], int | float | Decimal]


def _day_bounds(day: date, zone: ZoneInfo) -> tuple[str, str]:
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    return start.strftime(fmt), end.strftime(fmt)


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def recompute(database: Path, zone: ZoneInfo, today: date) -> Values:
    """Every metric about the hospital's data (not the service's own health), per scope."""
    bounds = {
        "start": _day_bounds(today, zone)[0],
        "end": _day_bounds(today, zone)[1],
        "week": _day_bounds(today - timedelta(days=today.weekday()), zone)[0],
        "month": _day_bounds(today.replace(day=1), zone)[0],
        "alos": _day_bounds(today - timedelta(days=29), zone)[0],
    }
    connection = sqlite3.connect(database)
    try:
        departments = connection.execute("SELECT id, code FROM departments").fetchall()
        values: Values = {}
        for department_id, code in [(None, None), *departments]:
            values.update(_department(connection, department_id, code, bounds))
        return values
    finally:
        connection.close()


def _department(
    connection: sqlite3.Connection,
    department_id: int | None,
    key: str | None,
    bounds: dict[str, str],
) -> Values:
    parameters: dict[str, Any] = {"d": department_id, **bounds}

    def one(sql: str) -> int:
        return int(connection.execute(sql, parameters).fetchone()[0])

    values: Values = {}
    where = "1=1" if department_id is None else "department_id = :d"
    room_where = "1=1" if department_id is None else "r.department_id = :d"
    bed_join = "beds b" if department_id is None else "beds b JOIN rooms r ON r.id = b.room_id"
    bed_where = "1=1" if department_id is None else room_where

    day = "julianday({col}) >= julianday(:start) AND julianday({col}) < julianday(:end)"
    values["patients_total", key] = one(f"SELECT COUNT(*) FROM patients WHERE {where}")
    values["patients_active", key] = one(
        f"SELECT COUNT(*) FROM patients WHERE {where} AND status = 'active'"
    )
    values["patients_waiting", key] = one(
        f"SELECT COUNT(*) FROM patients WHERE {where} AND status = 'registered'"
    )
    values["patients_new_today", key] = one(
        f"SELECT COUNT(*) FROM patients WHERE {where} AND " + day.format(col="registered_at")
    )
    values["patients_emergency", key] = one(
        f"SELECT COUNT(*) FROM patients WHERE {where} AND emergency AND status <> 'discharged'"
    )
    by_status = dict(
        connection.execute(
            f"SELECT b.status, COUNT(*) FROM {bed_join} WHERE {bed_where} GROUP BY b.status",
            parameters,
        ).fetchall()
    )
    total = one(f"SELECT COUNT(*) FROM {bed_join} WHERE {bed_where}")
    occupied = by_status.get("occupied", 0)
    out = by_status.get("out_of_service", 0)
    values["beds_total", key] = total
    values["beds_occupied", key] = occupied
    values["beds_free", key] = by_status.get("free", 0)
    values["beds_cleaning", key] = by_status.get("cleaning", 0)
    values["beds_out_of_service", key] = out
    values["bed_occupancy_rate", key] = _rate(occupied, total - out)
    rooms = one(f"SELECT COUNT(*) FROM rooms r WHERE {room_where}")
    rooms_occupied = one(
        f"SELECT COUNT(*) FROM rooms r WHERE {room_where} AND EXISTS "
        "(SELECT 1 FROM beds b WHERE b.room_id = r.id AND b.status = 'occupied')"
    )
    values["rooms_total", key] = rooms
    values["rooms_occupied", key] = rooms_occupied
    values["room_occupancy_rate", key] = _rate(rooms_occupied, rooms)
    values["staff_on_duty", key] = one(
        f"SELECT COUNT(*) FROM staff_shifts WHERE {where} AND clock_out_at IS NULL"
    )
    values["appointments_today", key] = one(
        f"SELECT COUNT(*) FROM appointments WHERE {where} AND " + day.format(col="scheduled_at")
    )
    for status in ("scheduled", "checked_in", "completed", "cancelled", "no_show"):
        values[f"appointments_{status}_today", key] = one(
            f"SELECT COUNT(*) FROM appointments WHERE {where} AND status = '{status}' AND "
            + day.format(col="scheduled_at")
        )
    for severity in ("critical", "warning", "info"):
        values[f"alerts_active_{severity}", key] = one(
            f"SELECT COUNT(*) FROM alerts WHERE {where} AND status <> 'resolved' "
            f"AND severity = '{severity}'"
        )
    since = "julianday({col}) >= julianday(:{start}) AND julianday({col}) < julianday(:end)"
    for period, start in (("today", "start"), ("week", "week"), ("month", "month")):
        cents = one(
            f"SELECT COALESCE(SUM(amount_cents), 0) FROM payments WHERE {where} AND "
            + since.format(col="paid_at", start=start)
        )
        values[f"revenue_{period}", key] = Decimal(cents) / 100
    values["admissions_today", key] = one(
        f"SELECT COUNT(*) FROM admissions WHERE {where} AND " + day.format(col="admitted_at")
    )
    values["discharges_today", key] = one(
        f"SELECT COUNT(*) FROM admissions WHERE {where} AND " + day.format(col="discharged_at")
    )
    stays, seconds = connection.execute(
        "SELECT COUNT(*), COALESCE(SUM(MAX(0, CAST(strftime('%s', discharged_at) AS INTEGER) "
        "- CAST(strftime('%s', admitted_at) AS INTEGER))), 0) FROM admissions "
        f"WHERE {where} AND admitted_at IS NOT NULL AND "
        + since.format(col="discharged_at", start="alos"),
        parameters,
    ).fetchone()
    values["average_length_of_stay_hours", key] = round(seconds / 3600 / stays, 2) if stays else 0.0
    return values


def snapshot_values(values: list[dict[str, Any]]) -> Values:
    """A `metrics_snapshot`'s values in the oracle's shape."""
    return {(value["metric"], value["department"]): value["value"] for value in values}
