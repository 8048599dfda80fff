"""Report periods: named or explicit spans of time, resolved in the hospital's time zone.

A period is [start, end). Days, weeks (ISO, from Monday) and months begin at local midnight,
computed in the zone itself, so a day on which the clocks change lasts 23 or 25 hours. A
midnight the clocks skip (some zones change at 00:00) is replaced by the first instant after
the gap. `today` and `this-week`/`this-month` end at `now`: they are partial, and say so in
their label. Labels use absolute dates, so a report read next month still says what it covers.

Explicit bounds given as dates mean whole local days: from `from` 00:00 to `to` 00:00. Bounds
given as datetimes keep their zone; a naive datetime is a local wall-clock time in the
hospital's zone. A local time the clocks skip is refused; one that happens twice (when the
clocks go back) is its first occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from livedash.errors import InvalidPayload
from livedash.reports.document import ReportPeriod
from livedash.timeutil import as_aware, local_date, local_hour

ScheduleKind = Literal["hourly", "daily", "weekly", "monthly"]

MAX_PERIOD_DAYS = 400
"""The longest period a report may cover, in local calendar days."""

ACCEPTED = (
    "today, yesterday, this-week, last-week, this-month, last-month, last-7-days, "
    "last-30-days, day:YYYY-MM-DD, week:YYYY-Www, month:YYYY-MM, or a from and a to"
)
_EARLIEST, _LATEST = date(1970, 1, 1), date(9000, 1, 1)


def local_instants(wall: datetime, zone: ZoneInfo) -> tuple[datetime, ...]:
    """The instants (UTC) at which a local wall-clock time occurs, in order: none if the clocks
    skip it, two if they go back over it, otherwise one."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    # In a gap, fold=0 reads the wall time with the offset from before the change, which lands
    # after the gap: the two readings come out in the wrong order.
    return (first, second) if first < second else ()


