"""Report schedules: which expressions are accepted, and when they run on the hospital's clock,
across the days the clocks change."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from livedash.errors import InvalidPayload
from livedash.reports.cron import (
    MAX_RUNS,
    next_run,
    runs_between,
    schedule_kind,
    validate_cron,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# 2026's clock changes (UTC): Berlin and New York, and the southern zones that change at
# midnight (Santiago) or by half an hour (Lord Howe).
CHANGES = [
    datetime(2026, 3, 29, 1, tzinfo=UTC),
    datetime(2026, 10, 25, 1, tzinfo=UTC),
    datetime(2026, 3, 8, 7, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
    datetime(2026, 4, 5, 3, tzinfo=UTC),
    datetime(2026, 9, 6, 4, tzinfo=UTC),
    datetime(2026, 4, 4, 15, tzinfo=UTC),
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),
]
ZONES = [
    BERLIN,
    NEW_YORK,
    ZoneInfo("America/Santiago"),
    ZoneInfo("Australia/Lord_Howe"),
    ZoneInfo("Asia/Kolkata"),
]


def local(moments: list[datetime], zone: ZoneInfo) -> list[str]:
    return [f"{moment.astimezone(zone):%m-%d %H:%M %Z}" for moment in moments]


def runs(expression: str, after: datetime, zone: ZoneInfo, n: int) -> list[datetime]:
    found = []
    for _ in range(n):
        after = next_run(expression, after, zone)
        found.append(after)
    return found


@pytest.mark.parametrize(
    ("expression", "normal"),
    [
        ("  0  6 * *  MON ", "0 6 * * mon"),
        ("@DAILY", "@daily"),
        (" @hourly", "@hourly"),
        ("*/15 22-2 1,15 JAN-MAR 1-5", "*/15 22-2 1,15 jan-mar 1-5"),
        ("0 6 L * *", "0 6 l * *"),
        ("0 6 * * 1#1", "0 6 * * 1#1"),
        ("0 0 29 2 *", "0 0 29 2 *"),
    ],
)
def test_an_accepted_schedule_comes_back_in_its_normal_form(expression: str, normal: str) -> None:
    assert validate_cron(expression) == normal


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("@yearly", "unknown preset '@yearly': use @hourly, @daily, @weekly, @monthly"),
        ("0 6 * * * *", "'0 6 * * * *' has 6 fields: a seconds field is not supported, "
         "schedules run on whole minutes (minute hour day-of-month month day-of-week)"),
        ("0 6 * *", "'0 6 * *' has 4 fields: a schedule is a preset (@hourly, @daily, @weekly, "
         "@monthly) or 5 fields (minute hour day-of-month month day-of-week)"),
        ("0 6 * * * * 2026", "'0 6 * * * * 2026' has 7 fields"),
        ("", "'' has 0 fields"),
        ("61 * * * *", "the minute field '61' is out of range: it takes 0-59"),
        ("1-61 * * * *", "the minute field '1-61' is out of range: it takes 0-59"),
        ("0 24 * * *", "the hour field '24' is out of range: it takes 0-23"),
        ("0 0 0 * *", "the day-of-month field '0' is out of range: it takes 1-31"),
        ("0 0 * 13 *", "the month field '13' is out of range: it takes 1-12 or jan-dec"),
        ("0 0 * * 8", "the day-of-week field '8' is out of range: it takes 0-7 or sun-sat"),
        ("x * * * *", "the minute field 'x' is not valid: use *, a value (0-59), a range (1-5), "
         "a list (1,3) or a step (*/15)"),
        ("*/0 * * * *", "the minute field '*/0' is not valid"),
        ("0 6 * * 1#6", "the day-of-week field '1#6' is not valid"),
        ("0 6 * foo *", "the month field 'foo' is not valid"),
        ("H * * * *", "the minute field 'h': hashed (H) and random (R) values are not supported"),
        ("0 R * * *", "the hour field 'r': hashed (H) and random (R) values are not supported"),
        ("0 0 31 2 *", "'0 0 31 2 *' never runs: no date matches it"),
        ("0 0 30 2 *", "'0 0 30 2 *' never runs"),
        ("0 0 31 4,6,9,11 *", "'0 0 31 4,6,9,11 *' never runs"),
    ],
)  # fmt: skip
def test_a_schedule_that_cannot_run_is_refused_with_the_reason(
    expression: str, message: str
) -> None:
    with pytest.raises(InvalidPayload) as refused:
        validate_cron(expression)
    assert refused.value.message.startswith(message)
    with pytest.raises(InvalidPayload):
        next_run(expression, datetime(2026, 1, 1, tzinfo=UTC), BERLIN)


def test_the_next_run_is_strictly_after_and_in_utc() -> None:
    at_six = datetime(2026, 7, 1, 4, tzinfo=UTC)  # 06:00 in Berlin
    assert next_run("0 6 * * *", at_six - timedelta(seconds=1), BERLIN) == at_six
    assert next_run("0 6 * * *", at_six, BERLIN) == at_six + timedelta(days=1)
    assert next_run("0 6 * * *", at_six.astimezone(BERLIN), BERLIN).tzinfo is UTC
    # Naive moments are UTC, as the schema stores them.
    assert next_run("0 6 * * *", datetime(2026, 7, 1, 3, 59), BERLIN) == at_six


def test_presets_run_when_their_period_has_just_ended() -> None:
    after = datetime(2026, 7, 15, 10, 30, tzinfo=UTC)  # a Wednesday
    assert local([next_run(p, after, BERLIN) for p in ("@hourly", "@daily", "@weekly", "@monthly")],
                 BERLIN) == ["07-15 13:00 CEST", "07-16 00:00 CEST", "07-20 00:00 CEST",
                             "08-01 00:00 CEST"]  # fmt: skip


def test_the_leap_day_schedule_waits_for_the_next_leap_year() -> None:
    assert next_run("0 0 29 2 *", datetime(2026, 1, 1, tzinfo=UTC), BERLIN) == datetime(
        2028, 2, 28, 23, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("expression", "after", "zone", "expected"),
    [
        # A time the clocks skip runs when the gap ends.
        ("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), BERLIN,
         ["03-29 03:00 CEST", "03-30 02:30 CEST"]),
        ("30 2 * * *", datetime(2026, 3, 7, 12, tzinfo=UTC), NEW_YORK,
         ["03-08 03:00 EDT", "03-09 02:30 EDT"]),
        ("*/15 2 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), BERLIN,
         ["03-29 03:00 CEST", "03-30 02:00 CEST"]),
        # A time that happens twice runs at its first occurrence only.
        ("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC), BERLIN,
         ["10-25 02:30 CEST", "10-26 02:30 CET"]),
        ("30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=UTC), NEW_YORK,
         ["11-01 01:30 EDT", "11-02 01:30 EST"]),
        ("*/20 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC), BERLIN,
         ["10-25 02:00 CEST", "10-25 02:20 CEST", "10-25 02:40 CEST", "10-26 02:00 CET"]),
        # From inside the second pass, the repeated time has already run.
        ("45 2 * * *", datetime(2026, 10, 25, 1, 30, tzinfo=UTC), BERLIN, ["10-26 02:45 CET"]),
        # An hourly schedule follows real hours: no skipped hour runs, a repeated one runs twice.
        ("0 * * * *", datetime(2026, 3, 28, 23, 30, tzinfo=UTC), BERLIN,
         ["03-29 01:00 CET", "03-29 03:00 CEST", "03-29 04:00 CEST"]),
        ("30 * * * *", datetime(2026, 3, 29, 0, 0, tzinfo=UTC), BERLIN,
         ["03-29 01:30 CET", "03-29 03:30 CEST"]),
        ("30 * * * *", datetime(2026, 10, 24, 23, 0, tzinfo=UTC), BERLIN,
         ["10-25 01:30 CEST", "10-25 02:30 CEST", "10-25 02:30 CET", "10-25 03:30 CET"]),
        ("0 * * * *", datetime(2026, 11, 1, 4, 30, tzinfo=UTC), NEW_YORK,
         ["11-01 01:00 EDT", "11-01 01:00 EST", "11-01 02:00 EST"]),
        # From inside the first pass of the repeated hour, the second pass is still to come.
        ("*/20 * * * *", datetime(2026, 10, 25, 0, 30, tzinfo=UTC), BERLIN,
         ["10-25 02:40 CEST", "10-25 02:00 CET", "10-25 02:20 CET", "10-25 02:40 CET",
          "10-25 03:00 CET"]),
        # A daily run at midnight in a zone whose clocks skip midnight.
        ("@daily", datetime(2026, 9, 5, 12, tzinfo=UTC), ZoneInfo("America/Santiago"),
         ["09-06 01:00 -03", "09-07 00:00 -03"]),
    ],
)  # fmt: skip
def test_runs_on_the_days_the_clocks_change(
    expression: str, after: datetime, zone: ZoneInfo, expected: list[str]
) -> None:
    assert local(runs(expression, after, zone, len(expected)), zone) == expected


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
@pytest.mark.parametrize("expression", ["@hourly", "30 * * * *", "59 * * * *"])
def test_an_hourly_schedule_runs_once_in_every_real_hour_across_both_changes(
    zone: ZoneInfo, expression: str
) -> None:
    for change in CHANGES[:4]:
        found = runs(expression, change - timedelta(hours=6), zone, 12)
        assert {b - a for a, b in itertools.pairwise(found)} == {timedelta(hours=1)}


def read_off_the_clock(
    expression: str, start: datetime, end: datetime, zone: ZoneInfo
) -> list[datetime]:
    """The runs in (start, end], found by reading the local clock minute by minute."""
    every_hour = expression.split()[1] == "*"
    found = []
    minute = timedelta(minutes=1)
    moment = start.replace(second=0, microsecond=0) + minute
    while moment <= end:
        shown, before = moment.astimezone(zone), (moment - minute).astimezone(zone)
        wall = shown.replace(tzinfo=None)
        matches = croniter.match(expression, wall)
        if every_hour:
            runs_now = matches
        else:
            skipped, wall_before = [], before.replace(tzinfo=None) + minute
            while wall_before < wall:  # the wall-clock times the clocks jumped over
                skipped.append(wall_before)
                wall_before += minute
            runs_now = (matches and shown.fold == 0) or any(
                croniter.match(expression, w) for w in skipped
            )
        if runs_now:
            found.append(moment)
        moment += minute
    return found


@pytest.mark.parametrize(
    "expression",
    ["30 2 * * *", "*/15 1-3 * * *", "0 0 * * *", "45 23 * * *", "*/20 * * * *"],
)
@pytest.mark.parametrize(
    ("zone", "change"),
    [
        (BERLIN, CHANGES[0]),
        (BERLIN, CHANGES[1]),
        (NEW_YORK, CHANGES[2]),
        (NEW_YORK, CHANGES[3]),
        (ZoneInfo("America/Santiago"), CHANGES[4]),
        (ZoneInfo("America/Santiago"), CHANGES[5]),
        (ZoneInfo("Australia/Lord_Howe"), CHANGES[6]),
        (ZoneInfo("Australia/Lord_Howe"), CHANGES[7]),
    ],
)
def test_the_runs_are_those_the_rules_give_minute_by_minute(
    expression: str, zone: ZoneInfo, change: datetime
) -> None:
    start, end = change - timedelta(hours=3), change + timedelta(hours=3)
    assert runs_between(expression, start, end, zone) == read_off_the_clock(
        expression, start, end, zone
    )


def test_runs_between_excludes_its_start_and_includes_its_end() -> None:
    start = datetime(2026, 7, 1, 4, tzinfo=UTC)  # 06:00 in Berlin
    found = runs_between("0 6 * * *", start, start + timedelta(days=3), BERLIN)
    assert found == [start + timedelta(days=n) for n in (1, 2, 3)]
    assert runs_between("0 6 * * *", start, start, BERLIN) == []
    assert runs_between("0 6 * * *", start, start - timedelta(days=3), BERLIN) == []


def test_runs_between_keeps_the_latest_runs_of_a_long_outage() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC)
    found = runs_between("* * * * *", start, end, BERLIN)
    assert len(found) == MAX_RUNS
    assert found[-1] == datetime(2026, 3, 1, tzinfo=UTC)
    assert found[0] == found[-1] - timedelta(minutes=MAX_RUNS - 1)
    assert runs_between("@daily", start, end, BERLIN, limit=3) == [
        datetime(2026, 2, 26, 23, tzinfo=UTC),
        datetime(2026, 2, 27, 23, tzinfo=UTC),
        datetime(2026, 2, 28, 23, tzinfo=UTC),  # 2026-03-01 00:00 in Berlin
    ]


@pytest.mark.parametrize(
    ("expression", "kind"),
    [
        ("@hourly", "hourly"),
        ("@daily", "daily"),
        ("@weekly", "weekly"),
        ("@monthly", "monthly"),
        ("15 * * * *", "hourly"),
        ("*/15 * * * *", "hourly"),
        ("0 6,18 * * *", "hourly"),
        ("* 6 * * *", "hourly"),
        ("0 6 * * *", "daily"),
        ("0 6 * * 1-5", "daily"),
        ("0 6 1,15 * *", "daily"),
        ("0 6 1 * 1", "daily"),
        ("0 6 * * 1#1,1#3", "daily"),
        ("0 6 * 1 *", "daily"),
        ("0 6 * * 1", "weekly"),
        ("0 6 * * sun", "weekly"),
        ("0 6 * * 7", "weekly"),
        ("0 6 1 * *", "monthly"),
        ("0 6 L * *", "monthly"),
        ("0 6 15W * *", "monthly"),
        ("0 6 * * 1#1", "monthly"),
        ("0 6 * * L5", "monthly"),
        ("0 6 1 1 *", "monthly"),
    ],
)
def test_the_kind_of_a_schedule_is_the_coarsest_period_it_runs_at_most_once_in(
    expression: str, kind: str
) -> None:
    assert schedule_kind(expression) == kind


def runs_at_all(expression: str) -> bool:
    try:
        validate_cron(expression)
    except InvalidPayload:  # `15W` on Sundays, say: `W` and `#` restrict the other day field
        return False
    return True


EXPRESSIONS = st.builds(
    "{} {} {} {} {}".format,
    st.sampled_from(["0", "30", "59", "*/15", "5,35", "*"]),
    st.sampled_from(["*", "0", "1", "2", "23", "1-3", "*/2", "2,14"]),
    st.sampled_from(["*", "*", "1", "l", "15w", "1,15"]),
    st.sampled_from(["*", "*", "3,4,9,10,11", "10"]),
    st.sampled_from(["*", "*", "0", "1-5", "1#1"]),
).filter(runs_at_all)
AROUND_CHANGES = st.builds(
    lambda change, seconds: change + timedelta(seconds=seconds),
    st.sampled_from(CHANGES),
    st.integers(-36 * 3600, 36 * 3600),
)


@settings(deadline=None)
@given(EXPRESSIONS, AROUND_CHANGES, st.sampled_from(ZONES))
def test_runs_are_strictly_after_and_strictly_increasing(
    expression: str, after: datetime, zone: ZoneInfo
) -> None:
    found = runs(expression, after, zone, 12)
    assert all(a < b for a, b in itertools.pairwise([after, *found]))


@settings(deadline=None)
@given(EXPRESSIONS, AROUND_CHANGES, st.integers(0, 12 * 60), st.sampled_from(ZONES))
def test_runs_between_agrees_with_following_next_run(
    expression: str, start: datetime, minutes: int, zone: ZoneInfo
) -> None:
    end = start + timedelta(minutes=minutes)
    expected: list[datetime] = []
    after = start
    while (after := next_run(expression, after, zone)) <= end:
        expected.append(after)
    assert runs_between(expression, start, end, zone) == expected[-MAX_RUNS:]
    assert runs_between(expression, start, end, zone, limit=5) == expected[-5:]


@settings(deadline=None)
@given(st.integers(0, 59), st.integers(0, 23), AROUND_CHANGES, st.sampled_from(ZONES))
def test_a_daily_schedule_runs_once_on_every_local_day(
    minute: int, hour: int, after: datetime, zone: ZoneInfo
) -> None:
    found = runs(f"{minute} {hour} * * *", after, zone, 5)
    days = [run.astimezone(zone).date() for run in found]
    first = days[0]
    assert days == [first + timedelta(days=n) for n in range(5)]
    assert first - after.astimezone(zone).date() in (timedelta(0), timedelta(days=1))
