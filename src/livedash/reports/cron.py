"""Report schedules: cron expressions run on the hospital's wall clock.

A schedule is a preset (`@hourly`, `@daily`, `@weekly`, `@monthly`) or a five-field crontab
expression (minute hour day-of-month month day-of-week; when both day fields are restricted a
day matching either runs, as in cron). `@weekly` runs on Monday at 00:00, when an ISO week has
just ended, not on Sunday as in cron.

croniter parses the expressions and steps through naive local wall-clock times; it is never
given a time zone. Turning a wall-clock time into an instant is done here, with these rules for
the days the clocks change:

- A schedule with a fixed hour field (anything but `*`) runs at a local time. A time the clocks
  skip runs at the first instant after the gap (02:30 runs at 03:00); a time that happens twice
  runs once, at its first occurrence. A daily schedule thus runs once on every local day.
- A schedule whose hour field is `*` (`@hourly`, `*/15 * * * *`) follows real time, as cron's
  wildcard jobs do: a skipped time is not run (the clock jumped over it, no real time is lost)
  and a repeated hour runs again. An hourly schedule runs once in every real hour.
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

from livedash.errors import InvalidPayload
from livedash.reports.periods import ScheduleKind, local_instants, local_start
from livedash.timeutil import as_aware

PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 1",
    "@monthly": "0 0 1 * *",
}
MAX_RUNS = 1000
"""The most runs `runs_between` returns (the latest ones)."""

_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat"),
)
_HASHED = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?")
_REFERENCE = datetime(2000, 1, 1)  # croniter gives up after 50 years without a run


def validate_cron(expression: str) -> str:
    """The schedule in its normal form (lower case, single spaces), or `InvalidPayload`."""
    text = " ".join(expression.lower().split())
    presets = ", ".join(PRESETS)
    if text.startswith("@"):
        if text not in PRESETS:
            raise InvalidPayload(f"unknown preset {expression!r}: use {presets}", schedule=text)
        return text
    fields = text.split()
    if len(fields) == 6:
        raise InvalidPayload(
            f"{expression!r} has 6 fields: a seconds field is not supported, schedules run on "
            "whole minutes (minute hour day-of-month month day-of-week)",
            schedule=text,
        )
    if len(fields) != 5:
        raise InvalidPayload(
            f"{expression!r} has {len(fields)} fields: a schedule is a preset ({presets}) or "
            "5 fields (minute hour day-of-month month day-of-week)",
            schedule=text,
        )
    for index, (field, (name, values)) in enumerate(zip(fields, _FIELDS, strict=True)):
        if any(_HASHED.fullmatch(part) for part in field.split(",")):
            raise InvalidPayload(
                f"the {name} field {field!r}: hashed (H) and random (R) values are not supported",
                field=name,
            )
        alone = " ".join(field if i == index else "*" for i in range(5))
        try:
            croniter.expand(alone)
        except CroniterError as error:
            raise _bad_field(name, field, values, str(error)) from None
    try:
        croniter(text, start_time=_REFERENCE).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidPayload(
            f"{expression!r} never runs: no date matches it", schedule=text
        ) from None
    except CroniterError as error:
        raise InvalidPayload(f"{expression!r} is not a valid schedule: {error}") from None
    return text


def next_run(expression: str, after: datetime, zone: ZoneInfo) -> datetime:
    """The first run (aware, UTC) strictly after `after` (naive: UTC), by the rules above."""
    return next(_schedule(expression).runs(as_aware(after), zone))


def runs_between(
    expression: str, start: datetime, end: datetime, zone: ZoneInfo, *, limit: int = MAX_RUNS
) -> list[datetime]:
    """The runs (aware, UTC) after `start` up to and including `end`, oldest first: the latest
    `limit` of them if there are more (naive moments are UTC)."""
    schedule = _schedule(expression)
    start, end = as_aware(start).astimezone(UTC), as_aware(end).astimezone(UTC)
    # Look back over a window that doubles until it holds `limit` runs or reaches `start`, so a
    # long outage under a dense schedule costs a few times `limit` steps, not one per run.
    span = timedelta(hours=1)
    while True:
        since = max(start, end - span)
        latest: deque[datetime] = deque(maxlen=limit)
        for run in schedule.runs(since, zone):
            if run > end:
                break
            latest.append(run)
        if since == start or len(latest) == limit:
            return list(latest)
        span *= 2


def schedule_kind(expression: str) -> ScheduleKind:
    """The coarsest period in which the schedule runs at most once: the period a run reports on.

    Several hours or minutes a day (`15 * * * *`, `0 6,18 * * *`) are hourly. One time a day is
    daily (`0 6 * * *`), weekly on a single weekday (`0 6 * * 1`), monthly on a single day of
    the month (`0 6 1 * *`, `0 6 L * *`, `0 6 * * 1#1`, and `0 6 1 1 *` which runs once a
    year). Any other set of days (`0 6 * * 1-5`, `0 6 1,15 * *`) is daily.
    """
    (minutes, hours, days, _, weekdays), nth = croniter.expand(_schedule(expression).crontab)
    if ["*"] in (minutes, hours) or len(minutes) > 1 or len(hours) > 1:
        return "hourly"
    if days == ["*"] and weekdays == ["*"]:
        return "daily"
    if days == ["*"] and len(weekdays) == 1:
        nths = nth.get(int(weekdays[0]), set())  # `1#1`, `L5`: which ones in the month
        return "weekly" if not nths else "monthly" if len(nths) == 1 else "daily"
    if weekdays == ["*"] and len(days) == 1:
        return "monthly"
    return "daily"


@dataclass(frozen=True, slots=True)
class _Schedule:
    crontab: str
    every_hour: bool

    def runs(self, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
        """Every run strictly after `after` (aware), in order."""
        local = after.astimezone(zone)
        start = local.replace(tzinfo=None, fold=0)
        occurrences = local_instants(start, zone)
        if self.every_hour and local.fold == 0 and len(occurrences) == 2:
            # `after` is in the first pass of a repeated hour: the second pass of the wall times
            # just before it is still to come.
            start -= occurrences[1] - occurrences[0]
        walls = croniter(self.crontab, start_time=start - timedelta(minutes=1))
        pending: list[datetime] = []
        last = after
        while True:
            wall = walls.get_next(datetime)
            instants = local_instants(wall, zone) if self.every_hour else (local_start(wall, zone),)
            for instant in instants:
                if instant > last and instant not in pending:
                    heapq.heappush(pending, instant)
            # Later wall times occur no earlier than this one first does: what precedes is final.
            while pending and instants and pending[0] <= instants[0]:
                last = heapq.heappop(pending)
                yield last


@lru_cache(maxsize=256)
def _schedule(expression: str) -> _Schedule:
    normal = validate_cron(expression)
    crontab = PRESETS.get(normal, normal)
    (_, hours, *_), _ = croniter.expand(crontab)
    return _Schedule(crontab, every_hour=hours == ["*"])


def _bad_field(name: str, field: str, values: str, reason: str) -> InvalidPayload:
    if "out of range" in reason or "out of bands" in reason:
        return InvalidPayload(
            f"the {name} field {field!r} is out of range: it takes {values}", field=name
        )
    return InvalidPayload(
        f"the {name} field {field!r} is not valid: use *, a value ({values}), a range (1-5), "
        "a list (1,3) or a step (*/15)",
        field=name,
    )
