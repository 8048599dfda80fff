"""Report generation time: each report type in JSON, CSV and PDF, for a 30-day hospital of 300
and of 3,000 beds (SQLite, the embedded default).

For each bed count the script writes a hospital with `--days` days of activity (and three
more before them) into a fresh SQLite database with plain sqlite3, as the hospital's own
application would (the capture triggers on). It builds the hourly roll-ups as the service's
very first start does: `MetricPipeline.rebuild()` counts every row into a `HistoryRecorder`
and `confirm()` stores them with the feed position. Occupancy is not in the rows but observed
over time, so the occupancy the service would have observed at each admission and discharge
is replayed into the same recorder first. Then it times `ReportService.generate` (the service
`livedash report generate` uses, `livedash.reports.commands.report_service`) for the six
report types in JSON, CSV and PDF, hospital-wide, over the `--days` whole local days before
today, `--repeat` times.

    .venv/bin/python bench/reports.py                          # 300 and 3,000 beds, ~2 min
    .venv/bin/python bench/reports.py --beds 300 --repeat 1    # ~10 s

The hospital, per bed count N (rates per day):

    departments    one per 50 beds, the simulator's six kinds in turn (ED, CARD, SURG, ...)
    stays          every bed alternates stays (exponential, the department's mean length of
                   stay, 1 h to 3x it) and empty spells, ~75 % occupied: about 0.4 N
                   admissions, half of them the ED's short stays
    visits         0.9 N patients registered and sent home (15 % emergencies, to the ED), on
                   the simulator's arrivals curve; the last hours' still waiting
    bills          85 % of the patients who left, 70 % of those paid within two days (payments)
    appointments   N on weekdays, a fifth of that at weekends, 08:00-18:00, in the statuses the
                   simulator's seeding gives; booked 14 days ahead
    alerts         0.6 per department and 0.5 hospital-wide, nine rules of unequal noise and
                   some raised by hand; most acknowledged and resolved

Figures are printed, never asserted. The table goes to stdout, progress to stderr, and the
figures to `--json` (default: bench/results/reports-<time>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import resource
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from livedash.changefeed.sqlite import SqliteChangeFeed
from livedash.cluster.runner import FEED_CONSUMER
from livedash.metrics.clock import SystemClock
from livedash.metrics.engine import MetricEngine
from livedash.metrics.history import HistoryRecorder
from livedash.metrics.pipeline import MetricPipeline
from livedash.reports.catalogue import REPORT_TYPES
from livedash.reports.commands import report_service
from livedash.reports.document import ReportPeriod
from livedash.reports.generation import FORMATS, ReportRequest
from livedash.reports.periods import resolve_period
from livedash.settings import Settings
from livedash.simulator import curves
from livedash.simulator.catalog import DEPARTMENTS, DepartmentProfile, bill_amount, person_name
from livedash.store.engine import create_engine
from livedash.store.migrate import upgrade

BEDS_PER_DEPARTMENT = 50
TARGET_OCCUPANCY = 0.75
VISITS_PER_BED = 0.9
EMERGENCY_SHARE = 0.15
APPOINTMENTS_PER_BED = 1.0
WEEKEND_CLINICS = 0.2
BOOKED_AHEAD_DAYS = 14
ALERTS_PER_DEPARTMENT = 0.6
HOSPITAL_ALERTS = 0.5
HAND_RAISED_SHARE = 0.1
WARM_UP_DAYS = 3
"""Activity written before the reported days, so that their first days have the payments of
earlier stays and visits, as a hospital running for longer has."""
OUT_OF_SERVICE_SHARE = 0.01
ROOM_SIZES, ROOM_SIZE_WEIGHTS = (1, 2, 3, 4), (0.2, 0.35, 0.15, 0.3)
RULES = (
    ("occupancy-high", "high", 8.0),
    ("ed-waiting-long", "high", 6.0),
    ("beds-free-low", "medium", 5.0),
    ("staff-short", "medium", 3.0),
    ("arrivals-anomaly", "low", 2.5),
    ("no-shows-anomaly", "low", 2.0),
    ("revenue-drop", "medium", 1.0),
    ("occupancy-critical", "critical", 0.8),
    ("feed-lag", "critical", 0.3),
)
"""(name, severity, how often it fires, relatively): a few noisy rules and a quiet tail."""
REQUESTER = "bench"
MARKED_STEPS = ("computing", "rendering", "storing")

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, with seconds since the start."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def stamp(moment: datetime) -> str:
    """A naive UTC moment as SQLAlchemy writes a DateTime on SQLite."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


