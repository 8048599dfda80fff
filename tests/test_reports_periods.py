"""Report periods: what a period name or a from-to covers, across the days the clocks change."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from livedash.errors import InvalidPayload
from livedash.reports.document import ReportPeriod
from livedash.reports.periods import (
    MAX_PERIOD_DAYS,
    ScheduleKind,
    local_instants,
    local_start,
    previous_period,
    resolve_period,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SANTIAGO = ZoneInfo("America/Santiago")  # its clocks go forward at midnight
NOW = datetime(2026, 11, 4, 13, 5, tzinfo=UTC)  # Wednesday 14:05 in Berlin, ISO week 45


def hours(period: ReportPeriod) -> float:
    """The period's real length: aware datetimes of one zone subtract as wall-clock times."""
    return (period.end.astimezone(UTC) - period.start.astimezone(UTC)) / timedelta(hours=1)


def shown(period: ReportPeriod) -> tuple[str, str, str]:
    return period.start.isoformat(), period.end.isoformat(), period.label


def period(spec: str, zone: ZoneInfo = BERLIN, now: datetime = NOW) -> ReportPeriod:
    return resolve_period(spec, zone=zone, now=now)


@pytest.mark.parametrize(
    ("spec", "start", "end", "label"),
    [
        ("today", "2026-11-04T00:00:00+01:00", "2026-11-04T14:05:00+01:00",
         "2026-11-04 so far (until 2026-11-04 14:05 CET)"),
        ("yesterday", "2026-11-03T00:00:00+01:00", "2026-11-04T00:00:00+01:00", "2026-11-03"),
        ("this-week", "2026-11-02T00:00:00+01:00", "2026-11-04T14:05:00+01:00",
         "2026-W45 so far (until 2026-11-04 14:05 CET)"),
        ("last-week", "2026-10-26T00:00:00+01:00", "2026-11-02T00:00:00+01:00",
         "2026-W44 (2026-10-26 to 2026-11-01)"),
        ("this-month", "2026-11-01T00:00:00+01:00", "2026-11-04T14:05:00+01:00",
         "2026-11 so far (until 2026-11-04 14:05 CET)"),
        ("last-month", "2026-10-01T00:00:00+02:00", "2026-11-01T00:00:00+01:00", "2026-10"),
        ("last-7-days", "2026-10-28T00:00:00+01:00", "2026-11-04T00:00:00+01:00",
         "2026-10-28 to 2026-11-03"),
        ("last-30-days", "2026-10-05T00:00:00+02:00", "2026-11-04T00:00:00+01:00",
         "2026-10-05 to 2026-11-03"),
        ("day:2026-03-29", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", "2026-03-29"),
        ("week:2026-W13", "2026-03-23T00:00:00+01:00", "2026-03-30T00:00:00+02:00",
         "2026-W13 (2026-03-23 to 2026-03-29)"),
        ("week:2020-w53", "2020-12-28T00:00:00+01:00", "2021-01-04T00:00:00+01:00",
         "2020-W53 (2020-12-28 to 2021-01-03)"),
        ("month:2026-02", "2026-02-01T00:00:00+01:00", "2026-03-01T00:00:00+01:00", "2026-02"),
        ("  Last-Week ", "2026-10-26T00:00:00+01:00", "2026-11-02T00:00:00+01:00",
         "2026-W44 (2026-10-26 to 2026-11-01)"),
    ],
)  # fmt: skip
def test_a_named_period_covers_local_days_weeks_and_months(
    spec: str, start: str, end: str, label: str
) -> None:
    resolved = period(spec)
    assert shown(resolved) == (start, end, label)
    assert resolved.zone == "Europe/Berlin"


def test_last_month_in_january_is_the_previous_december() -> None:
    resolved = period("last-month", now=datetime(2026, 1, 15, 12, tzinfo=UTC))
    assert shown(resolved) == (
        "2025-12-01T00:00:00+01:00",
        "2026-01-01T00:00:00+01:00",
        "2025-12",
    )


@pytest.mark.parametrize(
    ("spec", "zone", "length"),
    [
        ("day:2026-03-29", BERLIN, 23),
        ("day:2026-10-25", BERLIN, 25),
        ("day:2026-03-28", BERLIN, 24),
        ("day:2026-03-08", NEW_YORK, 23),
        ("day:2026-11-01", NEW_YORK, 25),
        ("week:2026-W13", BERLIN, 7 * 24 - 1),
        ("week:2026-W43", BERLIN, 7 * 24 + 1),
        ("month:2026-03", BERLIN, 31 * 24 - 1),
        ("month:2026-10", BERLIN, 31 * 24 + 1),
        ("day:2026-09-06", SANTIAGO, 23),
    ],
)
def test_a_day_on_which_the_clocks_change_lasts_23_or_25_hours(
    spec: str, zone: ZoneInfo, length: int
) -> None:
    assert hours(period(spec, zone)) == length


def test_a_day_whose_midnight_the_clocks_skip_starts_when_the_gap_ends() -> None:
    resolved = period("day:2026-09-06", SANTIAGO)
    assert resolved.start.isoformat() == "2026-09-06T01:00:00-03:00"
    assert resolved.end.isoformat() == "2026-09-07T00:00:00-03:00"


def test_today_on_the_day_the_clocks_go_forward_is_cut_at_now() -> None:
    now = datetime(2026, 3, 29, 10, 0, tzinfo=UTC)
    resolved = period("today", now=now)
    assert shown(resolved) == (
        "2026-03-29T00:00:00+01:00",
        "2026-03-29T12:00:00+02:00",
        "2026-03-29 so far (until 2026-03-29 12:00 CEST)",
    )
    assert hours(resolved) == 11


def test_today_at_its_first_instant_is_an_empty_period() -> None:
    midnight = datetime(2026, 11, 3, 23, 0, tzinfo=UTC)
    resolved = period("today", now=midnight)
    assert resolved.start == resolved.end == midnight


def test_the_day_is_the_hospitals_not_utcs() -> None:
    # 23:30 UTC on 2026-11-03 is already 2026-11-04 in Berlin and still 2026-11-03 in New York.
    late = datetime(2026, 11, 3, 23, 30, tzinfo=UTC)
    assert period("yesterday", BERLIN, late).label == "2026-11-03"
    assert period("yesterday", NEW_YORK, late).label == "2026-11-02"


def explicit(start: date | datetime, end: date | datetime, zone: ZoneInfo = BERLIN) -> ReportPeriod:
    return resolve_period(None, start=start, end=end, zone=zone, now=NOW)


def test_from_and_to_dates_are_whole_local_days_to_excluded() -> None:
    resolved = explicit(date(2026, 10, 20), date(2026, 10, 27))
    assert shown(resolved) == (
        "2026-10-20T00:00:00+02:00",
        "2026-10-27T00:00:00+01:00",
        "2026-10-20 to 2026-10-26",
    )
    assert hours(resolved) == 7 * 24 + 1
    assert explicit(date(2026, 10, 20), date(2026, 10, 21)).label == "2026-10-20"


def test_from_and_to_datetimes_keep_their_zone_and_naive_ones_are_local() -> None:
    resolved = explicit(datetime(2026, 10, 20, 8, 0), datetime(2026, 10, 20, 8, 0, tzinfo=UTC))
    assert shown(resolved) == (
        "2026-10-20T08:00:00+02:00",
        "2026-10-20T10:00:00+02:00",
        "2026-10-20 08:00 CEST to 2026-10-20 10:00 CEST",
    )


def test_a_naive_time_that_happens_twice_is_its_first_occurrence() -> None:
    resolved = explicit(datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 4, 0))
    assert resolved.start.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert hours(resolved) == 2.5
    assert resolved.label == "2026-10-25 02:30 CEST to 2026-10-25 04:00 CET"


