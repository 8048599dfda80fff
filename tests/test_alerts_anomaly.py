"""Anomaly rules: an hour of a series against the same local hour of the week in earlier weeks.

What a hospital sees: a spike in an ordinary week is flagged with the band it broke, ordinary
hours are not (beyond the rate k = 3 allows), too little history flags nothing, a series that
never varies needs `min_band`, and a week across a clock change still compares 14:00 with
14:00. The reader runs against a real migrated database, rows written as plain SQL.
"""

from __future__ import annotations

import math
import random
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.alerts.anomaly import (
    MIN_BAND,
    AnomalyRule,
    assess,
    completed_hour,
    evaluate,
    ewma_band,
    hour_of_week_history,
    mean_sigma_band,
    same_hour_of_week,
    trend_label,
)
from livedash.metrics.history import HistoryRecorder
from livedash.store.models import AlertSeverity
from tests.support.writers import Write

ZONE = ZoneInfo("Europe/Paris")  # clocks go forward on 2026-03-29 and back on 2026-10-25
HOURS_A_WEEK = 168
SPIKE = 2 * 24 + 11  # Wednesday 11:00, the busiest hour of the week


def _rule(**fields: Any) -> AnomalyRule:
    base: dict[str, Any] = {
        "name": "admissions-unusual",
        "series": "admissions",
        "severity": AlertSeverity.HIGH,
    }
    return AnomalyRule.model_validate({**base, **fields})


def _admissions_per_hour(day: int, hour: int) -> float:
    """A hospital's expected admissions: 4 an hour at night, 20 at 11:00, fewer at weekends."""
    level = 4 + 16 * math.exp(-(((hour - 11) / 4) ** 2))
    return level * (0.6 if day >= 5 else 1.0)


def _weeks(count: int, seed: int) -> list[list[float]]:
    """`count` weeks of hourly admissions, Monday 00:00 first: the daily shape with the
    scatter of counts (a standard deviation of the square root of the mean)."""
    rng = random.Random(seed)
    means = [_admissions_per_hour(day, hour) for day in range(7) for hour in range(24)]
    return [
        [float(max(0, round(rng.gauss(mean, math.sqrt(mean))))) for mean in means]
        for _ in range(count)
    ]


# -- the band ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mean_sigma", "ewma"])
def test_the_band_flags_an_injected_spike_and_not_the_normal_hours(method: str) -> None:
    *history, week = _weeks(9, seed=20260316)
    rule = _rule(method=method)  # k = 3, eight weeks
    normal = week[SPIKE]
    week[SPIKE] = normal + 40

    assessments = [evaluate(rule, week[i], [w[i] for w in history]) for i in range(HOURS_A_WEEK)]

    spike = assessments[SPIKE]
    assert spike.anomalous
    assert spike.enough_history
    assert spike.history == 8
    assert spike.observed == normal + 40
    assert spike.low is not None
    assert spike.high is not None
    assert spike.expected is not None
    assert spike.low < spike.expected < spike.high < spike.observed
    assert abs(spike.expected - _admissions_per_hour(2, 11)) < 4
    assert not evaluate(rule, normal, [w[SPIKE] for w in history]).anomalous
    # Ordinary hours: k = 3 over eight weeks leaves a normal hour outside its band about 2.5 %
    # of the time (Student's t with 7 degrees of freedom): about four hours a week.
    false_alarms = [i for i, a in enumerate(assessments) if a.anomalous and i != SPIKE]
    assert len(false_alarms) <= 0.05 * HOURS_A_WEEK
    # Each hour of the week has its own band: the night's is narrower than the late morning's.
    night = assessments[2 * 24 + 3]
    assert night.high is not None
    assert night.low is not None
    assert night.high - night.low < spike.high - spike.low


def test_with_too_little_history_nothing_is_anomalous() -> None:
    rule = _rule(min_history=4)
    short = evaluate(rule, 1000.0, [10.0, 11.0, 9.0])
    assert not short.anomalous
    assert not short.enough_history
    assert (short.expected, short.low, short.high, short.history) == (None, None, None, 3)
    assert not evaluate(rule, 1000.0, []).enough_history
    enough = evaluate(rule, 1000.0, [10.0, 11.0, 9.0, 10.0])
    assert enough.enough_history
    assert enough.anomalous