# -- the hospital ----------------------------------------------------------------------------


@dataclass(slots=True)
class Ward:
    id: int
    profile: DepartmentProfile
    beds: list[int] = field(default_factory=list)
    out_of_service: int = 0


@dataclass(frozen=True, slots=True)
class Stay:
    ward: Ward
    bed: int
    admitted: datetime
    left: datetime | None


def departments(beds: int) -> list[tuple[str, str, DepartmentProfile, int]]:
    """(code, name, profile, beds) of each department: one per 50 beds, kinds in turn, beds in
    the proportions of the simulator's hospital."""
    count = max(1, round(beds / BEDS_PER_DEPARTMENT))
    profiles = [DEPARTMENTS[i % len(DEPARTMENTS)] for i in range(count)]
    weight = sum(profile.beds for profile in profiles)
    sizes = [max(1, round(beds * profile.beds / weight)) for profile in profiles]
    sizes[-1] += beds - sum(sizes)
    found = []
    for i, (profile, size) in enumerate(zip(profiles, sizes, strict=True)):
        copy = i // len(DEPARTMENTS) + 1
        code = profile.code if copy == 1 else f"{profile.code}{copy}"
        name = profile.name if copy == 1 else f"{profile.name} {copy}"
        found.append((code, name, profile, size))
    return found


