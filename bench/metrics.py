"""Incremental metric updates against a full recompute, at 10k, 100k and 1M rows (SQLite).

For each size the script builds a hospital database of N rows spread over the tables, counts it
with `MetricPipeline.rebuild()` (the full recompute the service does at start-up), writes a mix
of realistic changes with plain sqlite3, reads them back through `SqliteChangeFeed.read_after`
and times `MetricEngine.apply` on them, apart from the cost of reading the feed. It also times
the same counters as plain aggregate SQL, and splits the rebuild into fetch, decode and count.

    .venv/bin/python bench/metrics.py                       # 10k, 100k and 1M rows
    .venv/bin/python bench/metrics.py --quick               # 10k and 100k only

Figures are printed, never asserted: the PASS/FAIL line is information and the exit code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import os
import platform
import random
import resource
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import text

from livedash.changefeed.base import Change
from livedash.changefeed.rows import decode_row
from livedash.changefeed.sqlite import SqliteChangeFeed
from livedash.metrics.clock import SystemClock
from livedash.metrics.engine import COUNTED_TABLES, MetricEngine
from livedash.metrics.pipeline import MetricPipeline
from livedash.store.engine import create_engine
from livedash.store.migrate import upgrade

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
FLAT_FACTOR = 2.0
"""Target: per-change cost at the largest size within this factor of the smallest."""
DEPARTMENTS = 20
HISTORY_DAYS = 365
CHUNK = 50_000
COMMIT_EVERY = 100
ROOM_PROBES = 50
SQL_REPEATS = 3

# Shares of N per table; appointments take the rest. Every table grows with N, beds and rooms
# included, so a bigger N is a bigger hospital with a year of history, not a longer history.
SHARES = {
    "rooms": 0.004,
    "beds": 0.012,
    "staff": 0.01,
    "staff_shifts": 0.10,
    "patients": 0.25,
    "admissions": 0.12,
    "bills": 0.08,
    "payments": 0.08,
    "alerts": 0.005,
}
MIX = {
    "bed_status": 0.30,
    "patient_status": 0.20,
    "new_patient": 0.15,
    "appointment_status": 0.20,
    "payment": 0.15,
}
"""Kinds of measured write, by share; each write is one statement, so one change."""

_STARTED = time.perf_counter_ns()


def progress(message: str) -> None:
    """One progress line on stderr, with seconds since the start."""
    seconds = (time.perf_counter_ns() - _STARTED) / 1e9
    print(f"[{seconds:7.1f}s] {message}", file=sys.stderr, flush=True)


# -- generating the hospital -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """How many rows each table gets for a hospital of `size` rows."""

    size: int
    counts: dict[str, int]

    @classmethod
    def for_size(cls, size: int) -> Plan:
        counts = {"departments": DEPARTMENTS}
        counts.update({table: max(1, round(size * share)) for table, share in SHARES.items()})
        counts["appointments"] = max(1, size - sum(counts.values()))
        return cls(size, counts)


def _stamp(moment: datetime) -> str:
    # How SQLAlchemy writes a naive DateTime on SQLite.
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


class Generator:
    """Rows of every table, drawn from one seeded random source."""

    def __init__(self, plan: Plan, rng: random.Random, now: datetime) -> None:
        self.n = plan.counts
        self.rng = rng
        self.now = now

    def _past(self, days: float = HISTORY_DAYS) -> datetime:
        return self.now - timedelta(seconds=self.rng.uniform(0, days * 86_400))

    def _department(self) -> int:
        return self.rng.randint(1, self.n["departments"])

    def departments(self) -> Iterator[tuple[Any, ...]]:
        for i in range(1, self.n["departments"] + 1):
            yield i, f"D{i:02d}", f"Department {i}"

    def rooms(self) -> Iterator[tuple[Any, ...]]:
        for i in range(1, self.n["rooms"] + 1):
            yield i, (i - 1) % self.n["departments"] + 1, str(i)

    def beds(self) -> Iterator[tuple[Any, ...]]:
        statuses = ("occupied", "free", "cleaning", "out_of_service")
        for i in range(1, self.n["beds"] + 1):
            status = self.rng.choices(statuses, (70, 20, 7, 3))[0]
            yield i, (i - 1) % self.n["rooms"] + 1, f"B{i}", status

    def staff(self) -> Iterator[tuple[Any, ...]]:
        roles = ("nurse", "doctor", "porter", "clerk")
        for i in range(1, self.n["staff"] + 1):
            yield i, (i - 1) % self.n["departments"] + 1, f"Staff {i}", self.rng.choice(roles)

    def staff_shifts(self) -> Iterator[tuple[Any, ...]]:
        staff, shifts = self.n["staff"], self.n["staff_shifts"]
        for i in range(1, shifts + 1):
            member = (i - 1) % staff + 1
            clock_in = self._past()
            # Only the last round of shifts can be open: one open shift per member at most.
            open_now = i > shifts - staff and member % 3 == 0
            clock_out = None if open_now else _stamp(clock_in + timedelta(hours=8))
            yield i, member, (member - 1) % self.n["departments"] + 1, _stamp(clock_in), clock_out

    def patients(self) -> Iterator[tuple[Any, ...]]:
        statuses = ("discharged", "active", "registered")
        for i in range(1, self.n["patients"] + 1):
            status = self.rng.choices(statuses, (85, 10, 5))[0]
            registered = self._past()
            discharged = (
                _stamp(min(registered + timedelta(days=self.rng.uniform(0.1, 10)), self.now))
                if status == "discharged"
                else None
            )
            emergency = int(self.rng.random() < 0.08)
            yield (
                i,
                self._department(),
                f"Patient {i}",
                status,
                emergency,
                _stamp(registered),
                discharged,
            )

    def admissions(self) -> Iterator[tuple[Any, ...]]:
        for i in range(1, self.n["admissions"] + 1):
            admitted = self._past()
            open_stay = self.rng.random() < 0.1
            discharged = None
            if not open_stay:
                end = min(admitted + timedelta(days=self.rng.uniform(0.2, 12)), self.now)
                discharged = _stamp(end)
            bed = self.rng.randint(1, self.n["beds"]) if open_stay else None
            patient = self.rng.randint(1, self.n["patients"])
            yield i, patient, self._department(), bed, _stamp(admitted), discharged

    def appointments(self) -> Iterator[tuple[Any, ...]]:
        for i in range(1, self.n["appointments"] + 1):
            offset = self.rng.uniform(-HISTORY_DAYS, 30)
            scheduled = self.now + timedelta(days=offset)
            if offset > 0.5:
                status = "scheduled"
            elif offset > -0.5:
                status = self.rng.choice(("scheduled", "checked_in", "completed"))
            else:
                status = self.rng.choices(("completed", "cancelled", "no_show"), (80, 10, 10))[0]
            patient = self.rng.randint(1, self.n["patients"])
            yield i, patient, self._department(), _stamp(scheduled), status

    def bills(self) -> Iterator[tuple[Any, ...]]:
        for i in range(1, self.n["bills"] + 1):
            created = self._past()
            paid = _stamp(created + timedelta(days=2)) if self.rng.random() < 0.7 else None
            amount = self.rng.randint(2_000, 500_000)
            patient = self.rng.randint(1, self.n["patients"])
            yield i, patient, self._department(), amount, _stamp(created), paid

    def payments(self) -> Iterator[tuple[Any, ...]]:
        for i in range(1, self.n["payments"] + 1):
            bill = self.rng.randint(1, self.n["bills"])
            amount = self.rng.randint(1_000, 200_000)
            yield i, bill, self._department(), amount, _stamp(self._past())

    def alerts(self) -> Iterator[tuple[Any, ...]]:
        for i in range(1, self.n["alerts"] + 1):
            raised = self._past()
            resolved = self.rng.random() < 0.9
            yield (
                i,
                self._department(),
                self.rng.choice(("critical", "warning", "info")),
                "resolved" if resolved else "active",
                f"Alert {i}",
                _stamp(raised),
                _stamp(raised + timedelta(hours=1)) if resolved else None,
            )


COLUMNS = {
    "departments": ("id", "code", "name"),
    "rooms": ("id", "department_id", "number"),
    "beds": ("id", "room_id", "label", "status"),
    "staff": ("id", "department_id", "name", "role"),
    "staff_shifts": ("id", "staff_id", "department_id", "clock_in_at", "clock_out_at"),
    "patients": (
        "id",
        "department_id",
        "name",
        "status",
        "emergency",
        "registered_at",
        "discharged_at",
    ),
    "admissions": ("id", "patient_id", "department_id", "bed_id", "admitted_at", "discharged_at"),
    "appointments": ("id", "patient_id", "department_id", "scheduled_at", "status"),
    "bills": ("id", "patient_id", "department_id", "amount_cents", "created_at", "paid_at"),
    "payments": ("id", "bill_id", "department_id", "amount_cents", "paid_at"),
    "alerts": (
        "id",
        "department_id",
        "severity",
        "status",
        "title",
        "raised_at",
        "resolved_at",
    ),
}
"""Tables in insertion order (parents first), with the columns the generator fills."""


def generate(path: Path, plan: Plan, rng: random.Random, now: datetime) -> float:
    """Fill the migrated database at `path` in one transaction; seconds taken."""
    started = time.perf_counter_ns()
    rows = Generator(plan, rng, now)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # Loading is not measured; the capture triggers stay on, as for any other writer.
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("BEGIN")
        for table, columns in COLUMNS.items():
            names = ", ".join(columns)
            marks = ", ".join("?" * len(columns))
            statement = f"INSERT INTO {table} ({names}) VALUES ({marks})"
            source: Iterator[tuple[Any, ...]] = getattr(rows, table)()
            done = 0
            while chunk := list(itertools.islice(source, CHUNK)):
                connection.executemany(statement, chunk)
                done += len(chunk)
            progress(f"  {table}: {done:,} rows")
        connection.execute("COMMIT")
    finally:
        connection.close()
    return (time.perf_counter_ns() - started) / 1e9


# -- the measured writes ---------------------------------------------------------------------


def write_changes(
    path: Path, plan: Plan, count: int, rng: random.Random, now: datetime
) -> Counter[str]:
    """Commit `count` mixed writes, then `ROOM_PROBES` room updates; the kinds written."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=10)
    kinds: Counter[str] = Counter()
    try:
        nearby = [
            int(row[0])
            for row in connection.execute(
                "SELECT id FROM appointments WHERE scheduled_at >= ? AND scheduled_at < ?",
                (_stamp(now - timedelta(days=1)), _stamp(now + timedelta(days=1))),
            )
        ] or [1]
        next_patient = plan.counts["patients"] + 1
        next_payment = plan.counts["payments"] + 1
        stamp = _stamp(now)
        names, weights = zip(*MIX.items(), strict=True)
        connection.execute("BEGIN IMMEDIATE")
        for index in range(count):
            kind = rng.choices(names, weights)[0]
            kinds[kind] += 1
            if kind == "bed_status":
                connection.execute(
                    "UPDATE beds SET status = CASE status WHEN 'occupied' THEN 'cleaning' "
                    "WHEN 'cleaning' THEN 'free' WHEN 'free' THEN 'occupied' "
                    "ELSE 'free' END WHERE id = ?",
                    (rng.randint(1, plan.counts["beds"]),),
                )
            elif kind == "patient_status":
                connection.execute(
                    "UPDATE patients SET status = CASE status WHEN 'registered' THEN 'active' "
                    "WHEN 'active' THEN 'discharged' ELSE 'registered' END, "
                    "discharged_at = CASE status WHEN 'active' THEN ? ELSE NULL END "
                    "WHERE id = ?",
                    (stamp, rng.randint(1, next_patient - 1)),
                )
            elif kind == "new_patient":
                connection.execute(
                    "INSERT INTO patients (id, department_id, name, status, emergency, "
                    "registered_at) VALUES (?, ?, ?, 'registered', ?, ?)",
                    (
                        next_patient,
                        rng.randint(1, DEPARTMENTS),
                        f"Patient {next_patient}",
                        int(rng.random() < 0.08),
                        stamp,
                    ),
                )
                next_patient += 1
            elif kind == "appointment_status":
                connection.execute(
                    "UPDATE appointments SET status = CASE status "
                    "WHEN 'scheduled' THEN 'checked_in' WHEN 'checked_in' THEN 'completed' "
                    "ELSE 'scheduled' END WHERE id = ?",
                    (rng.choice(nearby),),
                )
            else:
                connection.execute(
                    "INSERT INTO payments (id, bill_id, department_id, amount_cents, paid_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        next_payment,
                        rng.randint(1, plan.counts["bills"]),
                        rng.randint(1, DEPARTMENTS),
                        rng.randint(1_000, 200_000),
                        stamp,
                    ),
                )
                next_payment += 1
            if (index + 1) % COMMIT_EVERY == 0:
                connection.execute("COMMIT")
                connection.execute("BEGIN IMMEDIATE")
        # A room's move re-counts its beds; written last so it can be timed on its own.
        for room in rng.sample(range(1, plan.counts["rooms"] + 1), min(ROOM_PROBES, plan.counts["rooms"])):
            connection.execute("UPDATE rooms SET number = number || 'x' WHERE id = ?", (room,))
            kinds["room_rename"] += 1
        connection.execute("COMMIT")
    finally:
        connection.close()
    return kinds


