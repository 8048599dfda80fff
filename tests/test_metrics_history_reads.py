"""A read of the roll-ups on the leader (stored rows plus the deltas not yet stored) counts
each delta exactly once while the feed's confirming task flushes them: a report for today
once showed twice the dashboard's admissions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, make_url
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.alerts.anomaly import hour_of_week_history
from livedash.metrics.figures import HistoryFigures
from livedash.metrics.history import HistoryRecorder
from tests.support.operations import ZONE

DAY = datetime(2026, 11, 25, tzinfo=ZONE)
ADMITTED = [DAY.replace(hour=hour) for hour in (9, 10, 11)]


class ReadsAtOnce:
    """A connection whose statements run to the end without yielding to the event loop
    (a synchronous SQLite connection), except that the first can be held after it has
    read, until `release`: so a test places a flush exactly around a read."""

    def __init__(self, connection: Connection, *, hold_first: bool = False) -> None:
        self._connection = connection
        self._hold = asyncio.Event() if hold_first else None
        self.reads = 0

    def release(self) -> None:
        assert self._hold is not None
        self._hold.set()

    async def execute(self, statement: Any) -> Any:
        result = self._connection.execute(statement)
        rows = result.all()
        self.reads += 1
        if self._hold is not None and self.reads == 1:
            await self._hold.wait()
        return _Rows(rows)

    async def scalar(self, statement: Any) -> Any:
        return self._connection.scalar(statement)

    def in_transaction(self) -> bool:
        return False  # pysqlite's own handling: no BEGIN before a SELECT, so no snapshot


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def all(self) -> list[Any]:
        return self._rows


@pytest.fixture
def sync_connection(database_url: str) -> Iterator[Connection]:
    url = make_url(database_url).set(drivername="sqlite")
    engine = create_sync_engine(url)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def _count(recorder: HistoryRecorder, moment: datetime) -> None:
    at = moment.astimezone(UTC).replace(tzinfo=None)
    recorder.load("admissions", {"department_id": 1, "admitted_at": at})


def _recorder() -> HistoryRecorder:
    recorder = HistoryRecorder(ZONE)
    for moment in ADMITTED:
        _count(recorder, moment)
    recorder.position = 7
    return recorder


async def _flush(recorder: HistoryRecorder, database: AsyncEngine) -> None:
    """`seal`, then `flush` in a transaction that commits: what `MetricPipeline.confirm` does
    before it settles."""
    recorder.seal()
    async with database.begin() as connection:
        await recorder.flush(connection)


async def _admissions_today(figures: HistoryFigures, connection: Any) -> int:
    points = await figures.series(
        connection, "admissions", None, DAY, DAY + timedelta(days=1), "day"
    )
    return sum(int(point.value or 0) for point in points)


async def test_a_read_while_a_flush_is_committed_but_not_settled_counts_it_once(
    database: AsyncEngine, sync_connection: Connection
) -> None:
    recorder = _recorder()
    await _flush(recorder, database)  # stored, and still in flight
    reader = asyncio.create_task(
        _admissions_today(HistoryFigures(recorder, ZONE), ReadsAtOnce(sync_connection))
    )
    await asyncio.sleep(0)  # the reader's first step: it reads, unless it waits for the flush
    recorder.settle(committed=True)
    assert await reader == 3


async def test_a_flush_that_commits_and_settles_during_a_read_is_not_lost(
    database: AsyncEngine, sync_connection: Connection
) -> None:
    recorder = _recorder()
    connection = ReadsAtOnce(sync_connection, hold_first=True)
    reader = asyncio.create_task(_admissions_today(HistoryFigures(recorder, ZONE), connection))
    await asyncio.sleep(0)  # the reader has read the stored rows (none) and is held
    assert connection.reads == 1
    await _flush(recorder, database)
    recorder.settle(committed=True)  # nothing pending or in flight any more: all stored
    connection.release()
    assert await reader == 3


async def test_a_read_woken_by_a_settle_waits_for_the_flush_sealed_before_it_ran(
    database: AsyncEngine, sync_connection: Connection
) -> None:
    recorder = HistoryRecorder(ZONE)
    first, *later = ADMITTED
    _count(recorder, first)
    await _flush(recorder, database)
    connection = ReadsAtOnce(sync_connection, hold_first=True)
    reader = asyncio.create_task(_admissions_today(HistoryFigures(recorder, ZONE), connection))
    await asyncio.sleep(0)  # the reader waits for the flush to settle
    recorder.settle(committed=True)
    for moment in later:  # counted, and sealed by the next flush before the reader runs
        _count(recorder, moment)
    recorder.seal()
    await asyncio.sleep(0)
    async with database.begin() as transaction:
        await recorder.flush(transaction)
    recorder.settle(committed=True)
    connection.release()
    assert await reader == 3


async def test_a_connection_that_read_before_a_flush_reads_the_flush_after_it_settled(
    database: AsyncEngine,
) -> None:
    recorder = _recorder()
    figures = HistoryFigures(recorder, ZONE)
    async with database.connect() as connection:
        assert await _admissions_today(figures, connection) == 3  # none stored yet
        await _flush(recorder, database)
        recorder.settle(committed=True)
        assert await _admissions_today(figures, connection) == 3  # all stored now


async def test_a_failed_flush_leaves_its_deltas_counted_once(
    database: AsyncEngine, sync_connection: Connection
) -> None:
    recorder = _recorder()
    recorder.seal()
    reader = asyncio.create_task(
        _admissions_today(HistoryFigures(recorder, ZONE), ReadsAtOnce(sync_connection))
    )
    await asyncio.sleep(0)
    recorder.settle(committed=False)  # the transaction rolled back: the deltas are pending
    assert await reader == 3


async def test_the_anomaly_watch_reads_the_hour_once_during_a_flush(
    database: AsyncEngine, sync_connection: Connection
) -> None:
    recorder = _recorder()
    await _flush(recorder, database)
    connection: Any = ReadsAtOnce(sync_connection)
    reader = asyncio.create_task(
        hour_of_week_history(
            connection,
            "admissions",
            None,
            ADMITTED[0],
            4,
            ZONE,
            unsaved=recorder,
        )
    )
    await asyncio.sleep(0)
    recorder.settle(committed=True)
    current, _history = await reader
    assert current == 1.0