class HospitalWriter:
    """Writes the hospital's rows over `days` local days up to `now` (naive UTC)."""

    def __init__(
        self, connection: sqlite3.Connection, rng: random.Random, zone: ZoneInfo, now: datetime
    ) -> None:
        self.db = connection
        self.rng = rng
        self.zone = zone
        self.now = now
        self.today = now.replace(tzinfo=UTC).astimezone(zone).date()
        self.wards: list[Ward] = []
        self.stays: list[Stay] = []
        self.rows: Counter[str] = Counter()

    def midnight(self, day: date) -> datetime:
        """The start of local `day`, naive UTC."""
        local = datetime.combine(day, clock_time(), tzinfo=self.zone)
        return local.astimezone(UTC).replace(tzinfo=None)

    def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" for _ in columns)
        self.db.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
            rows,
        )
        self.rows[table] += len(rows)

    def write(self, beds: int, days: int) -> None:
        first = self.today - timedelta(days=days)
        start = self.midnight(first)
        self.hospital(beds)
        self.patients(start, first)
        self.appointments(first)
        self.alerts(start)

    def hospital(self, beds: int) -> None:
        rng = self.rng
        room_rows: list[tuple[int, int, str]] = []
        bed_rows: list[tuple[int, int, str]] = []
        for ident, (code, name, profile, size) in enumerate(departments(beds), start=1):
            self.insert("departments", ("id", "code", "name"), [(ident, code, name)])
            ward = Ward(ident, profile)
            while len(ward.beds) < size:
                room = len(room_rows) + 1
                room_rows.append((room, ident, f"{ident}{room:04d}"))
                for letter in "ABCD"[: rng.choices(ROOM_SIZES, ROOM_SIZE_WEIGHTS)[0]]:
                    if len(ward.beds) < size:
                        ward.beds.append(len(bed_rows) + 1)
                        bed_rows.append((len(bed_rows) + 1, room, f"{room:04d}-{letter}"))
            self.wards.append(ward)
        self.insert("rooms", ("id", "department_id", "number"), room_rows)
        # Statuses are set once the stays say which beds are occupied now.
        self.insert("beds", ("id", "room_id", "label", "status"), [(*b, "free") for b in bed_rows])

    def patients(self, start: datetime, first: date) -> None:
        """Stays and visits, their patients, bills and payments; the beds' statuses now."""
        for ward in self.wards:
            self.stays += self.ward_stays(ward, start)
        emergency_wards = [w for w in self.wards if w.profile.code == "ED"] or self.wards
        patients: list[tuple[Any, ...]] = []
        admissions: list[tuple[Any, ...]] = []
        left: list[tuple[int, Ward, datetime]] = []
        for stay in self.stays:
            emergency = self.rng.random() < (0.75 if stay.ward.profile.code == "ED" else 0.08)
            registered = stay.admitted - timedelta(hours=self.rng.uniform(0.2, 3))
            patient = len(patients) + 1
            status = "active" if stay.left is None else "discharged"
            patients.append(
                self.patient(patient, stay.ward, status, emergency, registered, stay.left)
            )
            admissions.append(
                (
                    len(admissions) + 1,
                    patient,
                    stay.ward.id,
                    stay.bed,
                    stamp(stay.admitted),
                    None if stay.left is None else stamp(stay.left),
                )
            )
            if stay.left is not None:
                left.append((patient, stay.ward, stay.left))
        day = first
        while day <= self.today:
            for registered in self.arrivals(day):
                emergency = self.rng.random() < EMERGENCY_SHARE
                ward = (
                    self.rng.choice(emergency_wards)
                    if emergency
                    else self.rng.choices(
                        self.wards, [w.profile.arrival_weight for w in self.wards]
                    )[0]
                )
                seen = registered + timedelta(hours=self.rng.uniform(0.4, 4))
                gone = seen if seen <= self.now else None
                patient = len(patients) + 1
                status = "registered" if gone is None else "discharged"
                patients.append(self.patient(patient, ward, status, emergency, registered, gone))
                if gone is not None:
                    left.append((patient, ward, gone))
            day += timedelta(days=1)
        self.insert(
            "patients",
            (
                "id",
                "department_id",
                "name",
                "status",
                "emergency",
                "registered_at",
                "discharged_at",
            ),
            patients,
        )
        self.insert(
            "admissions",
            ("id", "patient_id", "department_id", "bed_id", "admitted_at", "discharged_at"),
            admissions,
        )
        self.bills(left)
        self.bed_statuses()

    def ward_stays(self, ward: Ward, start: datetime) -> Iterator[Stay]:
        rng, mean_stay = self.rng, ward.profile.stay_hours
        gap = mean_stay * (1 - TARGET_OCCUPANCY) / TARGET_OCCUPANCY
        for bed in ward.beds:
            at = start - timedelta(hours=rng.uniform(0, 3 * mean_stay))
            while at < self.now:
                hours = min(max(rng.expovariate(1 / mean_stay), 1.0), 3 * mean_stay)
                end = at + timedelta(hours=hours)
                if end > start:
                    yield Stay(ward, bed, at, end if end <= self.now else None)
                at = end + timedelta(hours=max(0.5, rng.expovariate(1 / gap)))

    def arrivals(self, day: date) -> Iterator[datetime]:
        """Registrations of patients sent home on local `day`, on the arrivals curve."""
        beds = sum(len(ward.beds) for ward in self.wards)
        midnight = self.midnight(day)
        peak = max(curves.ARRIVALS.at(hour / 4) for hour in range(96))
        for _ in range(round(VISITS_PER_BED * beds * self.rng.uniform(0.9, 1.1))):
            hour = self.rng.uniform(0, 24)
            while self.rng.random() * peak > curves.ARRIVALS.at(hour):
                hour = self.rng.uniform(0, 24)
            moment = midnight + timedelta(hours=hour)
            if moment <= self.now:
                yield moment

    def patient(
        self,
        ident: int,
        ward: Ward,
        status: str,
        emergency: bool,
        registered: datetime,
        left: datetime | None,
    ) -> tuple[Any, ...]:
        return (
            ident,
            ward.id,
            person_name(self.rng),
            status,
            int(emergency),
            stamp(registered),
            None if left is None else stamp(left),
        )

    def bills(self, left: list[tuple[int, Ward, datetime]]) -> None:
        bills: list[tuple[Any, ...]] = []
        payments: list[tuple[Any, ...]] = []
        for patient, ward, gone in sorted(left, key=lambda item: item[2]):
            if self.rng.random() >= 0.85:
                continue
            created = min(gone + timedelta(hours=self.rng.uniform(0, 2)), self.now)
            amount = bill_amount(self.rng, ward.profile.code)
            paid = None
            if self.rng.random() < 0.7:
                latest = min(created + timedelta(days=2), self.now)
                paid = created + (latest - created) * self.rng.random()
            bill = len(bills) + 1
            bills.append(
                (
                    bill,
                    patient,
                    ward.id,
                    amount,
                    stamp(created),
                    None if paid is None else stamp(paid),
                )
            )
            if paid is not None:
                payments.append((bill, ward.id, amount, paid))
        self.insert(
            "bills",
            ("id", "patient_id", "department_id", "amount_cents", "created_at", "paid_at"),
            bills,
        )
        payments.sort(key=lambda payment: payment[3])
        self.insert(
            "payments",
            ("bill_id", "department_id", "amount_cents", "paid_at"),
            [(*payment[:3], stamp(payment[3])) for payment in payments],
        )

    def bed_statuses(self) -> None:
        last: dict[int, Stay] = {}
        for stay in self.stays:
            if stay.bed not in last or last[stay.bed].admitted < stay.admitted:
                last[stay.bed] = stay
        changes: list[tuple[str, int]] = []
        for ward in self.wards:
            for bed in ward.beds:
                latest = last.get(bed)
                freed = None if latest is None else latest.left
                if latest is not None and freed is None:
                    changes.append(("occupied", bed))
                elif freed is not None and self.now - freed < timedelta(hours=1):
                    changes.append(("cleaning", bed))
                # Of the free quarter of the beds: about 1 % of them all.
                elif self.rng.random() < OUT_OF_SERVICE_SHARE / (1 - TARGET_OCCUPANCY):
                    changes.append(("out_of_service", bed))
                    ward.out_of_service += 1
        self.db.executemany("UPDATE beds SET status = ? WHERE id = ?", changes)

    def appointments(self, first: date) -> None:
        rows: list[tuple[Any, ...]] = []
        beds = sum(len(ward.beds) for ward in self.wards)
        weights = [ward.profile.appointment_weight for ward in self.wards]
        clinics = [w for w, weight in zip(self.wards, weights, strict=True) if weight > 0]
        if not clinics:
            return
        clinic_weights = [weight for weight in weights if weight > 0]
        day = first
        while day <= self.today + timedelta(days=BOOKED_AHEAD_DAYS):
            share = WEEKEND_CLINICS if day.weekday() >= 5 else 1.0
            opening = self.midnight(day) + timedelta(hours=8)
            count = round(APPOINTMENTS_PER_BED * beds * share * self.rng.uniform(0.9, 1.1))
            for _ in range(count):
                when = opening + timedelta(minutes=5 * self.rng.randrange(120))
                ward = self.rng.choices(clinics, clinic_weights)[0]
                rows.append((ward.id, stamp(when), self.appointment_status(when)))
            day += timedelta(days=1)
        rows.sort(key=lambda row: row[1])
        self.insert("appointments", ("department_id", "scheduled_at", "status"), rows)

    def appointment_status(self, when: datetime) -> str:
        """As the simulator's seeding leaves them (`seed_day`), by when they are."""
        hour = timedelta(hours=1)
        if when + hour <= self.now:
            outcomes = {"completed": 0.82, "no_show": 0.08, "cancelled": 0.07, "checked_in": 0.03}
        elif when <= self.now:
            outcomes = {"checked_in": 0.5, "completed": 0.3, "scheduled": 0.2}
        else:
            outcomes = {"scheduled": 0.93, "cancelled": 0.07}
        return self.rng.choices(list(outcomes), list(outcomes.values()))[0]

    def alerts(self, start: datetime) -> None:
        rng = self.rng
        rows: list[tuple[Any, ...]] = []
        sources: list[tuple[int | None, float]] = [
            (w.id, ALERTS_PER_DEPARTMENT) for w in self.wards
        ]
        sources.append((None, HOSPITAL_ALERTS))
        names, severities, weights = zip(*RULES, strict=True)
        for department, per_day in sources:
            at = start
            while True:
                at += timedelta(days=rng.expovariate(per_day))
                if at >= self.now:
                    break
                if rng.random() < HAND_RAISED_SHARE:
                    rule, severity = None, rng.choice(("high", "medium", "low"))
                else:
                    index = rng.choices(range(len(names)), weights)[0]
                    rule, severity = names[index], severities[index]
                acknowledged = at + timedelta(minutes=rng.expovariate(1 / 12))
                resolved = acknowledged + timedelta(minutes=rng.expovariate(1 / 90))
                seen = rng.random() < 0.8 and acknowledged <= self.now
                done = rng.random() < 0.95 and resolved <= self.now
                status = "resolved" if done else "acknowledged" if seen else "active"
                rows.append(
                    (
                        department,
                        severity,
                        status,
                        f"{rule or 'Raised by hand'} ({severity})",
                        stamp(at),
                        stamp(resolved) if done else None,
                        rule,
                        None if rule is None else "resolved" if done else "firing",
                        "duty-manager" if seen else None,
                        stamp(acknowledged) if seen else None,
                        "rule" if done else None,
                        stamp(resolved if done else acknowledged if seen else at),
                    )
                )
        rows.sort(key=lambda row: row[4])
        self.insert(
            "alerts",
            (
                "department_id",
                "severity",
                "status",
                "title",
                "raised_at",
                "resolved_at",
                "rule",
                "state",
                "acknowledged_by",
                "acknowledged_at",
                "resolved_by",
                "updated_at",
            ),
            rows,
        )

    def replay_occupancy(self, history: HistoryRecorder, start: datetime) -> int:
        """Observe each scope's occupancy at every admission and discharge since `start`, as
        the service does as they come; the number of observations."""
        in_service = {ward.id: len(ward.beds) - ward.out_of_service for ward in self.wards}
        hospital_beds = sum(in_service.values())
        occupied: Counter[int] = Counter()
        events: list[tuple[datetime, int, int]] = []
        for stay in self.stays:
            if stay.admitted < start:
                occupied[stay.ward.id] += 1
            else:
                events.append((stay.admitted, 1, stay.ward.id))
            if stay.left is not None:
                events.append((stay.left, -1, stay.ward.id))
        events.sort()

        def rate(part: int, whole: int) -> float:  # as the engine's bed_occupancy_rate
            return round(part / whole, 4) if whole > 0 else 0.0

        total = sum(occupied.values())
        for ward in self.wards:
            history.observe_occupancy(ward.id, rate(occupied[ward.id], in_service[ward.id]), start)
        history.observe_occupancy(None, rate(total, hospital_beds), start)
        for at, change, ward_id in events:
            occupied[ward_id] += change
            total += change
            history.observe_occupancy(ward_id, rate(occupied[ward_id], in_service[ward_id]), at)
            history.observe_occupancy(None, rate(total, hospital_beds), at)
        return 2 * len(events) + len(self.wards) + 1


