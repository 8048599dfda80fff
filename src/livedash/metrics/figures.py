"""The historical tier's read side: stored roll-ups, and the growth, trend and series
figures computed from them alone (never from the raw tables).

A leader passes its `HistoryRecorder`, so that deltas not yet stored count too; a follower
reads what is stored and needs no recorder.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.changefeed.rows import parse_timestamp
from livedash.metrics.definitions import HISTORY_SERIES, OCCUPANCY
from livedash.metrics.history import Bucket, HistoryRecorder, scope_row
from livedash.store.models import MetricRollup
from livedash.timeutil import as_aware, local_hour, local_midnight, naive_utc

TREND_HOURS = 6
TREND_THRESHOLD = 0.1


@dataclass(frozen=True, slots=True)
class Point:
    """One hour or day of a series: a total, or for occupancy the average and the peak."""

    start: datetime
    value: int | float | None
    peak: float | None = None


def _value(series: str, buckets: Iterable[Bucket]) -> int | float | None:
    total = Bucket()
    for bucket in buckets:
        total.add(bucket)
    if series != OCCUPANCY:
        return total.amount
    return round(total.weighted / total.seconds, 4) if total.seconds else None


def _total(
    series: str, buckets: dict[datetime, Bucket], span: tuple[datetime, datetime]
) -> int | float | None:
    start, end = span
    return _value(series, (bucket for hour, bucket in buckets.items() if start <= hour < end))


def _growth(current: int | float | None, previous: int | float | None) -> float | None:
    if current is None or not previous:
        return None
    return round((current - previous) / previous, 4)


def _trend(current: int | float | None, previous: int | float | None) -> str:
    if current is None or previous is None or current == previous:
        return "stable"
    change = (current - previous) / previous if previous else 1.0
    if change > TREND_THRESHOLD:
        return "increasing"
    if change < -TREND_THRESHOLD:
        return "decreasing"
    return "stable"


async def stored_buckets(
    connection: AsyncConnection, series: str, department: int | None, start: datetime, end: datetime
) -> dict[datetime, Bucket]:
    """The stored buckets of a series in [start, end) (naive UTC), by hour start."""
    table = MetricRollup.__table__
    result = await connection.execute(
        select(
            table.c.hour_start, table.c.amount, table.c.weighted, table.c.seconds, table.c.peak
        ).where(
            table.c.series == series,
            table.c.department_id == scope_row(department),
            table.c.hour_start >= start,
            table.c.hour_start < end,
        )
    )
    found: dict[datetime, Bucket] = {}
    for hour, amount, weighted, seconds, peak in result.all():
        stored = parse_timestamp(hour)  # SQLite gives the hour back as text
        if stored is None:
            raise ValueError(f"bad hour_start {hour!r}")
        found[stored] = Bucket(int(amount), float(weighted), float(seconds), peak)
    return found


class HistoryFigures:
    """Growth and trend figures of every series, computed from the roll-ups alone."""

    def __init__(self, unsaved: HistoryRecorder | None, zone: ZoneInfo) -> None:
        """`unsaved`: the leader's recorder, whose deltas not yet stored are read too."""
        self._unsaved = unsaved
        self._zone = zone

    async def _buckets(
        self,
        connection: AsyncConnection,
        series: str,
        department: int | None,
        start: datetime,
        end: datetime,
    ) -> dict[datetime, Bucket]:
        """Stored buckets of [start, end) plus what is not yet stored, by hour start."""
        if self._unsaved is None:
            return await stored_buckets(connection, series, department, start, end)
        found = await self._unsaved.read_stored(
            connection, lambda: stored_buckets(connection, series, department, start, end)
        )
        for hour, bucket in self._unsaved.unsaved(series, department, start, end):
            found.setdefault(hour, Bucket()).add(bucket)
        return found

    async def compute(
        self, connection: AsyncConnection, now: datetime, departments: Iterable[int]
    ) -> dict[tuple[str, int | None], Any]:
        """Every historical metric for the hospital (`None`) and each department id."""
        local = now.astimezone(self._zone)
        spans = self._spans(local)
        earliest = min(start for start, _ in spans.values())
        figures: dict[tuple[str, int | None], Any] = {}
        for department in [None, *departments]:
            for series in HISTORY_SERIES:
                buckets = await self._buckets(
                    connection, series, department, earliest, naive_utc(local) + timedelta(hours=1)
                )
                totals = {name: _total(series, buckets, span) for name, span in spans.items()}
                for period in ("day", "week", "month"):
                    figures[f"{series}_growth_{period}", department] = _growth(
                        totals[period], totals[f"previous_{period}"]
                    )
                figures[f"{series}_trend", department] = _trend(
                    totals["trend"], totals["previous_trend"]
                )
        return figures

    def _spans(self, local: datetime) -> dict[str, tuple[datetime, datetime]]:
        """UTC spans: each period so far, and the same span of the period before."""
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        week = midnight - timedelta(days=midnight.weekday())
        month = midnight.replace(day=1)
        previous_month = (month - timedelta(days=1)).replace(day=1)
        month_offset = local - month
        previous_month_end = min(previous_month + month_offset, month)
        hour = local.replace(minute=0, second=0, microsecond=0)
        trend_start = hour - timedelta(hours=TREND_HOURS)
        spans = {
            "day": (midnight, local),
            "previous_day": (midnight - timedelta(days=1), local - timedelta(days=1)),
            "week": (week, local),
            "previous_week": (week - timedelta(days=7), local - timedelta(days=7)),
            "month": (month, local),
            "previous_month": (previous_month, previous_month_end),
            "trend": (trend_start, hour),
            "previous_trend": (trend_start - timedelta(hours=TREND_HOURS), trend_start),
        }
        return {name: (naive_utc(start), naive_utc(end)) for name, (start, end) in spans.items()}

    async def series(
        self,
        connection: AsyncConnection,
        series: str,
        department: int | None,
        start: datetime,
        end: datetime,
        granularity: str,
    ) -> list[Point]:
        """A series from `start` to `end` (aware), by hour or by hospital-time day."""
        first = local_hour(start, self._zone)
        buckets = await self._buckets(connection, series, department, first, naive_utc(end))
        starts = self._starts(first, naive_utc(end), granularity)
        groups: list[list[Bucket]] = [[] for _ in starts]
        # Only hours with data are visited (an empty hour adds nothing to a total or an
        # average), each placed by bisection: a year by day costs its rows, not 8,784 steps
        # through the time zone on the event loop.
        for hour, bucket in buckets.items():
            groups[bisect.bisect_right(starts, hour) - 1].append(bucket)
        return [
            Point(
                start=as_aware(key),
                value=_value(series, group),
                peak=max((b.peak for b in group if b.peak is not None), default=None)
                if series == OCCUPANCY
                else None,
            )
            for key, group in zip(starts, groups, strict=True)
        ]

    def _starts(self, first: datetime, end: datetime, granularity: str) -> list[datetime]:
        """The (naive UTC) starts of the hours or hospital days from `first` up to `end`."""
        starts: list[datetime] = []
        moment = first if granularity == "hour" else local_midnight(first, self._zone)
        while moment < end:
            starts.append(moment)
            if granularity == "hour":
                moment = local_hour(moment + timedelta(hours=1), self._zone)
            else:
                # 25 hours after a local midnight is always within the next local day.
                moment = local_midnight(moment + timedelta(hours=25), self._zone)
        return starts
