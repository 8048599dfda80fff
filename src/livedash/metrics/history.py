"""The historical tier's write side: hourly roll-ups kept exact from the change feed.

Each series is a sum per hour of the hospital's local clock, per department and for the
hospital (department 0 in the table). Count series (admissions, discharges, emergency
arrivals, completed appointments, revenue in cents) are fed by the same contributions as the
engine's counters (`contributions.CONTRIBUTIONS`): a change removes its old row's
contribution and adds its new row's, so the roll-ups always equal a GROUP BY over the current
rows. Occupancy is observed over time instead: each hour keeps the time-weighted sum of the
occupancy rate, the seconds observed and the peak.

Deltas accumulate in memory and are written by `flush` in the same transaction as the feed
position, so after a restart the roll-ups resume exactly where the position says. The read
side (stored buckets, growth, trends and series) is `figures`; requests and the growth
figures never read the raw tables.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.changefeed.base import Change, Row
from livedash.metrics.contributions import CONTRIBUTIONS
from livedash.metrics.definitions import OCCUPANCY
from livedash.store.models import MetricRollup
from livedash.store.upsert import add_to_rows
from livedash.timeutil import local_hour

T = TypeVar("T")

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


def scope_row(department: int | None) -> int:
    """The roll-up table's department id of a scope (`None`: the hospital)."""
    return HOSPITAL_ROW if department is None else department


class HistoryRecorder:
    """Hourly roll-ups kept exact from the change feed, persisted with its position."""

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._pending: dict[BucketKey, Bucket] = {}
        self._in_flight: dict[BucketKey, Bucket] = {}
        self._occupancy: dict[int, tuple[float, datetime]] = {}
        self.position = 0
        self._seals = 0
        self._settled = asyncio.Event()
        self._settled.set()

    # -- counting ------------------------------------------------------------------------

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
        contributions = CONTRIBUTIONS.get(table)
        if contributions is None:
            return
        department = row.get("department_id")
        scopes = (HOSPITAL_ROW, int(department)) if department else (HOSPITAL_ROW,)
        for _family, amount, _detail, at, series in contributions(row):
            if series is None or at is None or not amount:
                continue
            hour = local_hour(at, self._zone)
            for scope in scopes:
                self._pending.setdefault((series, scope, hour), Bucket()).amount += sign * amount

    def observe_occupancy(self, department: int | None, rate: float, at: datetime) -> None:
        """The occupancy rate of a scope became `rate` at `at` (naive UTC)."""
        scope = scope_row(department)
        previous = self._occupancy.get(scope)
        self._occupancy[scope] = (rate, at)
        if previous is None:
            return
        value, since = previous
        for hour, seconds in self._split_by_hour(since, at):
            bucket = self._pending.setdefault((OCCUPANCY, scope, hour), Bucket())
            bucket.add(Bucket(weighted=value * seconds, seconds=seconds, peak=value))
        bucket = self._pending.setdefault((OCCUPANCY, scope, local_hour(at, self._zone)), Bucket())
        bucket.add(Bucket(peak=rate))

    def _split_by_hour(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, float]]:
        while start < end:
            hour = local_hour(start, self._zone)
            boundary = min(end, hour + timedelta(hours=1))
            if boundary <= start:  # a local hour shorter than an hour is not possible
                return
            yield hour, (boundary - start).total_seconds()
            start = boundary

    # -- persistence ---------------------------------------------------------------------

    def seal(self) -> None:
        """Set the pending deltas aside for the next `flush`: exactly those counted up to now.

        Called as the position to store is read, with no await in between. Changes applied
        while the flush's transaction is being opened stay pending for the next one: stored
        with the earlier position, they would be counted again when the feed resumes from it.
        """
        self._merge(self._pending, into=self._in_flight)
        self._pending = {}
        self._seals += 1
        self._settled.clear()

    async def flush(self, connection: AsyncConnection) -> None:
        """Write the sealed deltas in the caller's transaction (the feed position's).

        Until `settle` says whether that transaction committed, the deltas stay readable and
        are not lost: a failed commit puts them back.
        """
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
        self._settled.set()

    async def read_stored(self, connection: AsyncConnection, read: Callable[[], Awaitable[T]]) -> T:
        """Run `read` of the stored roll-ups on `connection` so that `unsaved`, called right
        after it with no await in between, adds exactly what it did not see.

        While a flush is between `seal` and `settle`, its deltas are both in flight and
        perhaps committed: a read then could count them twice, or (committed and settled
        during the read) not at all. So a read waits for the flush to settle, and is done
        again if another flush was sealed while it ran. Flushes never wait for readers.

        Each attempt reads in a transaction of its own: a snapshot the connection took
        earlier (SQLite keeps one until the transaction ends) may predate a flush that has
        since settled, whose deltas are then neither stored nor unsaved. So `connection` must
        not be in a transaction its caller began (`connection.begin()`).
        """
        while True:
            if connection.in_transaction():
                await connection.rollback()
            # A reader woken by a settle runs later: by then the next flush may be sealed.
            while not self._settled.is_set():
                await self._settled.wait()
            seals = self._seals
            result = await read()
            if self._seals == seals:
                return result

    @staticmethod
    def _merge(source: dict[BucketKey, Bucket], *, into: dict[BucketKey, Bucket]) -> None:
        for key, bucket in source.items():
            into.setdefault(key, Bucket()).add(bucket)

    def unsaved(
        self, series: str, department: int | None, start: datetime, end: datetime
    ) -> Iterator[tuple[datetime, Bucket]]:
        """The deltas of [start, end) not yet stored (pending or in flight), by hour start."""
        scope = scope_row(department)
        for deltas in (self._in_flight, self._pending):
            for (delta_series, delta_scope, hour), bucket in deltas.items():
                if delta_series == series and delta_scope == scope and start <= hour < end:
                    yield hour, bucket