async def build_rollups(url: str, zone: ZoneInfo, replay: Callable[[HistoryRecorder], int]) -> int:
    """The service's first start over the rows: the roll-ups stored with the feed position."""
    database = create_engine(url)
    try:
        async with SqliteChangeFeed(url, FEED_CONSUMER) as source:
            history = HistoryRecorder(zone)
            observed = replay(history)
            engine = MetricEngine(zone, SystemClock())
            pipeline = MetricPipeline(engine, source, database, history=history)
            await pipeline.rebuild()
            await pipeline.confirm()
        return observed
    finally:
        await database.dispose()


# -- timing the reports ----------------------------------------------------------------------


@dataclass(slots=True)
class Timing:
    """One report type in one format: every run's seconds, and the file."""

    report_type: str
    format: str
    seconds: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    render: list[float] = field(default_factory=list)
    store: list[float] = field(default_factory=list)
    bytes: int = 0
    pages: int | None = None
    failed: str | None = None


@dataclass(slots=True)
class Hospital:
    """One bed count: the hospital built and its reports timed."""

    beds: int
    departments: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    database_bytes: int = 0
    write_seconds: float = 0.0
    rollup_seconds: float = 0.0
    occupancy_observations: int = 0
    rollup_rows: int = 0
    period: str = ""
    timings: list[Timing] = field(default_factory=list)


