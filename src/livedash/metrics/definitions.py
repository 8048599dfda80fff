"""The metrics livedash serves, declared once: name, tier, meaning, inputs and formula.

Every metric exists for the whole hospital (department `None`) and for each department.
A metric's value is computed from the engine's counters through a `Scope`: the counters of
one department (or the hospital) on the hospital's current day. `families` names the counter
families it reads, so a change recomputes only the metrics whose inputs it touched; `daily`
marks metrics whose value moves when the day does, recomputed at midnight.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

Value = int | float | Decimal | str | None
Key = tuple[Any, ...]


class Tier(enum.StrEnum):
    """How urgently a metric's changes must reach a screen."""

    CRITICAL = "critical"
    STANDARD = "standard"
    HISTORICAL = "historical"


@dataclass(frozen=True, slots=True)
class SystemStatus:
    """The service's own health, shown beside the hospital's numbers."""

    feed_lag_seconds: float = 0.0
    database_up: bool = True
    cache_up: bool = True
    report_runs_failing: int = 0
    main_app_up: bool | None = None  # None: no main application's health URL is polled


@dataclass(frozen=True, slots=True)
class Scope:
    """The counters of one department (`None`: the hospital) as of `today`."""

    counters: Mapping[Key, int]
    department: int | None
    today: date
    system: SystemStatus = field(default_factory=SystemStatus)
    historical: Mapping[tuple[str, int | None], Value] = field(default_factory=dict)

    def n(self, family: str, *rest: Any) -> int:
        """One counter of this scope."""
        return self.counters.get((family, self.department, *rest), 0)

    def since(self, family: str, first: date) -> int:
        """A date-keyed family summed from `first` to today (at most a month of lookups)."""
        days = (self.today - first).days
        return sum(self.n(family, self.today - timedelta(days=i)) for i in range(days + 1))

    def last_days(self, family: str, days: int) -> int:
        """A date-keyed family summed over the last `days` days, today included."""
        return self.since(family, self.today - timedelta(days=days - 1))


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    name: str
    tier: Tier
    description: str
    families: tuple[str, ...]
    compute: Callable[[Scope], Value]
    daily: bool = False


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole > 0 else 0.0


def money(cents: int | float | None) -> Decimal | None:
    """Cents as currency units, exactly (None stays None)."""
    return Decimal(int(cents)).scaleb(-2) if cents is not None else None


def _mean_hours(seconds: int, count: int) -> float:
    return round(seconds / 3600 / count, 2) if count else 0.0


def _week_start(scope: Scope) -> date:
    return scope.today - timedelta(days=scope.today.weekday())


BED_FAMILIES = ("beds", "beds_all")
ALOS_DAYS = 30
APPOINTMENT_STATUSES = ("scheduled", "checked_in", "completed", "cancelled", "no_show")
ALERT_SEVERITIES = ("critical", "high", "medium", "low")


def _count(name: str, tier: Tier, description: str, family: str, *rest: Any) -> MetricDefinition:
    return MetricDefinition(name, tier, description, (family,), lambda s: s.n(family, *rest))


def _today(name: str, tier: Tier, description: str, family: str, *rest: Any) -> MetricDefinition:
    return MetricDefinition(
        name, tier, description, (family,), lambda s: s.n(family, s.today, *rest), daily=True
    )


def _beds(status: str) -> MetricDefinition:
    label = status.replace("_", " ")
    return _count(f"beds_{status}", Tier.CRITICAL, f"Beds {label}", "beds", status)


def _appointments(status: str) -> MetricDefinition:
    label = status.replace("_", " ")
    return _today(
        f"appointments_{status}_today",
        Tier.STANDARD,
        f"Today's appointments that are {label}",
        "appointments",
        status,
    )


def _alerts(severity: str) -> MetricDefinition:
    return _count(
        f"alerts_active_{severity}",
        Tier.CRITICAL,
        f"Unresolved {severity} alerts",
        "alerts_active",
        severity,
    )


_C, _S = Tier.CRITICAL, Tier.STANDARD

