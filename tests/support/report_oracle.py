"""Every report's figures and table cells recounted from the rows: the truth a report must equal.

Written without `livedash.reports` or `livedash.metrics`: the rows are read back with plain SQL,
and local days and hours are worked out here with zoneinfo. Occupancy is the one figure that
no table holds (the service observes it over time and stores it by hour), so it is recounted
from the stored `metric_rollups` rows; every other count comes from the hospital's own tables.
The rounding is the reports' documented one: rates to 4 places, hours and means to 2, money
exact to the cent (means rounded half up).

`patient_screen` and `feed_applied` wait, as a dashboard would see it, until the service has
applied every row written so far, so that a report can be compared with the rows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from livedash.testing.recorder import Recorder
from tests.support.live import Connect, LiveServer

APPOINTMENT_STATUSES = ("scheduled", "checked_in", "completed", "cancelled", "no_show")
SEVERITIES = ("critical", "high", "medium", "low")
BY_HAND = "(raised by hand)"
NOISIEST = 10

Table = list[list[Any]]


@dataclass(frozen=True, slots=True)
class Unit:
    """A department as the tables hold it."""

    ident: int
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Stay:
    patient: int
    department: int
    admitted: datetime
    discharged: datetime | None


@dataclass(frozen=True, slots=True)
class Alert:
    department: int | None
    severity: str
    rule: str | None
    raised: datetime
    acknowledged: datetime | None
    resolved: datetime | None


@dataclass(frozen=True, slots=True)
class Rows:
    """The rows every report reads (timestamps as naive UTC, as the tables mean them)."""

    units: list[Unit]
    stays: list[Stay]
    patients: list[tuple[int, int, bool, datetime]]  # id, department, emergency, registered
    appointments: list[tuple[int, datetime, str]]  # department, scheduled, status
    payments: list[tuple[int, datetime, int]]  # department, paid, cents
    alerts: list[Alert]
    occupancy: list[tuple[int, datetime, float, float, float | None]]
    """Stored occupancy hours: department (0: hospital), hour, weighted, seconds, peak."""


def _moment(value: Any) -> datetime | None:
    """A stored timestamp as naive UTC: SQLite hands back the text that was written."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _at(value: Any) -> datetime:
    moment = _moment(value)
    if moment is None:
        raise ValueError("a required timestamp is missing")
    return moment


async def read_rows(database_url: str) -> Rows:
    """Every row the reports read, with plain SQL."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:

            async def rows(sql: str) -> list[Any]:
                return list(await connection.execute(text(sql)))

            units = [
                Unit(int(i), str(c), str(n))
                for i, c, n in await rows("SELECT id, code, name FROM departments ORDER BY code")
            ]
            stays = [
                Stay(int(p), int(d), _at(a), _moment(x))
                for p, d, a, x in await rows(
                    "SELECT patient_id, department_id, admitted_at, discharged_at FROM admissions"
                )
            ]
            patients = [
                (int(i), int(d), bool(e), _at(r))
                for i, d, e, r in await rows(
                    "SELECT id, department_id, emergency, registered_at FROM patients"
                )
            ]
            appointments = [
                (int(d), _at(s), str(status))
                for d, s, status in await rows(
                    "SELECT department_id, scheduled_at, status FROM appointments"
                )
            ]
            payments = [
                (int(d), _at(p), int(c))
                for d, p, c in await rows(
                    "SELECT department_id, paid_at, amount_cents FROM payments"
                )
            ]
            alerts = [
                Alert(d, str(s), r, _at(raised), _moment(ack), _moment(res))
                for d, s, r, raised, ack, res in await rows(
                    "SELECT department_id, severity, rule, raised_at, acknowledged_at, "
                    "resolved_at FROM alerts"
                )
            ]
            occupancy = [
                (int(d), _at(h), float(w), float(s), None if p is None else float(p))
                for d, h, w, s, p in await rows(
                    "SELECT department_id, hour_start, weighted, seconds, peak "
                    "FROM metric_rollups WHERE series = 'occupancy'"
                )
            ]
    finally:
        await engine.dispose()
    return Rows(units, stays, patients, appointments, payments, alerts, occupancy)


async def count(database_url: str, sql: str) -> int:
    """One number, with plain SQL."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(text(sql))).scalar_one())
    finally:
        await engine.dispose()