def local_start(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the local clock reads `wall` or later: the first
    occurrence of a repeated time, the end of the gap for a skipped one."""
    instants = local_instants(wall, zone)
    if instants:
        return instants[0]
    # The change lies between the two readings of the skipped time; zoneinfo does not expose
    # its transitions, so it is found by bisection (to the microsecond, in some 32 steps).
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    offset = before.astimezone(zone).utcoffset()
    while after - before > timedelta(microseconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(zone).utcoffset() == offset:
            before = middle
        else:
            after = middle
    return after


def resolve_period(
    spec: str | None,
    *,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
    zone: ZoneInfo,
    now: datetime,
) -> ReportPeriod:
    """The period named by `spec`, or the one from `start` to `end` (see the module docstring);
    `now` is the clock's reading (naive: UTC)."""
    now = as_aware(now).astimezone(UTC)
    if spec is not None:
        if start is not None or end is not None:
            raise InvalidPayload("give either a period name or a from and a to, not both")
        period = _named(spec.strip().lower(), zone, now)
    elif start is None or end is None:
        raise InvalidPayload(f"a period is needed: {ACCEPTED}", accepted=ACCEPTED)
    else:
        period = _explicit(start, end, zone)
    if period.start > now:
        raise InvalidPayload(
            f"the period starts in the future ({_clock(period.start)}): a report covers what "
            "has already happened",
            start=period.start.isoformat(),
        )
    length = _wall(period.end) - _wall(period.start)
    if length > timedelta(days=MAX_PERIOD_DAYS):
        raise InvalidPayload(
            f"the period covers {length.days} days or more; a report covers at most "
            f"{MAX_PERIOD_DAYS} days",
            max_days=MAX_PERIOD_DAYS,
        )
    return period


def previous_period(kind: ScheduleKind, run_at: datetime, zone: ZoneInfo) -> ReportPeriod:
    """The complete local hour, day, ISO week or month before the one holding `run_at`."""
    today = local_date(run_at, zone)
    if kind == "hourly":
        # A real hour even when the clocks changed, so the arithmetic is done in UTC.
        end = as_aware(local_hour(run_at, zone))
        return _period(end - timedelta(hours=1), end, zone, "")
    if kind == "daily":
        return _days(today - timedelta(days=1), today, zone)
    if kind == "weekly":
        return _week(_monday(today) - timedelta(days=7), zone)
    if kind == "monthly":
        return _month(_previous_month(today.replace(day=1)), zone)
    raise InvalidPayload(f"unknown schedule kind {kind!r}: hourly, daily, weekly or monthly")


def _named(spec: str, zone: ZoneInfo, now: datetime) -> ReportPeriod:
    kind, colon, value = spec.partition(":")
    if colon and kind in _DATED:
        pattern, parse, form, build = _DATED[kind]
        match = re.fullmatch(pattern, value)
        try:
            day = parse(match) if match else None
        except ValueError:
            day = None
        if day is None:
            raise InvalidPayload(f"{spec!r} is not a valid period: expected {form}")
        return build(_checked(day, spec), zone)
    today = local_date(now, zone)
    monday, first = _monday(today), today.replace(day=1)
    named = {
        "yesterday": lambda: _days(today - timedelta(days=1), None, zone),
        "last-week": lambda: _week(monday - timedelta(days=7), zone),
        "last-month": lambda: _month(_previous_month(first), zone),
        "last-7-days": lambda: _days(today - timedelta(days=7), today, zone),
        "last-30-days": lambda: _days(today - timedelta(days=30), today, zone),
        "today": lambda: _partial(today, today.isoformat(), zone, now),
        "this-week": lambda: _partial(monday, _week_name(monday), zone, now),
        "this-month": lambda: _partial(first, f"{first:%Y-%m}", zone, now),
    }
    if spec not in named:
        raise InvalidPayload(f"unknown period {spec!r}: use {ACCEPTED}", accepted=ACCEPTED)
    return named[spec]()


def _explicit(start: date | datetime, end: date | datetime, zone: ZoneInfo) -> ReportPeriod:
    first, stop = _moment(start, "from", zone), _moment(end, "to", zone)
    # Aware datetimes of one zone compare (and subtract) as wall-clock times.
    if first.astimezone(UTC) >= stop.astimezone(UTC):
        raise InvalidPayload(
            f"from ({_clock(first)}) must come before to ({_clock(stop)})",
            start=first.isoformat(),
            end=stop.isoformat(),
        )
    if _wall(first).time() == time() and _wall(stop).time() == time():
        return _days(_wall(first).date(), _wall(stop).date(), zone)
    return _period(first, stop, zone, "")


def _moment(value: date | datetime, name: str, zone: ZoneInfo) -> datetime:
    if not isinstance(value, date):
        raise InvalidPayload(f"{name} must be a date or a date and time", field=name)
    day = value.date() if isinstance(value, datetime) else value
    _checked(day, f"{name} {value.isoformat()}")
    if not isinstance(value, datetime):
        return _midnight(value, zone)
    if value.tzinfo is not None:
        return value.astimezone(zone)
    instants = local_instants(value, zone)
    if not instants:
        raise InvalidPayload(
            f"{name} {value:%Y-%m-%d %H:%M} does not exist in {zone.key}: the clocks skip "
            "it when they go forward",
            field=name,
        )
    return instants[0].astimezone(zone)


def _days(first: date, stop: date | None, zone: ZoneInfo) -> ReportPeriod:
    """Whole local days [first, stop), a single day if `stop` is None."""
    stop = stop or first + timedelta(days=1)
    last = stop - timedelta(days=1)
    label = first.isoformat() if last == first else f"{first} to {last}"
    return _period(_midnight(first, zone), _midnight(stop, zone), zone, label)


def _week(monday: date, zone: ZoneInfo) -> ReportPeriod:
    sunday = monday + timedelta(days=6)
    label = f"{_week_name(monday)} ({monday} to {sunday})"
    return _period(
        _midnight(monday, zone), _midnight(sunday + timedelta(days=1), zone), zone, label
    )


def _month(first: date, zone: ZoneInfo) -> ReportPeriod:
    stop = (first + timedelta(days=31)).replace(day=1)
    return _period(_midnight(first, zone), _midnight(stop, zone), zone, f"{first:%Y-%m}")


def _partial(first: date, name: str, zone: ZoneInfo, now: datetime) -> ReportPeriod:
    until = now.astimezone(zone)
    return _period(_midnight(first, zone), until, zone, f"{name} so far (until {_clock(until)})")


def _period(start: datetime, end: datetime, zone: ZoneInfo, label: str) -> ReportPeriod:
    """[start, end) in `zone`, labelled by its two ends unless a `label` is given."""
    start, end = start.astimezone(zone), end.astimezone(zone)
    return ReportPeriod(start, end, zone.key, label or f"{_clock(start)} to {_clock(end)}")


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return local_start(datetime.combine(day, time()), zone).astimezone(zone)


def _wall(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def _clock(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M %Z}"


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _previous_month(first: date) -> date:
    return (first - timedelta(days=1)).replace(day=1)


def _week_name(monday: date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def _checked(day: date, what: str) -> date:
    if not _EARLIEST <= day <= _LATEST:
        raise InvalidPayload(f"{what} is outside the years a report can cover (1970 to 9000)")
    return day


_DATED: dict[
    str, tuple[str, Callable[[re.Match[str]], date], str, Callable[[date, ZoneInfo], ReportPeriod]]
] = {
    "day": (
        r"\d{4}-\d{2}-\d{2}",
        lambda match: date.fromisoformat(match[0]),
        "day:YYYY-MM-DD, a calendar date such as day:2026-03-29",
        lambda day, zone: _days(day, None, zone),
    ),
    "week": (
        r"(\d{4})-w(\d{2})",
        lambda match: date.fromisocalendar(int(match[1]), int(match[2]), 1),
        "week:YYYY-Www, an ISO week such as week:2026-W13",
        _week,
    ),
    "month": (
        r"(\d{4})-(\d{2})",
        lambda match: date(int(match[1]), int(match[2]), 1),
        "month:YYYY-MM, such as month:2026-03",
        _month,
    ),
}
"""day:, week: and month: periods: the value's pattern, how it is read, what it should look like,
and the period it starts."""
