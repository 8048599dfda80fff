"""Anomaly rules: an hour of a series against the same hour of the week in earlier weeks.

A hospital's activity has a weekly shape (Monday mornings are busy, Sunday nights quiet), so a
fixed threshold is either too loose at noon or too tight at night. An anomaly rule compares
the last completed hour of a roll-up series with that series at the same local hour of the
week in the previous `history_weeks` weeks, through a control chart:

- `mean_sigma`: the band is the mean of those weeks ± k sample standard deviations.
- `ewma`: the band is an exponentially weighted moving average of those weeks (smoothing
  `EWMA_SMOOTHING`: recent weeks count most) ± k exponentially weighted standard deviations,
  so a lasting change of level (a new ward, a new clinic day) becomes the norm within a few
  weeks instead of the eight that `mean_sigma` needs. The hour is compared with the average
  of earlier weeks, not smoothed itself: one odd hour is what an alert is about.

Either way the half-width is at least `min_band`, in the series' own units: a series that was
the same every week (no admissions at 03:00 on Sundays) would otherwise have a band of width
zero and flag a single admission. Fewer than `min_history` weeks with data is never anomalous.

"The same hour of the week" is the same wall-clock hour in the hospital's zone: 14:00 on a
Monday in summer is compared with 14:00 on the Mondays of winter, although their UTC hours
differ. A local hour that did not exist in an earlier week (skipped when clocks went forward)
gives that week no value; one that happened twice (when clocks went back) is taken at the
occurrence of the same fold as the hour assessed, normally the first, so every value compared
is one real hour.

An hour without a stored roll-up row means 0 for a count series (as `figures` reads it) and no
data for occupancy, whose value is time-weighted; hours before a scope's first stored roll-up
of a series are no data for either, so a new installation does not compare itself with weeks
of zeros that were never recorded. docs/alerts.md explains the method to a hospital's IT team.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, cast
from zoneinfo import ZoneInfo

from pydantic import Field, ValidationInfo, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.alerts.rules import ScopedRule
from livedash.changefeed.rows import parse_timestamp
from livedash.metrics.definitions import COUNT_SERIES, HISTORY_SERIES, OCCUPANCY
from livedash.metrics.figures import _trend, _value
from livedash.metrics.history import Bucket, HistoryRecorder, scope_row
from livedash.store.models import MetricRollup
from livedash.timeutil import naive_utc

Trend = Literal["increasing", "decreasing", "stable"]

EWMA_SMOOTHING = 0.3
"""λ of an `ewma` band: each week counts 1 - λ = 0.7 times as much as the week after it, so a
change of level has 70 % of its effect on the centre after three weeks. Smaller is closer to
`mean_sigma`; larger follows the last week or two and forgets what a normal week looks like."""

MAX_HISTORY_WEEKS = 52
"""A year of weeks: the most one assessment reads (one row per week, by primary key)."""

MIN_BAND: dict[str, float] = {
    **dict.fromkeys(COUNT_SERIES, 2.0),  # events in an hour
    "revenue": 10_000.0,  # cents: 100 in the hospital's currency
    OCCUPANCY: 0.05,  # a rate: 5 percentage points
}
"""The default floor of a band's half-width, by series, in the series' unit."""


class AnomalyRule(ScopedRule):
    """One anomaly rule (see the module's docstring)."""

    series: str
    method: Literal["mean_sigma", "ewma"] = "mean_sigma"
    k: float = Field(default=3.0, gt=0, allow_inf_nan=False)
    min_history: int = Field(default=4, ge=2)
    history_weeks: int = Field(default=8, le=MAX_HISTORY_WEEKS)
    direction: Literal["above", "below", "both"] = "both"
    min_band: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @field_validator("series")
    @classmethod
    def _known_series(cls, series: str) -> str:
        if series not in HISTORY_SERIES:
            raise ValueError(f"unknown series {series!r}; use one of {', '.join(HISTORY_SERIES)}")
        return series

    @field_validator("history_weeks")
    @classmethod
    def _covers_min_history(cls, weeks: int, info: ValidationInfo) -> int:
        # A field validator (not a model one) so that the error names `history_weeks`.
        least = info.data.get("min_history")
        if least is not None and weeks < least:
            raise ValueError(f"history_weeks ({weeks}) must be at least min_history ({least})")
        return weeks

    @property
    def band_floor(self) -> float:
        """The least half-width of the band: `min_band`, or the series' default."""
        return MIN_BAND[self.series] if self.min_band is None else self.min_band


@dataclass(frozen=True, slots=True)
class Band:
    """What an hour is expected to be: a centre and the range around it that is normal."""

    expected: float
    low: float
    high: float

    @classmethod
    def around(cls, centre: float, half_width: float) -> Band:
        return cls(centre, centre - half_width, centre + half_width)


@dataclass(frozen=True, slots=True)
class Assessment:
    """One hour of one series against its history; `expected`, `low` and `high` are None
    without enough history, `observed` is None when the hour has no data."""

    observed: float | None
    expected: float | None
    low: float | None
    high: float | None
    history: int  # the weeks compared with
    anomalous: bool
    enough_history: bool
    trend: Trend  # of this hour of the week, over the weeks compared and this one


def mean_sigma_band(history: Sequence[float], k: float, min_band: float) -> Band:
    """The mean of `history` ± k sample standard deviations (at least ± `min_band`)."""
    if not history:
        raise ValueError("a band needs at least one value")
    spread = statistics.stdev(history) if len(history) > 1 else 0.0
    return Band.around(statistics.fmean(history), max(k * spread, min_band))


def ewma_band(
    history: Sequence[float], k: float, min_band: float, smoothing: float = EWMA_SMOOTHING
) -> Band:
    """The exponentially weighted mean of `history` (oldest first) ± k weighted standard
    deviations (at least ± `min_band`): the forecast of the next week and its control limits."""
    if not history:
        raise ValueError("a band needs at least one value")
    weights = [(1 - smoothing) ** age for age in range(len(history) - 1, -1, -1)]
    total = sum(weights)
    squares = sum(weight * weight for weight in weights)
    centre = sum(w * x for w, x in zip(weights, history, strict=True)) / total
    if len(history) == 1:
        return Band.around(centre, min_band)
    # Unbiased for the few weeks the weights amount to (as n - 1 is for a plain deviation),
    # and widened by the uncertainty of the centre itself: eight weeks weigh like five, and
    # without both a normal hour would be flagged twice as often as `mean_sigma` flags one
    # with the same k.
    deviations = sum(w * (x - centre) ** 2 for w, x in zip(weights, history, strict=True))
    variance = deviations / (total - squares / total) * (1 + squares / total**2)
    return Band.around(centre, max(k * math.sqrt(variance), min_band))


def trend_label(values: Sequence[float]) -> Trend:
    """Increasing, decreasing or stable: the later half of `values` (oldest first) against
    the earlier half, by the dashboard's own `*_trend` rule (a change of more than 10 %)."""
    half = len(values) // 2
    if half == 0:
        return "stable"
    # An odd count leaves out the oldest value, so the two halves are equally long.
    earlier, later = values[-2 * half : -half], values[-half:]
    return cast(Trend, _trend(sum(later), sum(earlier)))


def evaluate(rule: AnomalyRule, observed: float | None, history: Sequence[float]) -> Assessment:
    """`observed` against `history`, the same hour in earlier weeks (oldest first)."""
    enough = len(history) >= rule.min_history
    trend = trend_label([*history, observed] if observed is not None else history)
    if not enough:
        return Assessment(observed, None, None, None, len(history), False, False, trend)
    chart = mean_sigma_band if rule.method == "mean_sigma" else ewma_band
    band = chart(history, rule.k, rule.band_floor)
    anomalous = observed is not None and (
        (rule.direction != "below" and observed > band.high)
        or (rule.direction != "above" and observed < band.low)
    )
    return Assessment(
        observed, band.expected, band.low, band.high, len(history), anomalous, True, trend
    )


def completed_hour(now: datetime, zone: ZoneInfo) -> datetime:
    """The start (aware, UTC) of the last local hour in `zone` that ended by `now` (aware)."""
    # A second before the current hour began, counted in UTC: on the local clock that second
    # may not exist (03:00 after the clocks went forward follows 01:59:59).
    current = _local_hour(now, zone).astimezone(UTC)
    return _local_hour(current - timedelta(seconds=1), zone).astimezone(UTC)


def same_hour_of_week(hour_start: datetime, weeks: int, zone: ZoneInfo) -> list[datetime | None]:
    """The starts (naive UTC, as stored) of the local hour of the week that holds `hour_start`
    (aware) in each of the `weeks` weeks before it, oldest first; None where that local hour
    did not exist (the clocks went forward through it)."""
    local = _local_hour(hour_start, zone)
    wall = local.replace(tzinfo=None)
    starts: list[datetime | None] = []
    for back in range(weeks, 0, -1):
        earlier = wall - timedelta(weeks=back)
        # The same fold: when the clocks went back, the occurrence the assessed hour had.
        moment = earlier.replace(tzinfo=zone, fold=local.fold).astimezone(UTC)
        exists = moment.astimezone(zone).replace(tzinfo=None) == earlier
        starts.append(moment.replace(tzinfo=None) if exists else None)
    return starts


async def hour_of_week_history(
    connection: AsyncConnection,
    series: str,
    department_id: int | None,
    hour_start: datetime,
    weeks: int,
    zone: ZoneInfo,
    *,
    unsaved: HistoryRecorder | None = None,
) -> tuple[float | None, list[float]]:
    """The value of the local hour holding `hour_start` (aware), and the values of the same
    hour of the week in up to `weeks` weeks before it that have data, oldest first.

    `department_id`: None (or 0) for the hospital. `unsaved`: the leader's recorder, whose
    deltas not yet stored count too, as in `figures.HistoryFigures`.
    """
    current = naive_utc(_local_hour(hour_start, zone))
    earlier = same_hour_of_week(hour_start, weeks, zone)
    wanted = {current, *(hour for hour in earlier if hour is not None)}

    async def read() -> tuple[dict[datetime, Bucket], datetime | None]:
        found = await _stored(connection, series, department_id, wanted)
        return found, await _first_hour(connection, series, department_id)

    found, first = await (read() if unsaved is None else unsaved.read_stored(connection, read))
    if unsaved is not None:
        pending = unsaved.unsaved(series, department_id, datetime.min, current + timedelta(hours=1))
        for hour, bucket in pending:
            first = hour if first is None else min(first, hour)
            if hour in wanted:
                found.setdefault(hour, Bucket()).add(bucket)

    def value(hour: datetime | None) -> float | None:
        if hour is None or first is None or hour < first:
            return None  # a week that does not have this hour, or before the series began
        bucket = found.get(hour)
        hourly = _value(series, [] if bucket is None else [bucket])
        return None if hourly is None else float(hourly)

    history = [v for v in map(value, earlier) if v is not None]
    return value(current), history


async def assess(
    connection: AsyncConnection,
    rule: AnomalyRule,
    department_id: int | None,
    hour_start: datetime,
    zone: ZoneInfo,
    *,
    unsaved: HistoryRecorder | None = None,
) -> Assessment:
    """The hour holding `hour_start` (aware) of `rule`'s series for a department (None: the
    hospital) against that hour of the week in the rule's `history_weeks` earlier weeks."""
    observed, history = await hour_of_week_history(
        connection,
        rule.series,
        department_id,
        hour_start,
        rule.history_weeks,
        zone,
        unsaved=unsaved,
    )
    return evaluate(rule, observed, history)


def _local_hour(moment: datetime, zone: ZoneInfo) -> datetime:
    """The start (aware, in `zone`) of the local hour holding `moment`, keeping its fold."""
    if moment.tzinfo is None:
        raise ValueError("an anomaly rule's hour must be a timezone-aware datetime")
    return moment.astimezone(zone).replace(minute=0, second=0, microsecond=0)


async def _stored(
    connection: AsyncConnection, series: str, department_id: int | None, hours: set[datetime]
) -> dict[datetime, Bucket]:
    """The stored buckets of a series at exactly `hours` (naive UTC): one indexed query for
    the few hours a week apart, where `figures.stored_buckets` reads a whole span."""
    table = MetricRollup.__table__
    result = await connection.execute(
        select(
            table.c.hour_start, table.c.amount, table.c.weighted, table.c.seconds, table.c.peak
        ).where(
            table.c.series == series,
            table.c.department_id == scope_row(department_id),
            table.c.hour_start.in_(sorted(hours)),
        )
    )
    found: dict[datetime, Bucket] = {}
    for hour, amount, weighted, seconds, peak in result.all():
        stored = _stored_hour(hour)
        found[stored] = Bucket(int(amount), float(weighted), float(seconds), peak)
    return found


async def _first_hour(
    connection: AsyncConnection, series: str, department_id: int | None
) -> datetime | None:
    """The first hour (naive UTC) of a scope's stored roll-ups of a series: when its data
    begins."""
    table = MetricRollup.__table__
    first = await connection.scalar(
        select(func.min(table.c.hour_start)).where(
            table.c.series == series, table.c.department_id == scope_row(department_id)
        )
    )
    return None if first is None else _stored_hour(first)


def _stored_hour(value: object) -> datetime:
    stored = parse_timestamp(value)  # SQLite gives the hour back as text
    if stored is None:
        raise ValueError(f"bad hour_start {value!r}")
    return stored
