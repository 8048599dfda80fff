"""The historical tier: hourly roll-ups, growth and trends.

Each series is a sum per hour of the hospital's local clock, per department and for the
hospital (department 0 in the table). Count series (admissions, discharges, emergency
arrivals, completed appointments, revenue in cents) follow the same rule as the engine's
counters: a change removes its old row's contribution and adds its new row's, so the roll-ups
always equal a GROUP BY over the current rows. Occupancy is observed over time instead: each
hour keeps the time-weighted sum of the occupancy rate, the seconds observed and the peak.

Deltas accumulate in memory and are written by `flush` in the same transaction as the feed
position, so after a restart the roll-ups resume exactly where the position says. Requests
and the growth figures never read the raw tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.changefeed.base import Change, Row
from livedash.changefeed.rows import parse_timestamp
from livedash.store.models import MetricRollup
from livedash.store.upsert import add_to_rows

COUNT_SERIES = (
    "admissions",
    "discharges",
    "emergency_arrivals",
    "appointments_completed",
    "revenue",
)
OCCUPANCY = "occupancy"
SERIES = (*COUNT_SERIES, OCCUPANCY)
HOSPITAL_ROW = 0  # the roll-up table's department id for hospital-wide sums

BucketKey = tuple[str, int, datetime]  # series, department (0: hospital), hour start (UTC)


@dataclass(slots=True)
class Bucket:
    """One hour of one series: a sum, or for occupancy the time-weighted sum and the peak."""

    amount: int = 0
    weighted: float = 0.0
    seconds: float = 0.0
    peak: float | None = None

    def add(self, other: Bucket) -> None:
        self.amount += other.amount
        self.weighted += other.weighted
        self.seconds += other.seconds
        if other.peak is not None:
            self.peak = other.peak if self.peak is None else max(self.peak, other.peak)


class HistoryRecorder:
    """Hourly roll-ups kept exact from the change feed, persisted with its position."""

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._pending: dict[BucketKey, Bucket] = {}
        self._in_flight: dict[BucketKey, Bucket] = {}
        self._occupancy: dict[int, tuple[float, datetime]] = {}
        self.position = 0

    # -- counting ------------------------------------------------------------------------

    def hour_of(self, value: Any) -> datetime | None:
        """The UTC start of the local hour holding a stored UTC timestamp."""
        moment = value if isinstance(value, datetime) else parse_timestamp(value)
        if moment is None:
            return None
        local = moment.replace(tzinfo=UTC).astimezone(self._zone)
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC).replace(tzinfo=None)

    def load(self, table: str, row: Row) -> None:
        """Count an existing row, when the roll-ups are built from scratch once."""
        self._count(table, row, +1)

    def apply(self, changes: Iterable[Change]) -> None:
        """Count changes after the recorder's position."""
        for change in changes:
            if change.position <= self.position:
                continue
            if change.old is not None:
                self._count(change.table, change.old, -1)
            if change.new is not None:
                self._count(change.table, change.new, +1)
            self.position = change.position

    def _count(self, table: str, row: Row, sign: int) -> None:
        department = row.get("department_id")
        for series, moment, amount in _contributions(table, row):
            hour = self.hour_of(moment)
            if hour is None or not amount:
                continue
            for scope in (HOSPITAL_ROW, department) if department else (HOSPITAL_ROW,):
                self._pending.setdefault((series, int(scope), hour), Bucket()).amount += (
                    sign * amount
                )

    def observe_occupancy(self, department: int | None, rate: float, at: datetime) -> None:
        """The occupancy rate of a scope became `rate` at `at` (naive UTC)."""
        scope = HOSPITAL_ROW if department is None else department
        previous = self._occupancy.get(scope)
        self._occupancy[scope] = (rate, at)
        if previous is None:
            return
        value, since = previous
        for hour, seconds in self._split_by_hour(since, at):
            bucket = self._pending.setdefault((OCCUPANCY, scope, hour), Bucket())
            bucket.add(Bucket(weighted=value * seconds, seconds=seconds, peak=value))
        end_hour = self.hour_of(at)
        if end_hour is not None:
            bucket = self._pending.setdefault((OCCUPANCY, scope, end_hour), Bucket())
            bucket.add(Bucket(peak=rate))

    def _split_by_hour(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, float]]:
        while start < end:
            hour = self.hour_of(start)
            if hour is None:
                return
            boundary = min(end, hour + timedelta(hours=1))
            if boundary <= start:  # a local hour shorter than an hour is not possible
                return
            yield hour, (boundary - start).total_seconds()
            start = boundary

    # -- persistence ---------------------------------------------------------------------

    async def flush(self, connection: AsyncConnection) -> None:
        """Write the pending deltas in the caller's transaction (the feed position's).

        Until `settle` says whether that transaction committed, the deltas stay readable and
        are not lost: a failed commit puts them back.
        """
        self._merge(self._pending, into=self._in_flight)
        self._pending = {}
        rows = [
            {
                "series": series,
                "department_id": department,
                "hour_start": hour,
                "amount": bucket.amount,
                "weighted": bucket.weighted,
                "seconds": bucket.seconds,
                "peak": bucket.peak,
            }
            for (series, department, hour), bucket in self._in_flight.items()
        ]
        await add_to_rows(
            connection,
            MetricRollup.__table__,  # type: ignore[arg-type]
            rows,
            keys=("series", "department_id", "hour_start"),
            summed=("amount", "weighted", "seconds"),
            maximum=("peak",),
        )

    def settle(self, *, committed: bool) -> None:
        """After the flush's transaction: drop the written deltas, or keep them pending."""
        if not committed:
            self._merge(self._in_flight, into=self._pending)
        self._in_flight = {}

    @staticmethod
    def _merge(source: dict[BucketKey, Bucket], *, into: dict[BucketKey, Bucket]) -> None:
        for key, bucket in source.items():
            into.setdefault(key, Bucket()).add(bucket)

    async def buckets(
        self,
        connection: AsyncConnection,
        series: str,
        department: int | None,
        start: datetime,
        end: datetime,
    ) -> dict[datetime, Bucket]:
        """Stored buckets of [start, end) plus what is not yet stored, by hour start."""
        scope = HOSPITAL_ROW if department is None else department
        table = MetricRollup.__table__
        result = await connection.execute(
            select(
                table.c.hour_start, table.c.amount, table.c.weighted, table.c.seconds, table.c.peak
            ).where(
                table.c.series == series,
                table.c.department_id == scope,
                table.c.hour_start >= start,
                table.c.hour_start < end,
            )
        )
        found: dict[datetime, Bucket] = {}
        for hour, amount, weighted, seconds, peak in result.all():
            found[_naive(hour)] = Bucket(int(amount), float(weighted), float(seconds), peak)
        for unsaved in (self._in_flight, self._pending):
            for (unsaved_series, unsaved_scope, hour), bucket in unsaved.items():
                if unsaved_series == series and unsaved_scope == scope and start <= hour < end:
                    found.setdefault(hour, Bucket()).add(bucket)
        return found

    def local_day(self, hour: datetime) -> date:
        """The hospital-time date of a bucket."""
        return hour.replace(tzinfo=UTC).astimezone(self._zone).date()


def _naive(moment: Any) -> datetime:
    parsed = parse_timestamp(moment)
    if parsed is None:
        raise ValueError(f"bad hour_start {moment!r}")
    return parsed


def _contributions(table: str, row: Row) -> Iterator[tuple[str, Any, int]]:
    if table == "admissions":
        yield "admissions", row.get("admitted_at"), 1
        yield "discharges", row.get("discharged_at"), 1
    elif table == "patients":
        if row.get("emergency"):
            yield "emergency_arrivals", row.get("registered_at"), 1
    elif table == "appointments":
        if row.get("status") == "completed":
            yield "appointments_completed", row.get("scheduled_at"), 1
    elif table == "payments":
        amount = row.get("amount_cents")
        if isinstance(amount, int):
            yield "revenue", row.get("paid_at"), amount


def utc(moment: datetime) -> datetime:
    """A naive UTC datetime (how the roll-ups store hours) from an aware one."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