def test_an_hour_without_data_has_a_band_but_is_not_anomalous() -> None:
    assessment = evaluate(_rule(series="occupancy"), None, [0.8, 0.82, 0.79, 0.81])
    assert assessment.observed is None
    assert assessment.expected == pytest.approx(0.805)
    assert not assessment.anomalous


@pytest.mark.parametrize(
    ("direction", "flagged"),
    [("above", {20.0}), ("below", {0.0}), ("both", {0.0, 20.0})],
)
def test_a_rule_watches_one_side_of_its_band_or_both(direction: str, flagged: set[float]) -> None:
    history = [10.0, 11.0, 9.0, 10.0, 12.0, 8.0, 10.0, 10.0]  # 10 ± 3.6
    rule = _rule(direction=direction)
    assert {v for v in (0.0, 10.0, 20.0) if evaluate(rule, v, history).anomalous} == flagged


def test_mean_sigma_is_the_mean_plus_or_minus_k_sample_deviations() -> None:
    history = [10.0, 11.0, 9.0, 10.0, 12.0, 8.0, 10.0, 10.0]
    band = mean_sigma_band(history, 2.0, 0.0)
    sigma = statistics.stdev(history)
    assert (band.expected, band.low, band.high) == pytest.approx(
        (10, 10 - 2 * sigma, 10 + 2 * sigma)
    )


def test_ewma_weights_recent_weeks_most_and_follows_a_new_level() -> None:
    # Each week counts 0.7 times the week after it.
    assert ewma_band([10.0, 20.0], 3.0, 0.0).expected == pytest.approx((7 + 20) / 1.7)
    # Equal weights are the textbook prediction interval: mean ± k·s·√(1 + 1/n).
    history = [10.0, 11.0, 9.0, 10.0, 12.0, 8.0, 10.0, 10.0]
    flat = ewma_band(history, 3.0, 0.0, smoothing=0.0)
    half = 3 * statistics.stdev(history) * math.sqrt(1 + 1 / len(history))
    assert (flat.expected, flat.high - flat.expected) == pytest.approx((10, half))
    # A new clinic day doubled the level four weeks ago: the EWMA has mostly moved there, the
    # plain mean sits half-way, and a return to the old level is flagged by the EWMA only.
    shifted = [10.0, 11.0, 9.0, 10.0, 20.0, 21.0, 19.0, 20.0]
    ewma, plain = _rule(method="ewma", k=2.0), _rule(k=2.0)
    assert evaluate(ewma, 20.0, shifted).expected == pytest.approx(18.0, abs=0.05)
    assert evaluate(plain, 20.0, shifted).expected == 15.0
    assert evaluate(ewma, 6.0, shifted).anomalous
    assert not evaluate(plain, 6.0, shifted).anomalous


def test_a_series_that_never_varies_is_judged_against_min_band() -> None:
    never_varies = [3.0] * 6
    default = _rule()  # admissions: ± 2 admissions at least
    assert default.band_floor == MIN_BAND["admissions"] == 2.0
    assessment = evaluate(default, 4.0, never_varies)
    assert (assessment.low, assessment.high, assessment.anomalous) == (1.0, 5.0, False)
    assert not evaluate(default, 5.0, never_varies).anomalous  # on the edge: inside
    assert evaluate(default, 6.0, never_varies).anomalous
    assert evaluate(default, 0.0, never_varies).anomalous
    assert evaluate(_rule(min_band=0), 4.0, never_varies).anomalous  # any change at all
    assert evaluate(_rule(method="ewma"), 4.0, never_varies).high == 5.0
    occupancy = _rule(series="occupancy")  # a rate: ± 5 points
    assert not evaluate(occupancy, 0.84, [0.8] * 6).anomalous
    assert evaluate(occupancy, 0.9, [0.8] * 6).anomalous


@pytest.mark.parametrize(
    ("values", "label"),
    [
        ([], "stable"),
        ([5.0], "stable"),
        ([10.0, 10.0, 12.0, 12.0], "increasing"),  # + 20 %
        ([12.0, 12.0, 10.0, 10.0], "decreasing"),
        ([10.0, 10.0, 10.5, 10.5], "stable"),  # within 10 %
        ([100.0, 10.0, 10.0, 12.0, 12.0], "increasing"),  # an odd count leaves out the oldest
        ([0.0, 0.0, 1.0, 1.0], "increasing"),  # from nothing
        ([0.0, 0.0, 0.0, 0.0], "stable"),
    ],
)
def test_trend_labels(values: list[float], label: str) -> None:
    assert trend_label(values) == label


