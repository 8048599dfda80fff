"""Every report's figures equal a recount of the rows, on both backends, across clock changes;
and a report for today equals what the dashboard shows now."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from livedash.metrics.clock import ManualClock
from livedash.reports.generation import ReportRequest
from livedash.reports.periods import resolve_period
from livedash.settings import Settings
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import services_of
from tests.support.report_oracle import (
    APPOINTMENT_STATUSES,
    REPORT_TYPES,
    SEVERITIES,
    Span,
    expected,
    feed_applied,
    patient_screen,
    read_rows,
)
from tests.support.writers import Write, register_patient

pytestmark = pytest.mark.both_backends

NOW = datetime(2026, 11, 25, 13, 30, tzinfo=UTC)  # a Wednesday, 14:30 in Berlin
FULL = "%Y-%m-%d %H:%M:%S.%f"
PLAIN = "%Y-%m-%d %H:%M:%S"  # as SQLite's CURRENT_TIMESTAMP writes it
ISO = "%Y-%m-%dT%H:%M:%SZ"  # as a JavaScript client writes it
CLOCK_CHANGES = (
    # 02:30 in Berlin, twice: before the clocks go back at 03:00 CEST, and after.
    datetime(2026, 10, 25, 0, 30),
    datetime(2026, 10, 25, 1, 30),
    # The last second before the clocks skip from 02:00 to 03:00 CEST, and the first after.
    datetime(2026, 3, 29, 0, 59, 59),
    datetime(2026, 3, 29, 1, 0),
)
PERIODS = {
    "a-week": (date(2026, 11, 16), date(2026, 11, 23), 7 * 24),
    "clocks-go-back": (date(2026, 10, 24), date(2026, 10, 27), 3 * 24 + 1),
    "clocks-go-forward": (date(2026, 3, 28), date(2026, 3, 30), 2 * 24 - 1),
}


@pytest.fixture
async def reporting(serve: Serve, settings: Settings, tmp_path: Path) -> LiveServer:
    """The service on a clock that stands at NOW, its reports under the test's directory."""
    assert settings.timezone == "Europe/Berlin"
    ours = settings.model_copy(update={"report_dir": tmp_path / "reports"})
    return await serve(ours, ManualClock(NOW))


def _stamp(moment: datetime, form: str = FULL) -> str:
    return moment.strftime(form)


