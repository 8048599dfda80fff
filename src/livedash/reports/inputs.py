"""What a report is built from: the dashboard's own roll-ups and tables, and its clock.

Reports read the same roll-ups as `request_historical` (through the metric view, so the
leader's deltas not yet stored count too) and the same tables as the metric engine, so a
report for today equals what the dashboard shows now.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.cluster.view import MetricView
from livedash.metrics.figures import Point
from livedash.reports.document import ReportPeriod
from livedash.reports.periods import local_start
from livedash.store.models import Department
from livedash.timeutil import as_aware, naive_utc


@dataclass(frozen=True, slots=True)
class Scope:
    """The department a report covers (its code and id), or the hospital (all None)."""

    code: str | None = None
    ident: int | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ReportInputs:
    """The sources every report reads."""

    database: AsyncEngine
    view: MetricView
    zone: ZoneInfo
    feed_position: Callable[[], Awaitable[int]]


class Window:
    """A report's period as the schema stores time (naive UTC), and its local days.

    Reports place every row they read (100,000s at 3,000 beds): the bounds and each local
    midnight are computed once, and a row's day is found by bisection, not through the zone.
    """

    __slots__ = ("_day_starts", "_days", "end", "period", "start", "zone")

    def __init__(self, period: ReportPeriod, zone: ZoneInfo) -> None:
        self.period = period
        self.zone = zone
        self.start = naive_utc(period.start)
        self.end = naive_utc(period.end)
        first = period.start.astimezone(zone).date()
        last = (period.end - timedelta(microseconds=1)).astimezone(zone).date()
        self._days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        # Each day's first instant, and the next day's: a moment past the last is not placed
        # by bisection.
        self._day_starts = [
            naive_utc(local_start(datetime.combine(day, time()), zone))
            for day in [*self._days, last + timedelta(days=1)]
        ]

    def days(self) -> list[date]:
        """Every local date the period touches, in order."""
        return list(self._days)

    def whole_days(self) -> Window:
        """This window, its end moved to the local midnight after its last day."""
        end = as_aware(self._day_starts[-1])
        if end <= self.period.end.astimezone(UTC):
            return self
        return Window(replace(self.period, end=end.astimezone(self.zone)), self.zone)

    def day_of(self, moment: datetime) -> date:
        """The local date of a stored moment (naive: UTC)."""
        utc = naive_utc(moment)
        index = bisect.bisect_right(self._day_starts, utc) - 1
        if 0 <= index < len(self._days):
            return self._days[index]
        return as_aware(utc).astimezone(self.zone).date()  # past the period's last day

    def holds(self, moment: datetime | None) -> bool:
        """Whether a stored moment (naive: UTC) lies in the period."""
        return moment is not None and self.start <= naive_utc(moment) < self.end


async def departments(inputs: ReportInputs) -> list[Scope]:
    """Every department, by code."""
    async with inputs.database.connect() as connection:
        rows = await connection.execute(
            select(Department.id, Department.code, Department.name).order_by(Department.code)
        )
        return [Scope(code, ident, name) for ident, code, name in rows]


async def series(
    inputs: ReportInputs, name: str, scope: Scope, window: Window, granularity: str
) -> list[Point]:
    """A roll-up series over the report's period, by `hour` or local `day`, as of now: a
    cached one may predate the feed position the report records."""
    return await inputs.view.history(
        name, scope.code, window.period.start, window.period.end, granularity, fresh=True
    )


def by_day(points: list[Point], window: Window) -> dict[date, Point]:
    return {point.start.astimezone(window.zone).date(): point for point in points}


def cents(amount: int | float | None) -> str:
    """Cents as the currency units a report prints, exact ("1234.50")."""
    return f"{Decimal(int(amount or 0)).scaleb(-2):.2f}"


def ratio(part: float, whole: float, places: int = 4) -> float | None:
    return round(part / whole, places) if whole else None


def mean(values: list[float], places: int = 2) -> float | None:
    return round(sum(values) / len(values), places) if values else None


def hours_between(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0) / 3600
