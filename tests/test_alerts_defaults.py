"""The default alert rules on the demo's hospital: over one simulated day they raise a handful
of alerts, and none of them over and over or all day long.

The demo's hospital (seed 7) is seeded at midnight and simulated event by event for 24 hours
on a `ManualClock` that follows the simulator's own simulated time, so the rows and the rules
share one clock and a day takes seconds. After every event the metrics the rules read are
computed from the rows by SQL (checked against `livedash.testing.oracle`), and each rule's
`Condition` is driven as `AlertService` drives it: every changed value observed when it
changes, pending and keep-firing periods ended by the clock (here: every simulated minute).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from livedash.alerts.config import load_alert_config
from livedash.alerts.evaluation import Condition, Transition, fires, resolves
from livedash.alerts.rules import ThresholdRule
from livedash.metrics.clock import ManualClock
from livedash.simulator import HospitalSimulator, seed_hospital
from livedash.store.migrate import upgrade_async
from livedash.testing.oracle import recompute

SEED = 7  # `livedash demo`'s default
ZONE = ZoneInfo("UTC")  # the demo's default time zone
MIDNIGHT = datetime(2026, 3, 10, tzinfo=UTC)
DAY = timedelta(days=1)
CHECK_ORACLE_AT = (timedelta(hours=14), DAY)
"""When the day's SQL is compared with the oracle's (14:00: when revenue-behind starts)."""

FIRING_RULES = frozenset({"emergency-waiting", "department-few-free-beds"})
"""The defaults that a normal simulated day brings to fire."""
QUIET_RULES = frozenset(
    {"hospital-occupancy-high", "department-full", "revenue-behind", "report-run-failed"}
)
"""The defaults meant for what a normal simulated day does not do: the whole hospital above
90 %, a department with every bed taken, revenue far behind by 14:00, a scheduled report
that failed."""
MIN_ALERTS = 3
MAX_ALERTS_PER_RULE = 3
MAX_FIRING = timedelta(hours=6)
"""The longest one rule may fire in one scope over the day: no alert lasts all day."""

Key = tuple[str, str | None]
"""(metric, department code); None is the whole hospital."""


@dataclass(frozen=True, slots=True)
class Reading:
    """The rules' metrics right after an event, at the simulated moment it happened."""

    at: datetime
    values: dict[Key, float]


@dataclass(slots=True)
class Alert:
    rule: str
    department: str | None
    raised: datetime
    resolved: datetime | None = None

    def firing(self, end: datetime) -> timedelta:
        return (self.resolved or end) - self.raised


@dataclass(slots=True)
class SimulatedDay:
    readings: list[Reading] = field(default_factory=list)
    events: int = 0
    oracle_differences: dict[str, dict[Key, tuple[float, float]]] = field(default_factory=dict)


def _label(since_midnight: timedelta) -> str:
    return f"{since_midnight / timedelta(hours=1):g}:00"


HEALTHY: dict[Key, float] = {("report_runs_failing", None): 0}
"""The service's own health on an ordinary day: every scheduled report ran."""


def _sql_readings(database: sqlite3.Connection, today: datetime) -> dict[Key, float]:
    """bed_occupancy_rate, beds_free, patients_waiting and revenue_today, in every scope,
    computed as `livedash.testing.oracle` computes them."""
    codes: dict[int, str] = dict(database.execute("SELECT id, code FROM departments"))
    beds: dict[str | None, Counter[str]] = {scope: Counter() for scope in [None, *codes.values()]}
    for department_id, status, count in database.execute(
        "SELECT r.department_id, b.status, count(*) FROM beds b JOIN rooms r ON r.id = b.room_id "
        "GROUP BY r.department_id, b.status"
    ):
        beds[codes[department_id]][status] += count
        beds[None][status] += count
    waiting: Counter[str | None] = Counter()
    for department_id, count in database.execute(
        "SELECT department_id, count(*) FROM patients WHERE status = 'registered' "
        "GROUP BY department_id"
    ):
        waiting[codes[department_id]] += count
        waiting[None] += count
    values: dict[Key, float] = {}
    for scope, by_status in beds.items():
        in_service = by_status.total() - by_status["out_of_service"]
        occupied = by_status["occupied"]
        values["bed_occupancy_rate", scope] = round(occupied / in_service, 4) if in_service else 0.0
        values["beds_free", scope] = by_status["free"]
        values["patients_waiting", scope] = waiting[scope]
    start = today.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    (cents,) = database.execute(
        "SELECT COALESCE(SUM(amount_cents), 0) FROM payments "
        "WHERE julianday(paid_at) >= julianday(?) AND julianday(paid_at) < julianday(?, '+1 day')",
        (start, start),
    ).fetchone()
    values["revenue_today", None] = cents / 100
    return values


async def _simulate_day(path: Path) -> SimulatedDay:
    """Seed the demo's hospital at midnight and run its simulator through the day."""
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(url)
    await seed_hospital(url, seed=SEED, now=MIDNIGHT, zone=ZONE)
    clock = ManualClock(MIDNIGHT)
    day = SimulatedDay()
    checks = list(CHECK_ORACLE_AT)
    with closing(sqlite3.connect(path)) as database:
        day.readings.append(Reading(MIDNIGHT, {**_sql_readings(database, MIDNIGHT), **HEALTHY}))
        async with HospitalSimulator(url, seed=SEED, clock=clock.now, zone=ZONE) as simulator:
            while True:
                hour = simulator.simulated_hour
                await simulator.step()
                day.events += 1
                values = _sql_readings(database, MIDNIGHT)
                day.readings.append(Reading(clock.now(), {**values, **HEALTHY}))
                # The simulator chose the gap to its next event; the clock follows it.
                gap = timedelta(hours=(simulator.simulated_hour - hour) % 24)
                if checks and clock.now() + gap >= MIDNIGHT + checks[0]:
                    truth = await recompute(url, ZONE, MIDNIGHT.date())
                    day.oracle_differences[_label(checks.pop(0))] = {
                        key: (value, float(truth[key]))
                        for key, value in values.items()
                        if value != float(truth[key])
                    }
                if clock.now() + gap >= MIDNIGHT + DAY:
                    return day
                clock.advance(gap)


