"""Incremental metric updates against a full recompute, at 10k, 100k and 1M rows (SQLite).

For each size the script builds a hospital database of N rows spread over the tables, counts it
with `MetricPipeline.rebuild()` (the full recompute the service does at start-up), writes a mix
of realistic changes with plain sqlite3, reads them back through `SqliteChangeFeed.read_after`
and times `MetricEngine.apply` on them, apart from the cost of reading the feed. It also times
the same counters as plain aggregate SQL, and splits the rebuild into fetch, decode and count.
The apply passes run last, on copies of each size's rebuilt engine, interleaved across sizes:
the per-change figures are compared between sizes, so machine noise must hit them alike.

    .venv/bin/python bench/metrics.py                       # 10k, 100k and 1M rows
    .venv/bin/python bench/metrics.py --quick               # 10k and 100k only

Figures are printed, never asserted: the PASS/FAIL line is information and the exit code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
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
from collections.abc import Iterator, Sequence
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
from livedash.testing.stats import percentile

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
ROUNDS = 5
"""Feed reads and engine passes are repeated, each pass on a copy of the rebuilt engine, and
the best round is reported: on a shared machine, the others hold other processes' noise."""

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
        # A live database's WAL is checkpointed now and then; without this every later read
        # would go through the load's whole WAL.
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
        for room in rng.sample(
            range(1, plan.counts["rooms"] + 1), min(ROOM_PROBES, plan.counts["rooms"])
        ):
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


@dataclass(frozen=True, slots=True)
class Round:
    """One pass of every measured change over a fresh copy of a rebuilt engine."""

    single_ns: list[int]
    batched_ns: int
    room_ns: list[int]


@dataclass(frozen=True, slots=True)
class Workload:
    """A rebuilt engine and the changes read after it, kept for the interleaved rounds."""

    engine: MetricEngine
    alone: list[Change]
    """Applied one change per `apply` call: the live case, where batches are small."""
    batched: list[Change]
    renames: list[Change]
    expected: tuple[int, int]
    """Patients and occupied beds counted by SQL after every change."""


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
    batch_size: int = 0
    sql_ns: list[int] = field(default_factory=list)
    sql_rows: int = 0
    breakdown: list[TableCost] = field(default_factory=list)
    finish_ns: int = 0
    max_rss_mb: float = 0.0
    load_average: str = ""
    workload: Workload | None = None
    rounds: list[Round] = field(default_factory=list)
    check: str = ""

    @property
    def single_ns(self) -> list[int]:
        """The one-change applies of the round with the lowest p50."""
        return min(self.rounds, key=lambda one: percentile(one.single_ns, 0.5)).single_ns

    @property
    def round_p50s(self) -> list[float]:
        return [percentile(one.single_ns, 0.5) for one in self.rounds]

    @property
    def batched_ns(self) -> int:
        return min(one.batched_ns for one in self.rounds)

    @property
    def batched_changes(self) -> int:
        return len(self.workload.batched) if self.workload is not None else 0

    @property
    def room_ns(self) -> list[int]:
        return min(self.rounds, key=lambda one: percentile(one.room_ns, 0.5)).room_ns