# -- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableCost:
    """One table's share of a rebuild, in nanoseconds."""

    table: str
    rows: int
    sqlite3_ns: int
    fetch_ns: int
    decode_ns: int
    load_ns: int


@dataclass(slots=True)
class Result:
    """Every figure measured at one size."""

    plan: Plan
    generate_seconds: float = 0.0
    db_bytes: int = 0
    rebuild_ns: int = 0
    values_published: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    feed_ns: list[int] = field(default_factory=list)
    feed_changes: int = 0
    single_ns: list[int] = field(default_factory=list)
    batched_ns: int = 0
    batched_changes: int = 0
    batch_size: int = 0
    room_ns: list[int] = field(default_factory=list)
    sql_ns: list[int] = field(default_factory=list)
    sql_rows: int = 0
    breakdown: list[TableCost] = field(default_factory=list)
    finish_ns: int = 0
    check: str = ""
    max_rss_mb: float = 0.0

    @property
    def single_p50(self) -> float:
        return statistics.median(self.single_ns)


SQL_RECOMPUTE = (
    "SELECT department_id, status, emergency, COUNT(*) FROM patients GROUP BY 1, 2, 3",
    "SELECT department_id, date(registered_at), COUNT(*) FROM patients GROUP BY 1, 2",
    "SELECT department_id, COUNT(*) FROM rooms GROUP BY 1",
    "SELECT r.department_id, b.status, COUNT(*) FROM beds b JOIN rooms r ON r.id = b.room_id "
    "GROUP BY 1, 2",
    "SELECT r.department_id, COUNT(DISTINCT r.id) FROM rooms r JOIN beds b ON b.room_id = r.id "
    "WHERE b.status = 'occupied' GROUP BY 1",
    "SELECT department_id, date(scheduled_at), status, COUNT(*) FROM appointments "
    "GROUP BY 1, 2, 3",
    "SELECT department_id, COUNT(*) FROM staff_shifts WHERE clock_out_at IS NULL GROUP BY 1",
    "SELECT department_id, date(admitted_at), COUNT(*) FROM admissions GROUP BY 1, 2",
    "SELECT department_id, date(discharged_at), COUNT(*), "
    "SUM(CAST((julianday(discharged_at) - julianday(admitted_at)) * 86400 AS INTEGER)) "
    "FROM admissions WHERE discharged_at IS NOT NULL GROUP BY 1, 2",
    "SELECT department_id, date(paid_at), SUM(amount_cents) FROM payments GROUP BY 1, 2",
    "SELECT department_id, severity, COUNT(*) FROM alerts WHERE status != 'resolved' "
    "GROUP BY 1, 2",
)
"""The engine's counters as aggregate SQL (dates in UTC: the cost, not the exact values)."""