def _evaluate(rules: list[ThresholdRule], readings: list[Reading]) -> list[Alert]:
    """The alerts `rules` raise over the day of `readings`, as `AlertService` would raise them."""
    scopes = readings[0].values
    conditions: dict[Key, list[Condition]] = {}
    for rule in rules:
        watched = [key for key in scopes if key[0] == rule.metric and rule.applies_to(key[1])]
        assert watched, f"{rule.name}: no value of {rule.metric} in scope {rule.scope}"
        for key in watched:
            conditions.setdefault(key, []).append(Condition(rule, key[1], ZONE))
    every = [condition for group in conditions.values() for condition in group]
    alerts: list[Alert] = []
    raised: dict[tuple[str, str | None], Alert] = {}

    def record(transitions: list[Transition]) -> None:
        for transition in transitions:
            where = (transition.rule, transition.department)
            if fires(transition):
                raised[where] = Alert(transition.rule, transition.department, transition.at)
                alerts.append(raised[where])
            elif resolves(transition):
                raised.pop(where).resolved = transition.at

    minute = MIDNIGHT
    last: dict[Key, float] = {}
    for reading in [*readings, Reading(MIDNIGHT + DAY, {})]:
        while minute <= reading.at:
            for condition in every:
                record(condition.tick(minute))
            minute += timedelta(minutes=1)
        for key, value in reading.values.items():
            if last.get(key) != value:  # the feed carries changed values only
                last[key] = value
                for condition in conditions.get(key, ()):
                    record(condition.observe(value, reading.at))
    return alerts


@pytest.fixture(scope="module")
def demo_day(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDay:
    path = tmp_path_factory.mktemp("demo-day") / "hospital.db"
    return asyncio.run(_simulate_day(path))


@pytest.fixture(scope="module")
def default_rules() -> list[ThresholdRule]:
    return load_alert_config(None).rules


def _counts(alerts: list[Alert]) -> Counter[str]:
    return Counter(alert.rule for alert in alerts)


def _describe(alerts: list[Alert]) -> str:
    return "; ".join(
        f"{a.rule} {a.department or 'hospital'} {a.raised:%H:%M}-"
        + (f"{a.resolved:%H:%M}" if a.resolved else "...")
        for a in alerts
    )


def test_the_simulated_day_is_a_whole_day_read_as_the_oracle_reads_it(
    demo_day: SimulatedDay,
) -> None:
    assert demo_day.events > 1000  # about 2,000 events a day for a 300-bed hospital
    assert demo_day.readings[-1].at >= MIDNIGHT + DAY - timedelta(minutes=10)
    assert demo_day.oracle_differences == {_label(check): {} for check in CHECK_ORACLE_AT}


def test_the_defaults_fire_during_a_simulated_day(
    demo_day: SimulatedDay, default_rules: list[ThresholdRule]
) -> None:
    alerts = _evaluate(default_rules, demo_day.readings)
    fired = _counts(alerts)
    assert sum(fired.values()) >= MIN_ALERTS, _describe(alerts)
    assert set(fired) >= FIRING_RULES, _describe(alerts)
    assert {rule.name for rule in default_rules} == FIRING_RULES | QUIET_RULES


def test_the_defaults_are_not_noisy_on_a_normal_day(
    demo_day: SimulatedDay, default_rules: list[ThresholdRule]
) -> None:
    alerts = _evaluate(default_rules, demo_day.readings)
    assert max(_counts(alerts).values()) <= MAX_ALERTS_PER_RULE, _describe(alerts)
    firing: dict[tuple[str, str | None], timedelta] = {}
    for alert in alerts:
        where = (alert.rule, alert.department)
        firing[where] = firing.get(where, timedelta()) + alert.firing(MIDNIGHT + DAY)
    assert max(firing.values()) <= MAX_FIRING, _describe(alerts)
    assert not QUIET_RULES & set(_counts(alerts)), _describe(alerts)


def _scaled(metric: str, factor: float) -> Callable[[Reading], Reading]:
    def scale(reading: Reading) -> Reading:
        values = {
            key: value * factor if key[0] == metric else value
            for key, value in reading.values.items()
        }
        return Reading(reading.at, values)

    return scale


def test_revenue_behind_fires_once_on_a_day_that_takes_in_half_as_much(
    demo_day: SimulatedDay, default_rules: list[ThresholdRule]
) -> None:
    # The bound is on the simulator's scale of money: reached when payments really lag.
    revenue = [rule for rule in default_rules if rule.name == "revenue-behind"]
    half = list(map(_scaled("revenue_today", 0.5), demo_day.readings))
    alerts = _evaluate(revenue, half)
    assert [(alert.rule, alert.raised.hour) for alert in alerts] == [("revenue-behind", 14)]
    assert _evaluate(revenue, demo_day.readings) == []