SQL_RECOMPUTE = (
    "SELECT department_id, status, emergency, COUNT(*) FROM patients GROUP BY 1, 2, 3",
    "SELECT department_id, date(registered_at), COUNT(*) FROM patients GROUP BY 1, 2",
    "SELECT department_id, COUNT(*) FROM rooms GROUP BY 1",
    "SELECT r.department_id, b.status, COUNT(*) FROM beds b JOIN rooms r ON r.id = b.room_id "
    "GROUP BY 1, 2",
    "SELECT r.department_id, COUNT(DISTINCT r.id) FROM rooms r JOIN beds b ON b.room_id = r.id "
    "WHERE b.status = 'occupied' GROUP BY 1",
    "SELECT department_id, date(scheduled_at), status, COUNT(*) FROM appointments GROUP BY 1, 2, 3",
    "SELECT department_id, COUNT(*) FROM staff_shifts WHERE clock_out_at IS NULL GROUP BY 1",
    "SELECT department_id, date(admitted_at), COUNT(*) FROM admissions GROUP BY 1, 2",
    "SELECT department_id, date(discharged_at), COUNT(*), "
    "SUM(CAST((julianday(discharged_at) - julianday(admitted_at)) * 86400 AS INTEGER)) "
    "FROM admissions WHERE discharged_at IS NOT NULL GROUP BY 1, 2",
    "SELECT department_id, date(paid_at), SUM(amount_cents) FROM payments GROUP BY 1, 2",
    "SELECT department_id, severity, COUNT(*) FROM alerts WHERE status != 'resolved' GROUP BY 1, 2",
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


def table_counts(path: Path) -> tuple[int, int]:
    """Patients and occupied beds, counted by SQL: a check that every change was applied."""
    connection = sqlite3.connect(path)
    try:
        patients = connection.execute("SELECT COUNT(*) FROM patients").fetchone()[0]
        occupied = connection.execute(
            "SELECT COUNT(*) FROM beds WHERE status = 'occupied'"
        ).fetchone()[0]
        return int(patients), int(occupied)
    finally:
        connection.close()


def apply_round(
    engine: MetricEngine,
    alone: list[Change],
    batched: list[Change],
    renames: list[Change],
    size: int,
) -> Round:
    """Apply `alone` one change per call, `batched` in batches of `size`, then `renames`."""
    gc.collect()
    single_ns: list[int] = []
    for change in alone:
        started = time.perf_counter_ns()
        engine.apply([change])
        single_ns.append(time.perf_counter_ns() - started)
    batched_ns = 0
    for first in range(0, len(batched), size):
        batch = batched[first : first + size]
        started = time.perf_counter_ns()
        engine.apply(batch)
        batched_ns += time.perf_counter_ns() - started
    room_ns: list[int] = []
    for change in renames:
        started = time.perf_counter_ns()
        engine.apply([change])
        room_ns.append(time.perf_counter_ns() - started)
    return Round(single_ns, batched_ns, room_ns)


def run_rounds(results: Sequence[Result]) -> None:
    """Every size's engine passes, interleaved, so drift in machine load hits each size alike."""
    for index in range(ROUNDS):
        for result in results:
            work = result.workload
            if work is None:
                continue
            progress(f"apply round {index + 1}/{ROUNDS}: {result.plan.size:,} rows")
            engine = copy.deepcopy(work.engine)
            batch_size = result.batch_size
            result.rounds.append(
                apply_round(engine, work.alone, work.batched, work.renames, batch_size)
            )
            seen = (engine.value("patients_total"), engine.value("beds_occupied"))
            verdict = "ok" if seen == work.expected else "MISMATCH"
            result.check = (
                f"{verdict}: engine patients_total {seen[0]}, beds_occupied {seen[1]}; "
                f"SQL {work.expected[0]:,} and {work.expected[1]:,}"
            )


async def read_feed(source: SqliteChangeFeed, after: int) -> tuple[list[Change], list[int]]:
    """Every change after `after`, one `read_after` batch at a time; and each read's time."""
    changes: list[Change] = []
    read_ns: list[int] = []
    while True:
        started = time.perf_counter_ns()
        batch, last = await source.read_after(after)
        elapsed = time.perf_counter_ns() - started
        if last == after:
            return changes, read_ns
        read_ns.append(elapsed)
        changes.extend(batch)
        after = last


async def follow(
    url: str, path: Path, args: argparse.Namespace, rng: random.Random, result: Result
) -> None:
    """Rebuild (timed), write the changes, and read them back from the feed (timed)."""
    zone = ZoneInfo(args.timezone)
    database = create_engine(url)
    try:
        async with SqliteChangeFeed(url, "bench-metrics", batch_size=args.batch_size) as source:
            engine = MetricEngine(zone, SystemClock())
            pipeline = MetricPipeline(engine, source, database)
            gc.collect()
            started = time.perf_counter_ns()
            await pipeline.rebuild()
            result.rebuild_ns = time.perf_counter_ns() - started
            result.values_published = len(engine.snapshot())
            progress(f"  rebuild: {result.rebuild_ns / 1e6:,.0f} ms; writing changes")

            now = datetime.now(UTC).replace(tzinfo=None)
            result.kinds = await asyncio.to_thread(
                write_changes, path, result.plan, args.changes, rng, now
            )
            reads = [await read_feed(source, engine.position) for _ in range(ROUNDS)]
            changes = reads[0][0]
            result.feed_changes = len(changes)
            result.feed_ns = min((read_ns for _, read_ns in reads), key=sum)
            progress(f"  read {len(changes):,} changes from the feed")

            rooms = result.kinds["room_rename"]
            mixed, renames = changes[: len(changes) - rooms], changes[len(changes) - rooms :]
            half = len(mixed) // 2
            expected = await asyncio.to_thread(table_counts, path)
            result.workload = Workload(engine, mixed[:half], mixed[half:], renames, expected)
            result.batch_size = args.batch_size
    finally:
        await database.dispose()


def measure(size: int, args: argparse.Namespace, workdir: Path) -> Result:
    """Every figure for a hospital of `size` rows; the database is deleted afterwards."""
    plan = Plan.for_size(size)
    result = Result(plan)
    rng = random.Random(f"{args.seed}-{size}")
    path = workdir / f"hospital-{size}.db"
    url = f"sqlite+aiosqlite:///{path}"
    try:
        progress(f"{size:,} rows: migrating and generating")
        upgrade(url)
        now = datetime.now(UTC).replace(tzinfo=None)
        result.generate_seconds = generate(path, plan, rng, now)
        result.db_bytes = sum(
            candidate.stat().st_size
            for candidate in workdir.glob(f"{path.name}*")
            if candidate.is_file()
        )
        asyncio.run(follow(url, path, args, rng, result))
        progress("  aggregate SQL")
        for _ in range(SQL_REPEATS):
            elapsed, result.sql_rows = sql_recompute(path)
            result.sql_ns.append(elapsed)
        progress("  rebuild breakdown")
        asyncio.run(rebuild_breakdown(url, path, ZoneInfo(args.timezone), result))
        result.max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result.load_average = ", ".join(f"{load:.2f}" for load in os.getloadavg())
    finally:
        for candidate in workdir.glob(f"{path.name}*"):
            candidate.unlink()
    return result


# -- reporting -------------------------------------------------------------------------------


def _us(ns: float) -> str:
    return f"{ns / 1e3:,.1f} µs"


def _ms(ns: float) -> str:
    return f"{ns / 1e6:,.1f} ms"


def report_size(result: Result) -> Iterator[str]:
    """The lines for one size."""
    plan = result.plan
    yield ""
    yield f"== {plan.size:,} rows =="
    yield "rows          " + ", ".join(f"{t} {n:,}" for t, n in plan.counts.items())
    yield (
        f"generated     {result.generate_seconds:.1f} s; {result.db_bytes / 2**20:,.0f} MB on "
        "disk (change_log of the load included)"
    )
    yield (
        f"full recompute  MetricPipeline.rebuild(): {_ms(result.rebuild_ns)} "
        f"({result.values_published:,} values published)"
    )
    yield "  breakdown (the same loop, parts timed; sqlite3 = plain SELECT * for comparison):"
    yield f"  {'table':<14}{'rows':>10}{'sqlite3':>12}{'fetch':>12}{'decode_row':>12}{'load':>12}"
    totals = [0, 0, 0, 0, 0]
    for cost in result.breakdown:
        parts = (cost.rows, cost.sqlite3_ns, cost.fetch_ns, cost.decode_ns, cost.load_ns)
        totals = [total + part for total, part in zip(totals, parts, strict=True)]
        yield (
            f"  {cost.table:<14}{cost.rows:>10,}{_ms(cost.sqlite3_ns):>12}{_ms(cost.fetch_ns):>12}"
            f"{_ms(cost.decode_ns):>12}{_ms(cost.load_ns):>12}"
        )
    rows, raw, fetch, decode, load = totals
    yield (
        f"  {'total':<14}{rows:>10,}{_ms(raw):>12}{_ms(fetch):>12}{_ms(decode):>12}{_ms(load):>12}"
    )
    work = fetch + decode + load + result.finish_ns
    if work and rows:
        yield (
            f"  shares        fetch {fetch / work:.0%}, decode_row {decode / work:.0%}, "
            f"load {load / work:.0%}, finish_loading {result.finish_ns / work:.0%} "
            f"({_ms(result.finish_ns)}); per row: fetch {_us(fetch / rows)}, "
            f"decode {_us(decode / rows)}, load {_us(load / rows)}"
        )
    yield (
        f"SQL aggregates  {len(SQL_RECOMPUTE)} GROUP BY queries, plain sqlite3, one read "
        f"transaction: median {_ms(statistics.median(result.sql_ns))} of {len(result.sql_ns)} "
        f"({result.sql_rows:,} result rows)"
    )
    yield "changes       " + ", ".join(f"{k} {n:,}" for k, n in sorted(result.kinds.items()))
    if result.feed_ns:
        yield (
            f"feed read     read_after, batch {result.batch_size}, best of {ROUNDS}: "
            f"{len(result.feed_ns)} reads for {result.feed_changes:,} changes, "
            f"{_us(sum(result.feed_ns) / result.feed_changes)}/change "
            f"(median read {_ms(statistics.median(result.feed_ns))})"
        )
    if result.rounds:
        yield (
            f"apply alone   {len(result.single_ns):,} changes, one apply([change]) each, best "
            f"of {len(result.round_p50s)} rounds: p50 {_us(percentile(result.single_ns, 0.5))}, "
            f"p99 {_us(percentile(result.single_ns, 0.99))}, "
            f"mean {_us(statistics.fmean(result.single_ns))}"
            f", max {_us(max(result.single_ns))}; p50 of each round: "
            + ", ".join(_us(p50) for p50 in result.round_p50s)
        )
    if result.rounds and result.batched_changes:
        yield (
            f"apply batched {result.batched_changes:,} changes, apply(batch of "
            f"{result.batch_size}), best of {ROUNDS}: "
            f"{_us(result.batched_ns / result.batched_changes)}/change"
        )
    if result.rounds and result.room_ns:
        yield (
            f"room rename   {len(result.room_ns)} applied alone (a room change re-counts "
            f"beds), best of {ROUNDS}: p50 {_us(percentile(result.room_ns, 0.5))}, "
            f"max {_us(max(result.room_ns))}"
        )
    if result.rounds:
        p50 = percentile(result.single_ns, 0.5)
        yield (
            f"ratio         full recompute / apply p50 = {result.rebuild_ns / p50:,.0f}; "
            f"SQL aggregates / apply p50 = {statistics.median(result.sql_ns) / p50:,.0f}"
        )
    yield f"check         {result.check}"
    yield f"peak RSS      {result.max_rss_mb:,.0f} MB (process so far)"
    yield f"load average  {result.load_average} (after this size)"


def report_summary(results: Sequence[Result]) -> Iterator[str]:
    """The table across sizes and the flatness verdict."""
    yield ""
    yield "== summary =="
    yield (
        f"{'rows':>10}{'rebuild':>13}{'SQL agg':>12}{'feed/chg':>11}{'apply p50':>11}"
        f"{'p99':>10}{'mean':>10}{'batched':>10}{'room p50':>12}{'rebuild/p50':>13}"
    )
    for result in results:
        p50 = percentile(result.single_ns, 0.5)
        feed = sum(result.feed_ns) / max(result.feed_changes, 1)
        batched = result.batched_ns / max(result.batched_changes, 1)
        room = percentile(result.room_ns, 0.5) if result.room_ns else 0
        yield (
            f"{result.plan.size:>10,}{_ms(result.rebuild_ns):>13}"
            f"{_ms(statistics.median(result.sql_ns)):>12}{_us(feed):>11}{_us(p50):>11}"
            f"{_us(percentile(result.single_ns, 0.99)):>10}"
            f"{_us(statistics.fmean(result.single_ns)):>10}"
            f"{_us(batched):>10}{_us(room):>12}{result.rebuild_ns / p50:>13,.0f}"
        )
    if len(results) < 2:
        return
    first, last = results[0], results[-1]
    growth = percentile(last.single_ns, 0.5) / percentile(first.single_ns, 0.5)
    mean_growth = statistics.fmean(last.single_ns) / statistics.fmean(first.single_ns)
    verdict = "PASS" if growth <= FLAT_FACTOR else "FAIL"
    yield (
        f"flat per-change cost: apply p50 at {last.plan.size:,} rows / at {first.plan.size:,} "
        f"= {growth:.2f}x (mean {mean_growth:.2f}x); target within {FLAT_FACTOR:g}x: {verdict}"
    )


def machine() -> Iterator[str]:
    """Facts about the machine and interpreter."""
    model = "unknown"
    with_cpuinfo = Path("/proc/cpuinfo")
    if with_cpuinfo.exists():
        for line in with_cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    yield f"machine:      {os.cpu_count()} CPUs ({usable} usable), {model}"
    yield f"platform:     {platform.platform()}"
    yield (
        f"python:       {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    yield "load average: " + ", ".join(f"{load:.2f}" for load in os.getloadavg())


# -- entry point -----------------------------------------------------------------------------


def _sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in value.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a list of row counts: {value!r}") from error
    if not sizes or min(sizes) < 1_000:
        raise argparse.ArgumentTypeError("sizes must be at least 1000 rows each")
    return tuple(sorted(sizes))


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Time the metric engine's incremental updates against a full recompute, "
        "on SQLite hospitals of several sizes. Prints figures; asserts nothing."
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=DEFAULT_SIZES,
        help="comma-separated total row counts (default: 10000,100000,1000000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="only 10000 and 100000 rows (overrides --sizes)"
    )
    parser.add_argument(
        "--changes", type=int, default=5_000, help="measured mixed writes (default: 5000)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=500, help="feed batch size (default: 500, as served)"
    )
    parser.add_argument(
        "--timezone",
        default="Europe/Paris",
        help="the hospital's zone (default: Europe/Paris, one with DST)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the databases (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = QUICK_SIZES
    if args.changes < 2 or args.batch_size < 1:
        parser.error("--changes must be at least 2 and --batch-size at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    # The pipeline logs through structlog; keep its events off the figures.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    print("command:     ", shlex.join([sys.executable, *sys.argv]), flush=True)
    for line in machine():
        print(line)
    print(
        f"settings:     sizes {', '.join(f'{s:,}' for s in args.sizes)}; {args.changes:,} "
        f"mixed changes ({', '.join(f'{k} {v:.0%}' for k, v in MIX.items())}) + "
        f"{ROOM_PROBES} room renames; feed batch {args.batch_size}; zone {args.timezone}; "
        f"{DEPARTMENTS} departments; history {HISTORY_DAYS} days; seed {args.seed}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="livedash-metrics-", dir=args.dir) as temp:
        results = [measure(size, args, Path(temp)) for size in args.sizes]
    run_rounds(results)
    for result in results:
        for line in report_size(result):
            print(line)
    for line in report_summary(results):
        print(line)
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