async def patient_screen(
    connect: Connect, server: LiveServer, token: Callable[[], str]
) -> Recorder:
    """A dashboard that follows the hospital's patient count, for `feed_applied`."""
    screen = await connect(server, token())
    await screen.call("subscribe_metrics", {"metrics": ["patients_total"], "departments": [None]})
    return screen


async def feed_applied(database_url: str, screen: Recorder) -> None:
    """Wait until the service has applied every row written so far.

    `screen` is subscribed to `patients_total`. The caller's last write registered a patient;
    the feed applies changes in order, so once the screen shows every patient counted, every
    earlier row was counted too (roll-ups included).
    """
    patients = await count(database_url, "SELECT COUNT(*) FROM patients")
    await screen.until(lambda: screen.view().get(("patients_total", None)) == patients)


# -- periods ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """A report's period [start, end) (aware), read in `zone`."""

    start: datetime
    end: datetime
    zone: ZoneInfo

    @property
    def first(self) -> datetime:
        return self.start.astimezone(UTC).replace(tzinfo=None)

    @property
    def stop(self) -> datetime:
        return self.end.astimezone(UTC).replace(tzinfo=None)

    def holds(self, moment: datetime | None) -> bool:
        return moment is not None and self.first <= moment < self.stop

    def day(self, moment: datetime) -> date:
        return moment.replace(tzinfo=UTC).astimezone(self.zone).date()

    def days(self) -> list[date]:
        """Every local date the period touches."""
        first = self.start.astimezone(self.zone).date()
        found = [first]
        moment = self.start
        while True:
            moment += timedelta(hours=1)
            if moment >= self.end:
                return found
            local = moment.astimezone(self.zone).date()
            if local != found[-1]:
                found.append(local)

    def hours(self) -> list[datetime]:
        """The (naive UTC) start of every hour of the period: Berlin's offsets are whole hours,
        so its local hours are UTC hours, 23 of them on a spring day and 25 on an autumn one."""
        hour = self.first.replace(minute=0, second=0, microsecond=0)
        found = []
        while hour < self.stop:
            found.append(hour)
            hour += timedelta(hours=1)
        return found

    def label(self, hour: datetime) -> str:
        return hour.replace(tzinfo=UTC).astimezone(self.zone).isoformat()


# -- arithmetic ------------------------------------------------------------------------------


