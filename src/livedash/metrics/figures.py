"""Growth, trend and series figures of the historical tier, read from the roll-ups alone."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.metrics.history import OCCUPANCY, SERIES, Bucket, HistoryRecorder, utc

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


class HistoryFigures:
    """Growth and trend figures of every series, computed from the roll-ups alone."""

    def __init__(self, recorder: HistoryRecorder, zone: ZoneInfo) -> None:
        self._recorder = recorder
        self._zone = zone

    async def compute(
        self, connection: AsyncConnection, now: datetime, departments: Iterable[int]
    ) -> dict[tuple[str, int | None], Any]:
        """Every historical metric for the hospital (`None`) and each department id."""
        local = now.astimezone(self._zone)
        spans = self._spans(local)
        earliest = min(start for start, _ in spans.values())
        figures: dict[tuple[str, int | None], Any] = {}
        for department in [None, *departments]:
            for series in SERIES:
                buckets = await self._recorder.buckets(
                    connection, series, department, earliest, utc(local) + timedelta(hours=1)
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
        return {name: (utc(start), utc(end)) for name, (start, end) in spans.items()}

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
        first = self._recorder.hour_of(utc(start))
        if first is None:
            return []
        buckets = await self._recorder.buckets(connection, series, department, first, utc(end))
        starts = self._starts(first, utc(end), granularity)
        groups: list[list[Bucket]] = [[] for _ in starts]
        # Only hours with data are visited (an empty hour adds nothing to a total or an
        # average), each placed by bisection: a year by day costs its rows, not 8,784 steps
        # through the time zone on the event loop.
        for hour, bucket in buckets.items():
            groups[bisect.bisect_right(starts, hour) - 1].append(bucket)
        return [
            Point(
                start=key.replace(tzinfo=UTC),
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
        moment = first if granularity == "hour" else self._day_start(first)
        while moment < end:
            starts.append(moment)
            if granularity == "hour":
                following = moment + timedelta(hours=1)
                moment = self._recorder.hour_of(following) or following
            else:
                # 25 hours after a local midnight is always within the next local day.
                moment = self._day_start(moment + timedelta(hours=25))
        return starts

    def _day_start(self, hour: datetime) -> datetime:
        local = hour.replace(tzinfo=UTC).astimezone(self._zone)
        return utc(local.replace(hour=0, minute=0, second=0, microsecond=0))
