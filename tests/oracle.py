"""Every metric, recomputed from scratch with plain SQL: the truth the engine must equal.

Written independently of `livedash.metrics`, against the raw tables, as a DBA would.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

Values = dict[tuple[str, str | None], int | float]


def _day_bounds(day: date, zone: ZoneInfo) -> tuple[str, str]:
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    return start.strftime(fmt), end.strftime(fmt)


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def recompute(database: Path, zone: ZoneInfo, today: date) -> Values:
    """Every metric for the hospital (`None`) and each department code."""
    start, end = _day_bounds(today, zone)
    connection = sqlite3.connect(database)
    try:
        departments = connection.execute("SELECT id, code FROM departments").fetchall()
        values: Values = {}
        for department_id, code in [(None, None), *departments]:
            values.update(_department(connection, department_id, code, start, end))
        return values
    finally:
        connection.close()


def _department(
    connection: sqlite3.Connection, department_id: int | None, key: str | None, start: str, end: str
) -> Values:
    parameters: dict[str, Any] = {"d": department_id, "start": start, "end": end}

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
    values["appointments_completed_today", key] = one(
        f"SELECT COUNT(*) FROM appointments WHERE {where} AND status = 'completed' AND "
        + day.format(col="scheduled_at")
    )
    return values


def snapshot_values(values: list[dict[str, Any]]) -> Values:
    """A `metrics_snapshot`'s values in the oracle's shape."""
    return {(value["metric"], value["department"]): value["value"] for value in values}