def sql_recompute(path: Path) -> tuple[int, int]:
    """Run every aggregate in one read transaction; nanoseconds and result rows."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        started = time.perf_counter_ns()
        connection.execute("BEGIN")
        rows = sum(len(connection.execute(query).fetchall()) for query in SQL_RECOMPUTE)
        connection.execute("COMMIT")
        return time.perf_counter_ns() - started, rows
    finally:
        connection.close()


def sqlite3_scan_ns(path: Path, table: str) -> int:
    """Nanoseconds to fetch every row of `table` with plain sqlite3."""
    connection = sqlite3.connect(path)
    try:
        started = time.perf_counter_ns()
        cursor = connection.execute(f'SELECT * FROM "{table}"')
        while cursor.fetchmany(1000):
            pass
        return time.perf_counter_ns() - started
    finally:
        connection.close()


async def rebuild_breakdown(url: str, path: Path, zone: ZoneInfo, result: Result) -> None:
    """The rebuild's loop again, with fetch, decode_row and engine.load timed apart."""
    engine = MetricEngine(zone, SystemClock())
    database = create_engine(url)
    try:
        async with database.connect() as connection, connection.begin():
            for table in COUNTED_TABLES:
                fetch = decode = load = rows = 0
                mark = time.perf_counter_ns()
                stream = await connection.stream(text(f'SELECT * FROM "{table}"'))
                async for partition in stream.mappings().partitions(1000):
                    fetched = time.perf_counter_ns()
                    fetch += fetched - mark
                    decoded = [decode_row(table, row) for row in partition]
                    decoded_at = time.perf_counter_ns()
                    decode += decoded_at - fetched
                    for row in decoded:
                        engine.load(table, row)
                    mark = time.perf_counter_ns()
                    load += mark - decoded_at
                    rows += len(partition)
                fetch += time.perf_counter_ns() - mark
                result.breakdown.append(
                    TableCost(table, rows, sqlite3_scan_ns(path, table), fetch, decode, load)
                )
        started = time.perf_counter_ns()
        engine.finish_loading(0)
        result.finish_ns = time.perf_counter_ns() - started
    finally:
        await database.dispose()