def pdf_pages(content: bytes, workdir: Path) -> int | None:
    """The page count `pdfinfo` reads (None without poppler-utils)."""
    path = workdir / "pages.pdf"
    path.write_bytes(content)
    try:
        shown = subprocess.run(
            ["pdfinfo", str(path)], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    finally:
        path.unlink()
    for line in shown.splitlines():
        if line.startswith("Pages:"):
            return int(line.split()[1])
    return None


async def time_reports(
    settings: Settings, period: ReportPeriod, repeat: int, workdir: Path
) -> list[Timing]:
    """Every report type in every format, `repeat` rounds; a round runs each once in turn."""
    timings = {(t, f): Timing(t, f) for t in REPORT_TYPES for f in FORMATS}
    async with report_service(settings) as service:
        scope = await service.scope(None)
        for round_ in range(repeat):
            progress(f"  round {round_ + 1} of {repeat}")
            for timing in timings.values():
                request = ReportRequest(timing.report_type, scope, period, timing.format, REQUESTER)
                marks: dict[str, float] = {}

                def mark(step: str, marks: dict[str, float] = marks) -> None:
                    marks[step] = time.perf_counter()

                started = time.perf_counter()
                info = await service.generate(request, on_step=mark)
                ended = time.perf_counter()
                if info.status != "done" or any(step not in marks for step in MARKED_STEPS):
                    timing.failed = info.error or info.status
                    continue
                timing.seconds.append(ended - started)
                timing.compute.append(marks["rendering"] - marks["computing"])
                timing.render.append(marks["storing"] - marks["rendering"])
                timing.store.append(ended - marks["storing"])
                timing.bytes = info.size or 0
                if timing.format == "pdf" and timing.pages is None:
                    content = await service.archive.content(info.id)
                    timing.pages = pdf_pages(content, workdir)
    return list(timings.values())


def measure(beds: int, args: argparse.Namespace, workdir: Path) -> Hospital:
    """Build a hospital of `beds` beds and time its reports; its files are deleted after."""
    zone = ZoneInfo(args.timezone)
    result = Hospital(beds)
    path = workdir / f"hospital-{beds}.db"
    url = f"sqlite+aiosqlite:///{path}"
    progress(f"{beds:,} beds: migrating and writing {args.days} + {WARM_UP_DAYS} days")
    upgrade(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    started = time.perf_counter()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        writer = HospitalWriter(connection, random.Random(f"{args.seed}-{beds}"), zone, now)
        writer.write(beds, args.days + WARM_UP_DAYS)
        connection.execute("COMMIT")
    finally:
        connection.close()
    result.write_seconds = time.perf_counter() - started
    result.departments = len(writer.wards)
    result.rows = dict(writer.rows)
    progress(f"  {sum(writer.rows.values()):,} rows in {result.write_seconds:.1f} s; roll-ups")
    first = writer.today - timedelta(days=args.days)
    began = writer.midnight(first - timedelta(days=WARM_UP_DAYS))
    started = time.perf_counter()
    result.occupancy_observations = asyncio.run(
        build_rollups(url, zone, lambda history: writer.replay_occupancy(history, began))
    )
    result.rollup_seconds = time.perf_counter() - started
    with contextlib.closing(sqlite3.connect(path)) as reader:
        result.rollup_rows = reader.execute("SELECT COUNT(*) FROM metric_rollups").fetchone()[0]
    result.database_bytes = sum(p.stat().st_size for p in workdir.glob(f"{path.name}*"))
    period = resolve_period(None, start=first, end=writer.today, zone=zone, now=datetime.now(UTC))
    result.period = period.label
    settings = Settings(
        database_url=url,
        timezone=args.timezone,
        hospital_name=f"Bench General Hospital ({beds:,} beds)",
        report_dir=workdir / f"reports-{beds}",
        _env_file=None,
    )
    progress(f"  roll-ups in {result.rollup_seconds:.1f} s; timing reports for {period.label}")
    result.timings = asyncio.run(time_reports(settings, period, args.repeat, workdir))
    return result


# -- output ----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def table(hospitals: list[Hospital]) -> list[str]:
    header = (
        f"{'beds':>6}  {'report':<13}{'format':<7}{'median s':>9}{'max s':>8}"
        f"{'compute':>9}{'render':>8}{'store':>7}{'bytes':>11}{'pages':>6}"
    )
    lines = [header, "-" * len(header)]
    for hospital in hospitals:
        for t in hospital.timings:
            if t.failed is not None:
                lines.append(
                    f"{hospital.beds:>6,}  {t.report_type:<13}{t.format:<7}FAILED: {t.failed}"
                )
                continue
            shown = "" if t.pages is None else str(t.pages)
            lines.append(
                f"{hospital.beds:>6,}  {t.report_type:<13}{t.format:<7}"
                f"{median(t.seconds):>9.3f}{max(t.seconds):>8.3f}{median(t.compute):>9.3f}"
                f"{median(t.render):>8.3f}{median(t.store):>7.3f}{t.bytes:>11,}{shown:>6}"
            )
        for fmt in FORMATS:
            done = [t for t in hospital.timings if t.format == fmt and t.seconds]
            pages = sum(t.pages or 0 for t in done)
            lines.append(
                f"{hospital.beds:>6,}  {'all six':<13}{fmt:<7}"
                f"{sum(median(t.seconds) for t in done):>9.3f}"
                f"{sum(max(t.seconds) for t in done):>8.3f}"
                f"{sum(median(t.compute) for t in done):>9.3f}"
                f"{sum(median(t.render) for t in done):>8.3f}"
                f"{sum(median(t.store) for t in done):>7.3f}"
                f"{sum(t.bytes for t in done):>11,}{pages if fmt == 'pdf' else '':>6}"
            )
        lines.append("")
    return lines


def describe(hospital: Hospital) -> str:
    rows = ", ".join(f"{table} {count:,}" for table, count in sorted(hospital.rows.items()))
    return (
        f"{hospital.beds:,} beds, {hospital.departments} departments: {rows}; written in "
        f"{hospital.write_seconds:.1f} s; roll-ups {hospital.rollup_rows:,} rows "
        f"({hospital.occupancy_observations:,} occupancy observations replayed) in "
        f"{hospital.rollup_seconds:.1f} s; database {hospital.database_bytes / 2**20:.0f} MB"
    )


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time every report type in JSON, CSV and PDF for a hospital of N beds with "
        "D days of activity (SQLite), hospital-wide over those days."
    )
    parser.add_argument(
        "--beds", type=int, nargs="+", default=[300, 3000], help="bed counts (300 3000)"
    )
    parser.add_argument("--days", type=int, default=30, help="days of activity reported (30)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each report (3)")
    parser.add_argument(
        "--timezone", default="Europe/Paris", help="the hospital's zone (Europe/Paris)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the hospital (1)")
    parser.add_argument(
        "--json",
        type=Path,
        help="where the figures go as JSON (default: bench/results/reports-<time>.json)",
    )
    parser.add_argument("--dir", type=Path, help="where the temporary databases go")
    args = parser.parse_args(argv)
    if min(args.beds) < 1 or args.days < 1 or args.repeat < 1:
        parser.error("--beds, --days and --repeat must be at least 1")
    if args.days > 400:
        parser.error("--days: a report covers at most 400 days")
    if args.json is None:
        moment = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        args.json = Path(__file__).parent / "results" / f"reports-{moment}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    command = shlex.join([sys.executable, *sys.argv])
    print("command:", command, flush=True)
    # The pipeline and the report service log through structlog; keep them off the table.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    load_before = os.getloadavg()
    hospitals: list[Hospital] = []
    try:
        for beds in args.beds:
            with tempfile.TemporaryDirectory(prefix="livedash-reports-", dir=args.dir) as temp:
                hospitals.append(measure(beds, args, Path(temp)))
    except KeyboardInterrupt:
        print("interrupted; the temporary databases were deleted", file=sys.stderr)
        return 130
    load_after = os.getloadavg()
    print(
        f"reports: hospital-wide, {args.days} days, {args.repeat} runs each, zone "
        f"{args.timezone}; seconds are ReportService.generate's wall time (compute: figures "
        "from roll-ups and tables; render: to bytes, in a worker thread; store: file and row)"
    )
    for hospital in hospitals:
        print(f"  {describe(hospital)}; period {hospital.period}")
    print(
        f"  load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"({os.cpu_count()} CPUs); Python {platform.python_version()}; peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    print()
    for line in table(hospitals):
        print(line)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "command": command,
                "days": args.days,
                "repeat": args.repeat,
                "timezone": args.timezone,
                "load_average": {"before": load_before, "after": load_after},
                "cpus": os.cpu_count(),
                "hospitals": [asdict(hospital) for hospital in hospitals],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"figures saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