def _mean(values: Iterable[float], places: int = 2) -> float | None:
    found = list(values)
    return round(sum(found) / len(found), places) if found else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _money(cents: int | Decimal) -> str:
    return str((Decimal(cents) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _hours(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0) / 3600


def _longest(values: list[float]) -> float | None:
    return round(max(values), 2) if values else None


# -- the reports -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    figures: dict[str, Any]
    tables: dict[str, Table]


def expected(report_type: str, rows: Rows, unit: Unit | None, span: Span) -> Expected:
    """What the `report_type` report of `unit` (None: the hospital) over `span` must say."""
    return _RECOUNTS[report_type](rows, unit, span)


def _mine(department: int | None, unit: Unit | None) -> bool:
    return unit is None or department == unit.ident


def _per_unit(
    rows: Rows, unit: Unit | None, cells: Callable[[Unit], list[Any]]
) -> dict[str, Table]:
    """The by-department table of a hospital-wide report (none for a department)."""
    return {} if unit is not None else {"by_department": [cells(u) for u in rows.units]}


def _occupancy(rows: Rows, unit: Unit | None, span: Span) -> Expected:
    def hourly(scope: int) -> dict[datetime, tuple[float, float, float | None]]:
        return {
            hour: (weighted, seconds, peak)
            for department, hour, weighted, seconds, peak in rows.occupancy
            if department == scope and span.holds(hour)
        }

    def value(weighted: float, seconds: float) -> float | None:
        return round(weighted / seconds, 4) if seconds else None

    def hour_values(scope: int) -> list[float]:
        found = [value(w, s) for w, s, _ in hourly(scope).values()]
        return [v for v in found if v is not None]

    own = hourly(0 if unit is None else unit.ident)
    by_hour = [
        [span.label(hour), value(*own[hour][:2]), own[hour][2]]
        if hour in own
        else [span.label(hour), None, None]
        for hour in span.hours()
    ]
    ended = [s for s in rows.stays if span.holds(s.discharged) and _mine(s.department, unit)]
    lengths: dict[date, list[float]] = defaultdict(list)
    for stay in ended:
        assert stay.discharged is not None
        lengths[span.day(stay.discharged)].append(_hours(stay.admitted, stay.discharged))
    by_day = []
    for day in span.days():
        that_day = [bucket for hour, bucket in own.items() if span.day(hour) == day]
        peaks = [peak for _, _, peak in that_day if peak is not None]
        by_day.append(
            [
                day.isoformat(),
                value(sum(b[0] for b in that_day), sum(b[1] for b in that_day))
                if that_day
                else None,
                max(peaks) if peaks else None,
                len(lengths[day]),
                _mean(lengths[day]),
                _longest(lengths[day]),
            ]
        )
    every = [length for values in lengths.values() for length in values]
    peaks = [peak for _, _, peak in own.values() if peak is not None]

    def department_row(u: Unit) -> list[Any]:
        theirs = [
            _hours(s.admitted, s.discharged)
            for s in ended
            if s.department == u.ident and s.discharged is not None
        ]
        return [u.name, _mean(hour_values(u.ident), 4), len(theirs), _mean(theirs)]

    return Expected(
        figures={
            "occupancy_mean": _mean(hour_values(0 if unit is None else unit.ident), 4),
            "occupancy_peak": max(peaks) if peaks else None,
            "stays_ended": len(every),
            "length_of_stay_mean": _mean(every),
        },
        tables={
            "by_day": by_day,
            "by_hour": by_hour,
            **_per_unit(rows, unit, department_row),
        },
    )


def _admissions(rows: Rows, unit: Unit | None, span: Span) -> Expected:
    def counts(scope: Unit | None) -> tuple[Counter[date], Counter[date]]:
        admitted: Counter[date] = Counter()
        discharged: Counter[date] = Counter()
        for stay in rows.stays:
            if not _mine(stay.department, scope):
                continue
            if span.holds(stay.admitted):
                admitted[span.day(stay.admitted)] += 1
            if stay.discharged is not None and span.holds(stay.discharged):
                discharged[span.day(stay.discharged)] += 1
        return admitted, discharged

    admitted, discharged = counts(unit)
    by_day = [
        [day.isoformat(), admitted[day], discharged[day], admitted[day] - discharged[day]]
        for day in span.days()
    ]

    def department_row(u: Unit) -> list[Any]:
        a, d = (sum(c.values()) for c in counts(u))
        return [u.name, a, d, a - d]

    total_in, total_out = sum(admitted.values()), sum(discharged.values())
    return Expected(
        figures={
            "admissions": total_in,
            "discharges": total_out,
            "net": total_in - total_out,
            "admissions_daily_mean": _mean(admitted[day] for day in span.days()),
        },
        tables={"by_day": by_day, **_per_unit(rows, unit, department_row)},
    )


def _emergency(rows: Rows, unit: Unit | None, span: Span) -> Expected:
    first_admission: dict[int, datetime] = {}
    for stay in rows.stays:
        earlier = first_admission.get(stay.patient)
        first_admission[stay.patient] = min(stay.admitted, earlier or stay.admitted)
    arrivals = [
        (ident, registered)
        for ident, department, emergency, registered in rows.patients
        if emergency and span.holds(registered) and _mine(department, unit)
    ]
    per_day: Counter[date] = Counter()
    per_hour: Counter[datetime] = Counter()
    per_hour_of_day: Counter[int] = Counter()
    waits: dict[date, list[float]] = defaultdict(list)
    not_admitted = 0
    for ident, registered in arrivals:
        day = span.day(registered)
        per_day[day] += 1
        per_hour[registered.replace(minute=0, second=0, microsecond=0)] += 1
        per_hour_of_day[registered.replace(tzinfo=UTC).astimezone(span.zone).hour] += 1
        admitted = first_admission.get(ident)
        if admitted is None or admitted < registered:
            not_admitted += 1
        else:
            waits[day].append(_hours(registered, admitted))
    days = span.days()
    every = [wait for values in waits.values() for wait in values]
    most = max(per_hour_of_day.values(), default=0)
    return Expected(
        figures={
            "arrivals": len(arrivals),
            "admitted": len(every),
            "not_admitted": not_admitted,
            "wait_mean": _mean(every),
            "busiest_hour_of_day": min(h for h in range(24) if per_hour_of_day[h] == most),
            "peak_hour_arrivals": max(per_hour.values(), default=0),
        },
        tables={
            "by_day": [
                [
                    day.isoformat(),
                    per_day[day],
                    len(waits[day]),
                    _mean(waits[day]),
                    _longest(waits[day]),
                ]
                for day in days
            ],
            "by_hour_of_day": [
                [hour, per_hour_of_day[hour], round(per_hour_of_day[hour] / len(days), 2)]
                for hour in range(24)
            ],
        },
    )


def _appointments(rows: Rows, unit: Unit | None, span: Span) -> Expected:
    def cells(statuses: Counter[str]) -> list[Any]:
        total = sum(statuses.values())
        return [
            total,
            *(statuses[status] for status in APPOINTMENT_STATUSES),
            _rate(statuses["completed"], total),
            _rate(statuses["cancelled"], total),
            _rate(statuses["no_show"], total),
        ]

    def statuses(scope: Unit | None, day: date | None = None) -> Counter[str]:
        return Counter(
            status
            for department, scheduled, status in rows.appointments
            if span.holds(scheduled)
            and _mine(department, scope)
            and (day is None or span.day(scheduled) == day)
        )

    total, *_, completion, cancellation, no_show = cells(statuses(unit))
    return Expected(
        figures={
            "total": total,
            "completion_rate": completion,
            "cancellation_rate": cancellation,
            "no_show_rate": no_show,
        },
        tables={
            "by_day": [[day.isoformat(), *cells(statuses(unit, day))] for day in span.days()],
            **_per_unit(rows, unit, lambda u: [u.name, *cells(statuses(u))]),
        },
    )


def _revenue(rows: Rows, unit: Unit | None, span: Span) -> Expected:
    def cents(scope: Unit | None) -> Counter[date]:
        found: Counter[date] = Counter()
        for department, paid, amount in rows.payments:
            if span.holds(paid) and _mine(department, scope):
                found[span.day(paid)] += amount
        return found

    own = cents(unit)
    total = sum(own.values())
    days = span.days()
    return Expected(
        figures={
            "revenue": _money(total),
            "revenue_daily_mean": _money(Decimal(total) / len(days)),
        },
        tables={
            "by_day": [[day.isoformat(), _money(own[day])] for day in days],
            **_per_unit(rows, unit, lambda u: [u.name, _money(sum(cents(u).values()))]),
        },
    )


def _alerts(rows: Rows, unit: Unit | None, span: Span) -> Expected:
    raised = [a for a in rows.alerts if span.holds(a.raised) and _mine(a.department, unit)]

    def minutes(alerts: list[Alert], when: Callable[[Alert], datetime | None]) -> float | None:
        spans = [
            (moment - a.raised).total_seconds() / 60
            for a in alerts
            if (moment := when(a)) is not None and moment >= a.raised
        ]
        return _mean(spans)

    def acknowledged(a: Alert) -> datetime | None:
        return a.acknowledged

    def resolved(a: Alert) -> datetime | None:
        return a.resolved

    by_rule: dict[str, list[Alert]] = defaultdict(list)
    for alert in raised:
        by_rule[alert.rule or BY_HAND].append(alert)
    noisiest = sorted(by_rule.items(), key=lambda item: (-len(item[1]), item[0]))[:NOISIEST]
    by_day = []
    for day in span.days():
        that_day = Counter(a.severity for a in raised if span.day(a.raised) == day)
        by_day.append([day.isoformat(), sum(that_day.values()), *(that_day[s] for s in SEVERITIES)])
    return Expected(
        figures={
            "raised": len(raised),
            **{f"raised_{s}": sum(1 for a in raised if a.severity == s) for s in SEVERITIES},
            "acknowledge_minutes_mean": minutes(raised, acknowledged),
            "resolve_minutes_mean": minutes(raised, resolved),
        },
        tables={
            "by_day": by_day,
            "noisiest_rules": [
                [rule, len(alerts), minutes(alerts, acknowledged), minutes(alerts, resolved)]
                for rule, alerts in noisiest
            ],
        },
    )


_RECOUNTS: dict[str, Callable[[Rows, Unit | None, Span], Expected]] = {
    "occupancy": _occupancy,
    "admissions": _admissions,
    "emergency": _emergency,
    "appointments": _appointments,
    "revenue": _revenue,
    "alerts": _alerts,
}
REPORT_TYPES = tuple(_RECOUNTS)