_DEFINITIONS = (
    _count("patients_total", _C, "Patients on record", "patients_total"),
    _count("patients_active", _C, "Patients currently under care", "patients_status", "active"),
    _count(
        "patients_waiting",
        _C,
        "Registered patients not yet admitted",
        "patients_status",
        "registered",
    ),
    _today(
        "patients_new_today",
        _C,
        "Patients registered today (hospital time)",
        "patients_registered_on",
    ),
    _count("patients_emergency", _C, "Emergency patients not yet discharged", "patients_emergency"),
    _count("beds_total", _C, "Beds", "beds_all"),
    *(_beds(status) for status in ("occupied", "free", "cleaning", "out_of_service")),
    MetricDefinition(
        "bed_occupancy_rate",
        _C,
        "Occupied beds / beds in service (0 to 1)",
        BED_FAMILIES,
        lambda s: _rate(s.n("beds", "occupied"), s.n("beds_all") - s.n("beds", "out_of_service")),
    ),
    _count("rooms_total", _C, "Rooms", "rooms"),
    _count("rooms_occupied", _C, "Rooms with at least one occupied bed", "rooms_occupied"),
    MetricDefinition(
        "room_occupancy_rate",
        _C,
        "Occupied rooms / rooms (0 to 1)",
        ("rooms", "rooms_occupied"),
        lambda s: _rate(s.n("rooms_occupied"), s.n("rooms")),
    ),
    _count("staff_on_duty", _C, "Staff clocked in now", "staff_on_duty"),
    *(_alerts(severity) for severity in ALERT_SEVERITIES),
    MetricDefinition(
        "feed_lag_seconds",
        _C,
        "How late the last applied change was applied",
        ("system",),
        lambda s: s.system.feed_lag_seconds,
    ),
    MetricDefinition(
        "database_up",
        _C,
        "1 while the database answers, else 0",
        ("system",),
        lambda s: int(s.system.database_up),
    ),
    MetricDefinition(
        "cache_up",
        _C,
        "1 while the cache answers, else 0",
        ("system",),
        lambda s: int(s.system.cache_up),
    ),
    MetricDefinition(
        "report_runs_failing",
        _C,
        "Report schedules whose last run failed (retried, then alerted on)",
        ("system",),
        lambda s: s.system.report_runs_failing,
    ),
    MetricDefinition(
        "main_app_up",
        _C,
        "1 while the hospital's main application answers its health URL, else 0 (none: not polled)",
        ("system",),
        lambda s: None if s.system.main_app_up is None else int(s.system.main_app_up),
    ),
    MetricDefinition(
        "appointments_today",
        _S,
        "Appointments scheduled for today, any status",
        ("appointments", "appointments_other"),
        lambda s: (
            sum(s.n("appointments", s.today, status) for status in APPOINTMENT_STATUSES)
            + s.n("appointments_other", s.today)
        ),
        daily=True,
    ),
    *(_appointments(status) for status in APPOINTMENT_STATUSES),
    MetricDefinition(
        "revenue_today",
        _S,
        "Payments received today (currency units, exact)",
        ("revenue_on",),
        lambda s: money(s.n("revenue_on", s.today)),
        daily=True,
    ),
    MetricDefinition(
        "revenue_week",
        _S,
        "Payments received since Monday",
        ("revenue_on",),
        lambda s: money(s.since("revenue_on", _week_start(s))),
        daily=True,
    ),
    MetricDefinition(
        "revenue_month",
        _S,
        "Payments received since the 1st",
        ("revenue_on",),
        lambda s: money(s.since("revenue_on", s.today.replace(day=1))),
        daily=True,
    ),
    _today("admissions_today", _S, "Admissions that began today", "admissions_on"),
    _today("discharges_today", _S, "Stays that ended today", "discharges_on"),
    MetricDefinition(
        "average_length_of_stay_hours",
        _S,
        f"Mean length of the stays that ended in the last {ALOS_DAYS} days, in hours",
        ("discharges_on", "stay_seconds_on"),
        lambda s: (
            round(
                s.last_days("stay_seconds_on", ALOS_DAYS)
                / 3600
                / s.last_days("discharges_on", ALOS_DAYS),
                2,
            )
            if s.last_days("discharges_on", ALOS_DAYS)
            else 0.0
        ),
        daily=True,
    ),
)

COUNT_SERIES = (
    "admissions",
    "discharges",
    "emergency_arrivals",
    "appointments_completed",
    "revenue",
)
"""Hourly sums of row contributions (`contributions.Contribution.series`; revenue in cents)."""
OCCUPANCY = "occupancy"
HISTORY_SERIES = (*COUNT_SERIES, OCCUPANCY)
"""Every series of the historical tier, as `request_historical` names them."""
GROWTH_PERIODS = ("day", "week", "month")


def _historical(name: str, description: str) -> MetricDefinition:
    return MetricDefinition(
        name,
        Tier.HISTORICAL,
        description,
        ("historical",),
        lambda s: s.historical.get((name, s.department)),
    )


_HISTORICAL = tuple(
    definition
    for series in HISTORY_SERIES
    for definition in (
        *(
            _historical(
                f"{series}_growth_{period}",
                f"{series.replace('_', ' ').capitalize()}: this {period} so far against the "
                f"same span of the previous {period} (0.1 = 10 % more; null: nothing before)",
            )
            for period in GROWTH_PERIODS
        ),
        _historical(
            f"{series}_trend",
            f"{series.replace('_', ' ').capitalize()} over the last 6 hours against the 6 "
            "before: increasing, decreasing or stable (within 10 %)",
        ),
    )
)

_DEFINITIONS = (*_DEFINITIONS, *_HISTORICAL)

METRICS: dict[str, MetricDefinition] = {definition.name: definition for definition in _DEFINITIONS}
"""Every metric by name."""

METRIC_NAMES: tuple[str, ...] = tuple(METRICS)

FAMILY_METRICS: dict[str, tuple[str, ...]] = {}
"""For each counter family, the metrics that read it."""
for _definition in _DEFINITIONS:
    for _family in _definition.families:
        FAMILY_METRICS[_family] = (*FAMILY_METRICS.get(_family, ()), _definition.name)

DAILY_METRICS: tuple[str, ...] = tuple(d.name for d in _DEFINITIONS if d.daily)