def test_an_assessment_labels_the_trend_of_its_hour_over_the_weeks() -> None:
    rising = [10.0, 10.0, 11.0, 11.0, 12.0, 13.0, 14.0]
    assert evaluate(_rule(), 15.0, rising).trend == "increasing"
    assert evaluate(_rule(), 15.0, rising[:2]).trend == "increasing"  # even without a band
    assert evaluate(_rule(), 10.0, [10.0] * 5).trend == "stable"


# -- the rule ------------------------------------------------------------------------------------


def test_a_rule_has_the_documented_defaults() -> None:
    rule = _rule()
    assert (rule.scope, rule.method, rule.k, rule.direction) == (
        "hospital",
        "mean_sigma",
        3,
        "both",
    )
    assert (rule.min_history, rule.history_weeks, rule.min_band) == (4, 8, None)
    assert rule.applies_to(None)
    assert not rule.applies_to("ED")
    every = _rule(scope="each_department")
    assert every.applies_to("ED")
    assert not every.applies_to(None)
    assert _rule(scope="ED").applies_to("ED")
    assert not _rule(scope="ED").applies_to("CARD")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"series": "beds_flying"}, "series", "unknown series 'beds_flying'"),
        ({"series": "admissions_trend"}, "series", "unknown series"),
        ({"scope": "the ED"}, "scope", "'the ED' is not a scope"),
        ({"method": "median"}, "method", "Input should be 'mean_sigma' or 'ewma'"),
        ({"k": 0}, "k", "greater than 0"),
        ({"k": "inf"}, "k", "finite number"),
        ({"min_history": 1}, "min_history", "greater than or equal to 2"),
        ({"history_weeks": 3}, "history_weeks", "must be at least min_history (4)"),
        ({"history_weeks": 53}, "history_weeks", "less than or equal to 52"),
        ({"direction": "up"}, "direction", "'above', 'below' or 'both'"),
        ({"severity": "warning"}, "severity", "'critical', 'high', 'medium' or 'low'"),
        ({"min_band": -1}, "min_band", "greater than or equal to 0"),
        ({"name": "Has Spaces"}, "name", "should match pattern"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field(
    change: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        _rule(**change)
    (problem,) = refused.value.errors()
    assert problem["loc"] == (field,)
    assert message in problem["msg"]


# -- the same hour of the week, across clock changes --------------------------------------------


def test_the_same_local_hour_is_compared_across_the_spring_change() -> None:
    monday = datetime(2026, 3, 30, 14, 37, tzinfo=ZONE)  # summer time: 12:00 UTC
    # The Mondays before were winter time: 14:00 in Paris was 13:00 UTC.
    assert same_hour_of_week(monday, 2, ZONE) == [
        datetime(2026, 3, 16, 13),
        datetime(2026, 3, 23, 13),
    ]


def test_the_same_local_hour_is_compared_across_the_autumn_change() -> None:
    monday = datetime(2026, 10, 26, 14, tzinfo=ZONE)  # winter time: 13:00 UTC
    assert same_hour_of_week(monday, 2, ZONE) == [
        datetime(2026, 10, 12, 12),
        datetime(2026, 10, 19, 12),
    ]


def test_a_local_hour_the_clocks_skipped_gives_that_week_no_value() -> None:
    sunday = datetime(2026, 4, 5, 2, tzinfo=ZONE)  # a week after 02:00-03:00 did not happen
    assert same_hour_of_week(sunday, 2, ZONE) == [datetime(2026, 3, 22, 1), None]


def test_a_local_hour_that_happened_twice_is_matched_occurrence_for_occurrence() -> None:
    first = datetime(2026, 10, 25, 2, tzinfo=ZONE)  # 02:00 summer time, 00:00 UTC
    second = first.replace(fold=1)  # 02:00 again, winter time, 01:00 UTC
    assert first.astimezone(UTC).hour == 0
    assert second.astimezone(UTC).hour == 1
    a_week_before = [datetime(2026, 10, 18, 0)]  # both are compared with the one 02:00
    assert same_hour_of_week(first, 1, ZONE) == a_week_before
    assert same_hour_of_week(second, 1, ZONE) == a_week_before
    # The week after compares with the first occurrence, as a normal hour's fold is 0 ...
    assert same_hour_of_week(datetime(2026, 11, 1, 2, tzinfo=ZONE), 1, ZONE) == [
        datetime(2026, 10, 25, 0)
    ]
    # ... and 52 weeks back, 2025-10-26 had two 02:00s too: each is matched with its own.
    assert same_hour_of_week(first, 52, ZONE)[0] == datetime(2025, 10, 26, 0)
    assert same_hour_of_week(second, 52, ZONE)[0] == datetime(2025, 10, 26, 1)


def test_the_last_completed_hour_follows_the_local_clock() -> None:
    assert completed_hour(datetime(2026, 3, 30, 14, 10, tzinfo=ZONE), ZONE) == datetime(
        2026, 3, 30, 11, tzinfo=UTC
    )
    # 03:10 summer time follows 01:59:59 winter time: the hour that ended is 01:00.
    assert completed_hour(datetime(2026, 3, 29, 3, 10, tzinfo=ZONE), ZONE) == datetime(
        2026, 3, 29, 0, tzinfo=UTC
    )
    # The second 02:00 follows the first.
    second = datetime(2026, 10, 25, 2, 10, tzinfo=ZONE).replace(fold=1)
    assert completed_hour(second, ZONE) == datetime(2026, 10, 25, 0, tzinfo=UTC)


def test_an_hour_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        same_hour_of_week(datetime(2026, 3, 30, 14), 2, ZONE)


# -- reading the roll-ups ------------------------------------------------------------------------


async def _rollup(
    writer: Write,
    series: str,
    department: int,
    hour: datetime,
    amount: int = 0,
    *,
    weighted: float = 0.0,
    seconds: float = 0.0,
) -> None:
    """One stored hour (`hour` aware), written as SQL; as SQLAlchemy stores it on SQLite."""
    stored = hour.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    await writer(
        "INSERT INTO metric_rollups (series, department_id, hour_start, amount, weighted, "
        "seconds, peak) VALUES (?, ?, ?, ?, ?, ?, NULL)",
        (series, department, stored, amount, weighted, seconds),
    )


async def _history(
    database: AsyncEngine,
    series: str,
    department: int | None,
    hour: datetime,
    weeks: int,
    recorder: HistoryRecorder | None = None,
) -> tuple[float | None, list[float]]:
    async with database.connect() as connection:
        return await hour_of_week_history(
            connection, series, department, hour, weeks, ZONE, unsaved=recorder
        )


MONDAY = datetime(2026, 12, 7, 9, tzinfo=ZONE)


@pytest.mark.both_backends
async def test_a_missing_count_hour_is_zero_but_weeks_before_the_first_rollup_are_no_data(
    database: AsyncEngine, writer: Write
) -> None:
    stored = {6: 4, 5: 7, 3: 5, 2: 6}  # weeks back: admissions; weeks 4 and 1 had none
    for back, amount in stored.items():
        await _rollup(writer, "admissions", 3, MONDAY - timedelta(weeks=back), amount)
    # Other departments, series and hours are not read.
    await _rollup(writer, "admissions", 0, MONDAY - timedelta(weeks=7), 90)
    await _rollup(writer, "discharges", 3, MONDAY - timedelta(weeks=1), 90)
    await _rollup(writer, "admissions", 3, MONDAY - timedelta(weeks=1, hours=1), 90)

    observed, history = await _history(database, "admissions", 3, MONDAY, 8)
    # Weeks 8 and 7 are before department 3's first admission roll-up: not weeks of zeros.
    assert history == [4.0, 7.0, 0.0, 5.0, 6.0, 0.0]
    assert observed == 0.0
    _, hospital = await _history(database, "admissions", None, MONDAY, 8)
    assert hospital == [90.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert await _history(database, "emergency_arrivals", 3, MONDAY, 8) == (None, [])


@pytest.mark.both_backends
async def test_a_missing_occupancy_hour_is_no_data(database: AsyncEngine, writer: Write) -> None:
    # Time-weighted: 0.9 for half an hour and 0.7 for the other half is 0.8.
    await _rollup(writer, "occupancy", 0, MONDAY - timedelta(weeks=3), weighted=2880, seconds=3600)
    await _rollup(writer, "occupancy", 0, MONDAY - timedelta(weeks=2), weighted=1350, seconds=1800)
    await _rollup(writer, "occupancy", 0, MONDAY - timedelta(weeks=1))  # a peak only: no time
    observed, history = await _history(database, "occupancy", None, MONDAY, 4)
    assert (observed, history) == (None, [0.8, 0.75])


@pytest.mark.both_backends
async def test_the_reader_compares_the_same_local_hour_across_clock_changes(
    database: AsyncEngine, writer: Write
) -> None:
    spring = datetime(2026, 3, 30, 14, tzinfo=ZONE)
    autumn = datetime(2026, 10, 26, 14, tzinfo=ZONE)
    for hour in (spring, autumn):
        await _rollup(writer, "admissions", 0, hour, 6)
        for back in (1, 2, 3):
            # Python subtracts from an aware time on its wall clock: 14:00 on an earlier Monday.
            await _rollup(writer, "admissions", 0, hour - timedelta(weeks=back), 5)
            # Exactly 168 hours before in UTC: 13:00 or 15:00 on the local clock then.
            exact = hour.astimezone(UTC) - timedelta(weeks=back)
            await _rollup(writer, "admissions", 0, exact, 50)
    assert await _history(database, "admissions", None, spring, 3) == (6.0, [5.0, 5.0, 5.0])
    assert await _history(database, "admissions", None, autumn, 3) == (6.0, [5.0, 5.0, 5.0])

    # A Sunday 02:00: the week it did not exist is left out, not counted as no admissions.
    sunday = datetime(2026, 4, 5, 2, tzinfo=ZONE)
    await _rollup(writer, "discharges", 0, sunday, 4)
    await _rollup(writer, "discharges", 0, datetime(2026, 3, 22, 2, tzinfo=ZONE), 4)
    await _rollup(writer, "discharges", 0, datetime(2026, 3, 29, 3, tzinfo=ZONE), 40)
    assert await _history(database, "discharges", None, sunday, 2) == (4.0, [4.0])
    # The Sunday after the two 02:00s is compared with the first of them, not their sum.
    first = datetime(2026, 10, 25, 2, tzinfo=ZONE)
    await _rollup(writer, "revenue", 0, first, 300)
    await _rollup(writer, "revenue", 0, first.replace(fold=1), 700)
    await _rollup(writer, "revenue", 0, datetime(2026, 11, 1, 2, tzinfo=ZONE), 500)
    assert await _history(database, "revenue", None, datetime(2026, 11, 1, 2, tzinfo=ZONE), 1) == (
        500.0,
        [300.0],
    )


@pytest.mark.both_backends
async def test_assess_flags_a_spike_read_from_the_database(
    database: AsyncEngine, writer: Write
) -> None:
    department = 2
    weekly = [10, 12, 9, 11, 10, 13, 9, 11]  # oldest first
    for back, amount in zip(range(8, 0, -1), weekly, strict=True):
        await _rollup(writer, "admissions", department, MONDAY - timedelta(weeks=back), amount)
    await _rollup(writer, "admissions", department, MONDAY, 14)
    rule = _rule(scope="each_department")

    async with database.connect() as connection:
        usual = await assess(connection, rule, department, MONDAY, ZONE)
        assert usual == evaluate(rule, 14.0, [float(a) for a in weekly])
        assert not usual.anomalous
        # Admissions of the hour the leader counted but has not stored yet count too.
        recorder = HistoryRecorder(ZONE)
        admitted = (MONDAY + timedelta(minutes=20)).astimezone(UTC).replace(tzinfo=None)
        for _ in range(16):
            recorder.load("admissions", {"department_id": department, "admitted_at": admitted})
        spike = await assess(connection, rule, department, MONDAY, ZONE, unsaved=recorder)
    assert spike.observed == 30.0
    assert spike.anomalous
    assert spike.expected == pytest.approx(10.625)
    assert spike.high is not None
    assert spike.high < 30