def test_aware_times_in_the_repeated_hour_are_told_apart() -> None:
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    resolved = explicit(first, first + timedelta(hours=1))
    assert resolved.label == "2026-10-25 02:30 CEST to 2026-10-25 02:30 CET"
    assert hours(resolved) == 1
    # The same wall-clock times the other way round: `to` comes first in real time.
    with pytest.raises(InvalidPayload, match="must come before"):
        explicit(first + timedelta(hours=1), first + timedelta(minutes=30))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spec": "fortnight"}, "unknown period 'fortnight': use today, yesterday, this-week, "
         "last-week, this-month, last-month, last-7-days, last-30-days, day:YYYY-MM-DD, "
         "week:YYYY-Www, month:YYYY-MM, or a from and a to"),
        ({"spec": "day:2026-02-30"}, "'day:2026-02-30' is not a valid period: expected "
         "day:YYYY-MM-DD, a calendar date such as day:2026-03-29"),
        ({"spec": "day:26-3-1"}, "'day:26-3-1' is not a valid period: expected day:YYYY-MM-DD"),
        ({"spec": "day:20260301"}, "'day:20260301' is not a valid period"),
        ({"spec": "week:2025-w53"}, "'week:2025-w53' is not a valid period: expected "
         "week:YYYY-Www, an ISO week such as week:2026-W13"),
        ({"spec": "week:2026-13"}, "'week:2026-13' is not a valid period: expected week:"),
        ({"spec": "month:2026-13"}, "'month:2026-13' is not a valid period: expected "
         "month:YYYY-MM, such as month:2026-03"),
        ({"spec": "day:1969-12-31"}, "day:1969-12-31 is outside the years a report can cover"),
        ({"spec": "day:2026-11-05"}, "the period starts in the future (2026-11-05 00:00 CET): "
         "a report covers what has already happened"),
        ({"spec": "month:9999-12"}, "month:9999-12 is outside the years a report can cover"),
        ({"spec": "today", "start": date(2026, 1, 1)},
         "give either a period name or a from and a to, not both"),
        ({"spec": None}, "a period is needed: today, yesterday,"),
        ({"spec": None, "start": date(2026, 1, 1)}, "a period is needed"),
        ({"spec": None, "start": date(2026, 3, 2), "end": date(2026, 3, 2)},
         "from (2026-03-02 00:00 CET) must come before to (2026-03-02 00:00 CET)"),
        ({"spec": None, "start": date(2026, 3, 2), "end": date(2026, 3, 1)},
         "from (2026-03-02 00:00 CET) must come before to (2026-03-01 00:00 CET)"),
        ({"spec": None, "start": date(2025, 1, 1), "end": date(2026, 3, 1)},
         "the period covers 424 days or more; a report covers at most 400 days"),
        ({"spec": None, "start": datetime(2026, 3, 29, 2, 30), "end": date(2026, 3, 30)},
         "from 2026-03-29 02:30 does not exist in Europe/Berlin: the clocks skip it when they "
         "go forward"),
        ({"spec": None, "start": date(2026, 3, 1), "end": "2026-03-02"},
         "to must be a date or a date and time"),
    ],
)  # fmt: skip
def test_a_period_that_cannot_be_served_is_refused_with_the_reason(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidPayload) as refused:
        resolve_period(zone=BERLIN, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert refused.value.message.startswith(message)


def test_a_period_of_exactly_the_longest_length_is_served_across_the_clock_changes() -> None:
    start = date(2025, 9, 1)
    resolved = explicit(start, start + timedelta(days=MAX_PERIOD_DAYS))
    assert resolved.label == "2025-09-01 to 2026-10-05"
    with pytest.raises(InvalidPayload, match="at most 400 days"):
        explicit(start, start + timedelta(days=MAX_PERIOD_DAYS + 1))


def test_a_period_may_end_after_now_but_not_start_after_it() -> None:
    assert period("day:2026-11-04").end.isoformat() == "2026-11-05T00:00:00+01:00"
    assert period("this-month", now=datetime(2026, 11, 1, 0, 0, 1, tzinfo=BERLIN)).label == (
        "2026-11 so far (until 2026-11-01 00:00 CET)"
    )


@pytest.mark.parametrize(
    ("kind", "run_at", "start", "end", "label"),
    [
        ("hourly", datetime(2026, 11, 4, 13, 20, tzinfo=UTC), "2026-11-04T13:00:00+01:00",
         "2026-11-04T14:00:00+01:00", "2026-11-04 13:00 CET to 2026-11-04 14:00 CET"),
        ("hourly", datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "2026-03-29T01:00:00+01:00",
         "2026-03-29T03:00:00+02:00", "2026-03-29 01:00 CET to 2026-03-29 03:00 CEST"),
        ("hourly", datetime(2026, 10, 25, 1, 10, tzinfo=UTC), "2026-10-25T02:00:00+02:00",
         "2026-10-25T02:00:00+01:00", "2026-10-25 02:00 CEST to 2026-10-25 02:00 CET"),
        ("daily", datetime(2026, 3, 29, 22, 30, tzinfo=UTC), "2026-03-29T00:00:00+01:00",
         "2026-03-30T00:00:00+02:00", "2026-03-29"),
        ("weekly", datetime(2026, 11, 2, 0, 0, tzinfo=BERLIN), "2026-10-26T00:00:00+01:00",
         "2026-11-02T00:00:00+01:00", "2026-W44 (2026-10-26 to 2026-11-01)"),
        ("weekly", datetime(2026, 11, 1, 23, 59, tzinfo=BERLIN), "2026-10-19T00:00:00+02:00",
         "2026-10-26T00:00:00+01:00", "2026-W43 (2026-10-19 to 2026-10-25)"),
        ("monthly", datetime(2026, 1, 1, 0, 0, tzinfo=BERLIN), "2025-12-01T00:00:00+01:00",
         "2026-01-01T00:00:00+01:00", "2025-12"),
    ],
)  # fmt: skip
def test_a_scheduled_run_reports_on_the_complete_period_before_its_own(
    kind: ScheduleKind, run_at: datetime, start: str, end: str, label: str
) -> None:
    assert shown(previous_period(kind, run_at, BERLIN)) == (start, end, label)


def test_every_previous_hour_is_one_real_hour_across_the_clock_changes() -> None:
    for start in (datetime(2026, 3, 28, 20, tzinfo=UTC), datetime(2026, 10, 24, 20, tzinfo=UTC)):
        ends = [
            previous_period("hourly", start + timedelta(minutes=30 * n), BERLIN).end
            for n in range(20)
        ]
        assert all(hours(previous_period("hourly", end, BERLIN)) == 1 for end in ends)
        assert sorted({end.astimezone(UTC) for end in ends}) == [
            datetime(2026, start.month, start.day, 20, tzinfo=UTC) + timedelta(hours=n)
            for n in range(10)
        ]


def test_local_times_map_to_none_one_or_two_instants() -> None:
    assert local_instants(datetime(2026, 3, 29, 2, 30), BERLIN) == ()
    assert local_instants(datetime(2026, 10, 25, 2, 30), BERLIN) == (
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
    )
    assert local_instants(datetime(2026, 7, 1, 12), BERLIN) == (
        datetime(2026, 7, 1, 10, tzinfo=UTC),
    )
    assert local_start(datetime(2026, 3, 29, 2, 30), BERLIN) == datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert local_start(datetime(2026, 3, 8, 2, 59), NEW_YORK) == datetime(2026, 3, 8, 7, tzinfo=UTC)