class Hospital:
    """Writes a hospital's activity as its own programs would, in several timestamp forms."""

    def __init__(self, write: Write, departments: list[int], seed: str) -> None:
        self.write = write
        self.departments = departments
        self.rng = random.Random(seed)

    def department(self) -> int:
        return self.rng.choice(self.departments)

    async def patient(self, department: int, registered: datetime, *, emergency: bool) -> int:
        return await self.write(
            "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
            "VALUES (?, ?, 'active', ?, ?)",
            (
                department,
                f"patient {self.rng.randrange(10**6)}",
                int(emergency),
                _stamp(registered),
            ),
        )

    async def stay(
        self,
        department: int,
        admitted: datetime,
        discharged: datetime | None,
        form: str = FULL,
        patient: int | None = None,
    ) -> None:
        if patient is None:
            registered = admitted - timedelta(hours=1)
            patient = await self.patient(department, registered, emergency=False)
        await self.write(
            "INSERT INTO admissions (patient_id, department_id, admitted_at, discharged_at) "
            "VALUES (?, ?, ?, ?)",
            (
                patient,
                department,
                _stamp(admitted, form),
                None if discharged is None else _stamp(discharged, form),
            ),
        )

    async def arrival(self, registered: datetime, form: str = FULL) -> None:
        """An emergency patient: admitted after a wait (sometimes twice), or sent home."""
        department = self.department()
        patient = await self.write(
            "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
            "VALUES (?, 'emergency patient', 'registered', ?, ?)",
            (department, 1, _stamp(registered, form)),
        )
        outcome = self.rng.random()
        if outcome < 0.6:
            admitted = registered + timedelta(minutes=self.rng.randrange(5, 600))
            await self.stay(self.department(), admitted, None, patient=patient)
            if outcome < 0.15:  # back a second time: the wait runs to the first admission
                later = admitted + timedelta(days=1, minutes=17)
                await self.stay(self.department(), later, None, patient=patient)

    async def appointment(self, scheduled: datetime, status: str, form: str = FULL) -> None:
        await self.write(
            "INSERT INTO appointments (department_id, scheduled_at, status) VALUES (?, ?, ?)",
            (self.department(), _stamp(scheduled, form), status),
        )

    async def payment(
        self, paid: datetime, cents: int, form: str = FULL, department: int | None = None
    ) -> None:
        department = department or self.department()
        bill = await self.write(
            "INSERT INTO bills (department_id, amount_cents, created_at, paid_at) "
            "VALUES (?, ?, ?, ?)",
            (department, cents, _stamp(paid - timedelta(days=2)), _stamp(paid, form)),
        )
        await self.write(
            "INSERT INTO payments (bill_id, department_id, amount_cents, paid_at) "
            "VALUES (?, ?, ?, ?)",
            (bill, department, cents, _stamp(paid, form)),
        )

    async def alert(self, raised: datetime, form: str = FULL) -> None:
        rng = self.rng
        # A few rules are noisy, most are not, and some alerts were raised by hand.
        rule = rng.choice([None, *(f"rule-{n:02d}" for n in range(13)), "rule-00", "rule-01"])
        acknowledged = resolved = None
        if rng.random() < 0.7:
            acknowledged = raised + timedelta(minutes=rng.randrange(1, 240), seconds=30)
        if rng.random() < 0.05:  # a clock that was wrong: acknowledged before it was raised
            acknowledged = raised - timedelta(minutes=3)
        if rng.random() < 0.6:
            resolved = (acknowledged or raised) + timedelta(minutes=rng.randrange(5, 900))
        status = "resolved" if resolved else "acknowledged" if acknowledged else "active"
        await self.write(
            "INSERT INTO alerts (department_id, severity, status, title, raised_at, rule, "
            "acknowledged_at, resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rng.choice([None, *self.departments]),
                rng.choice([*SEVERITIES, "critical", "high", "info"]),
                status,
                f"{rule or 'by hand'} fired",
                _stamp(raised, form),
                rule,
                None if acknowledged is None else _stamp(acknowledged),
                None if resolved is None else _stamp(resolved),
            ),
        )

    async def observed_occupancy(self, hours: list[datetime]) -> None:
        """Occupancy as the service stored it by hour while it watched the beds (no table
        holds it): the hospital (0) and each department, some hours unobserved, some observed
        only at their very start (a peak, no seconds)."""
        rows: list[Any] = []
        for hour in hours:
            for scope in (0, *self.departments):
                chance = self.rng.random()
                if chance < 0.15:
                    continue
                rate = round(self.rng.uniform(0.1, 0.95), 3)
                seconds = 0.0 if chance < 0.18 else self.rng.choice([3600.0, 1800.0, 900.0])
                peak = round(min(1.0, rate + self.rng.uniform(0, 0.2)), 3)
                rows += [scope, _stamp(hour), rate * seconds, seconds, peak]
        values = ", ".join(["('occupancy', ?, ?, 0, ?, ?, ?)"] * (len(rows) // 5))
        await self.write(
            "INSERT INTO metric_rollups "
            f"(series, department_id, hour_start, amount, weighted, seconds, peak) VALUES {values}",
            tuple(rows),
        )


async def _write_activity(hospital: Hospital, span: Span) -> None:
    """Rows all over the period and a day either side; rows at its very edges (the first and
    last second in it, the seconds just outside); rows at the clock changes."""
    rng = hospital.rng
    low = span.first - timedelta(days=1)
    seconds = int((span.stop - low).total_seconds()) + 86_400

    def anytime() -> datetime:
        fraction = rng.choice([0, 0, rng.randrange(1, 10**6)])
        return low + timedelta(seconds=rng.randrange(seconds), microseconds=fraction)

    edges = [
        (span.first, PLAIN),
        (span.first - timedelta(seconds=1), PLAIN),
        (span.stop - timedelta(seconds=1), ISO),
        (span.stop, PLAIN),
        *((moment, FULL) for moment in CLOCK_CHANGES if low <= moment < span.stop + timedelta(1)),
    ]
    many = max(1, len(span.days()) // 3)
    for _ in range(12 * many):
        admitted = anytime()
        stay = timedelta(minutes=rng.randrange(20, 72 * 60))
        discharged = admitted + stay if rng.random() < 0.8 else None
        await hospital.stay(hospital.department(), admitted, discharged)
    for moment, form in edges:
        await hospital.stay(hospital.department(), moment, None, form)
        before = moment - timedelta(hours=5, minutes=7)
        await hospital.stay(hospital.department(), before, moment, form)
    for _ in range(10 * many):
        await hospital.arrival(anytime())
    for moment, form in edges:
        await hospital.arrival(moment, form)
    for status in (*APPOINTMENT_STATUSES, "lost"):  # "lost": a status the dashboard knows not
        for _ in range(rng.randrange(2, 5) * many):
            await hospital.appointment(anytime(), status)
    for moment, form in edges:
        await hospital.appointment(moment, rng.choice(APPOINTMENT_STATUSES), form)
    for _ in range(12 * many):
        await hospital.payment(anytime(), rng.randrange(1, 500_000))
    for moment, form in edges:
        await hospital.payment(moment, rng.randrange(1, 500_000), form)
    for _ in range(14 * many):
        await hospital.alert(anytime())
    for moment, form in edges:
        await hospital.alert(moment, form)
    hours = [span.first + timedelta(hours=n) for n in range(-2, len(span.hours()) + 2)]
    await hospital.observed_occupancy(hours)


def _figures(document: dict[str, Any]) -> dict[str, Any]:
    return {figure["key"]: figure["value"] for figure in document["figures"]}


def _tables(document: dict[str, Any]) -> dict[str, list[list[Any]]]:
    return {table["key"]: table["rows"] for table in document["tables"]}


async def _generate(server: LiveServer, request: ReportRequest) -> dict[str, Any]:
    reports = services_of(server).reports
    info = await reports.generate(request)
    assert info.status == "done", info.error
    document: dict[str, Any] = json.loads(await reports.archive.content(info.id))
    assert document["feed_position"] == info.feed_position
    return document


@pytest.mark.parametrize(("first", "stop", "hours"), PERIODS.values(), ids=PERIODS.keys())
async def test_every_report_equals_a_recount_of_the_rows(
    reporting: LiveServer,
    connect: Connect,
    token: Any,
    hospital: dict[str, int],
    writer: Write,
    database_url: str,
    settings: Settings,
    first: date,
    stop: date,
    hours: int,
) -> None:
    zone = settings.zone
    span = Span(datetime.combine(first, time(), zone), datetime.combine(stop, time(), zone), zone)
    screen = await patient_screen(connect, reporting, token)
    # A department with no activity at all: its rows say nothing happened, not "missing".
    await writer("INSERT INTO departments (code, name) VALUES ('NEURO', 'Neurologie')")
    await _write_activity(Hospital(writer, [hospital["ED"], hospital["CARD"]], str(first)), span)
    await register_patient(writer, hospital["ED"], "the last write")
    await feed_applied(database_url, screen)
    rows = await read_rows(database_url)
    units = {unit.code: unit for unit in rows.units}
    period = resolve_period(None, start=first, end=stop, zone=zone, now=NOW)
    assert (period.start, period.end) == (span.start, span.end)

    services = services_of(reporting)
    for report_type in REPORT_TYPES:
        for department in (None, "CARD"):
            scope = await services.reports.scope(department)
            request = ReportRequest(report_type, scope, period, "json", "auditor")
            document = await _generate(reporting, request)
            truth = expected(report_type, rows, units[department] if department else None, span)
            where = f"{report_type} report of {department or 'the hospital'}"
            assert _figures(document) == truth.figures, where
            assert _tables(document) == truth.tables, where
            assert document["period"]["start"] == span.start.isoformat()
            assert document["period"]["end"] == span.end.isoformat()
            assert document["department"] == department
            if report_type == "occupancy":
                assert len(_tables(document)["by_hour"]) == hours
    # The data covers what it should: every kind of row fell inside the period.
    everything = expected("alerts", rows, None, span)
    assert everything.figures["raised"] > 0
    assert everything.figures["resolve_minutes_mean"] is not None
    emergencies = expected("emergency", rows, None, span).figures
    assert emergencies["admitted"] > 0
    assert emergencies["not_admitted"] > 0


TODAY_METRICS = [
    "admissions_today",
    "discharges_today",
    "revenue_today",
    "appointments_today",
    *(f"appointments_{status}_today" for status in APPOINTMENT_STATUSES),
]


async def test_a_report_for_today_equals_the_dashboard_now(
    reporting: LiveServer,
    connect: Connect,
    token: Any,
    hospital: dict[str, int],
    writer: Write,
    database_url: str,
    settings: Settings,
) -> None:
    zone = settings.zone
    midnight = datetime.combine(NOW.astimezone(zone).date(), time(), zone).astimezone(UTC)
    today = midnight.replace(tzinfo=None)
    now = NOW.replace(tzinfo=None)
    screen = await patient_screen(connect, reporting, token)
    ed, card = hospital["ED"], hospital["CARD"]
    activity = Hospital(writer, [ed, card], "today")
    for ward in (ed, card, card):
        await activity.stay(ward, today + timedelta(hours=3), now - timedelta(minutes=5))
        await activity.stay(ward, today - timedelta(hours=2), today + timedelta(hours=1))
        await activity.stay(ward, today - timedelta(seconds=1), None)  # yesterday
    await activity.payment(today, 12_345, PLAIN, card)
    await activity.payment(now - timedelta(seconds=1), 96, ISO, card)
    await activity.payment(today + timedelta(hours=2), 50_000, department=ed)
    await activity.payment(today - timedelta(microseconds=1), 70_000, department=card)
    for n, status in enumerate((*APPOINTMENT_STATUSES, "completed", "no_show", "lost")):
        await activity.appointment(today + timedelta(minutes=30 * n), status)
    await activity.appointment(today - timedelta(minutes=1), "completed")
    # Booked for later today: on today's list (the dashboard's and the report's) already.
    await activity.appointment(now + timedelta(hours=1), "scheduled")
    await register_patient(writer, ed, "the last write")
    await feed_applied(database_url, screen)

    # What a dashboard opened now shows (updates of the standard tier may still be coalescing).
    await screen.call("request_snapshot", {"metrics": TODAY_METRICS, "departments": [None, "CARD"]})
    snapshot = await screen.next(
        "metrics_snapshot", lambda s: any(v["metric"] == "revenue_today" for v in s["values"])
    )
    shown = {(value["metric"], value["department"]): value["value"] for value in snapshot["values"]}
    services = services_of(reporting)
    period = resolve_period("today", zone=zone, now=NOW)
    assert period.start == midnight
    for department in (None, "CARD"):
        scope = await services.reports.scope(department)

        async def report(report_type: str, scope: Any = scope) -> dict[str, Any]:
            return await _generate(
                reporting, ReportRequest(report_type, scope, period, "json", "t")
            )

        admissions = _figures(await report("admissions"))
        assert admissions["admissions"] == shown["admissions_today", department]
        assert admissions["discharges"] == shown["discharges_today", department]
        revenue = _figures(await report("revenue"))
        assert revenue["revenue"] == shown["revenue_today", department]
        appointments = await report("appointments")
        (row,) = _tables(appointments)["by_day"]
        assert _figures(appointments)["total"] == row[1] == shown["appointments_today", department]
        for status, count in zip(APPOINTMENT_STATUSES, row[2:7], strict=True):
            assert count == shown[f"appointments_{status}_today", department], status
    # And those are the rows written today: the dashboard is not simply equal to itself.
    assert shown["admissions_today", None] == 3
    assert shown["discharges_today", "CARD"] == 4
    assert shown["revenue_today", "CARD"] == "124.41"
    assert shown["appointments_today", None] == 9
    # Yesterday's 700.00 and today's 124.41 make 412.205 a day: money rounds half up.
    yesterday = NOW.astimezone(zone).date() - timedelta(days=1)
    two_days = resolve_period(None, start=yesterday, end=NOW, zone=zone, now=NOW)
    cardiology = await services.reports.scope("CARD")
    revenue = await _generate(
        reporting, ReportRequest("revenue", cardiology, two_days, "json", "t")
    )
    assert _figures(revenue)["revenue_daily_mean"] == "412.21"
