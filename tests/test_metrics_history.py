"""The historical tier: roll-ups equal a recount by hour, survive restarts exactly, and the
growth, trend and occupancy figures are right."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from livedash.metrics.clock import ManualClock
from livedash.metrics.engine import MetricEngine
from livedash.metrics.figures import HistoryFigures
from livedash.metrics.history import HistoryRecorder
from livedash.metrics.pipeline import MetricPipeline
from livedash.store.engine import create_engine
from tests.support.cases import Case, Cases, CaseWriter, cases_fixture, committed  # noqa: F401
from tests.support.operations import NOW, OPERATIONS, ZONE, apply_operation
from tests.support.rollups import recount, stored

pytestmark = pytest.mark.both_backends

CRASH_AFTER_BATCHES = 3
START, CRASH = ("start", 0), ("crash", 0)
# The rows written so far predate every captured change: the SQLite log is emptied (on
# PostgreSQL, no slot exists before the first start).
FORGET_CHANGES = ("forget_changes", 0)


async def _follow(case: Case, clock: ManualClock, *, crash: bool, overlap: bool = False) -> None:
    """Start like the service, apply what is committed and store the position (with the
    roll-ups) after each batch and at the end, as `MetricPipeline` does. A crash comes after
    applying CRASH_AFTER_BATCHES batches, before storing the last one: it loses what was not
    stored.

    With `overlap`, each position is stored while the next batch is applied, as the service's
    confirming task does alongside its feed task: the store has read its position and waits
    for the database when the batch comes in."""
    database = create_engine(case.url)
    history = HistoryRecorder(ZONE)
    async with case.feed("metrics", batch_size=5) as feed:
        pipeline = MetricPipeline(MetricEngine(ZONE, clock), feed, database, history=history)
        from_rows = await feed.confirmed_position() == 0  # the roll-ups are counted from rows
        await pipeline.rebuild()
        applied = 0
        async with contextlib.aclosing(committed(feed)) as batches:
            async for delivered in batches:
                storing = asyncio.create_task(pipeline.confirm()) if overlap else None
                if storing is not None:
                    await asyncio.sleep(0)  # it reads its position, then waits for the database
                fresh = [c for c in delivered if not feed.counted_at_start(c)]
                history.apply(fresh if from_rows else delivered)
                pipeline.engine.apply(fresh)
                last = delivered[-1].position
                pipeline.engine.position = max(pipeline.engine.position, last)
                history.position = max(history.position, last)
                applied += 1
                if storing is not None:
                    await storing
                if crash and applied == CRASH_AFTER_BATCHES:
                    break
                if storing is None:
                    await pipeline.confirm()
        if not crash:
            await pipeline.confirm()
    await database.dispose()


def _replay(cases: Cases, steps: list[tuple[str, int]], *, overlap: bool = False) -> None:
    """Write each step's operation, or start the service (START, CRASH) and stop it; then the
    stored roll-ups must equal a recount."""

    async def replay() -> None:
        clock = ManualClock(NOW)
        async with cases.new() as case, case.writer() as write:
            for kind, seed in steps:
                if (kind, seed) in (START, CRASH):
                    await _follow(case, clock, crash=(kind, seed) == CRASH, overlap=overlap)
                elif (kind, seed) == FORGET_CHANGES:
                    if case.backend == "sqlite":
                        await write("DELETE FROM change_log")
                else:
                    await apply_operation(write, kind, seed)
            truth = await recount(write)
            assert truth, "the operations should have produced some history"
            assert await stored(write) == truth

    asyncio.run(replay())


def _operations(seed: int, count: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(rng.choice(OPERATIONS), rng.randrange(10_000)) for _ in range(count)]


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_rollups_equal_a_recount_across_restarts_and_a_crash(cases: Cases, seed: int) -> None:
    # The first start comes before any write: on PostgreSQL the replication slot begins there.
    writes = _operations(seed, 300)
    steps = [START, *writes[:100], START, *writes[100:150], CRASH, *writes[150:], START]
    _replay(cases, steps)


def test_a_crash_after_storing_while_the_next_batch_was_applied(cases: Cases) -> None:
    # The store that was under way as the crash came holds the roll-ups up to its own
    # position only: the batch applied meanwhile is replayed after the restart, once.
    writes = _operations(11, 200)
    steps = [START, *writes[:50], START, *writes[50:150], CRASH, *writes[150:], START]
    _replay(cases, steps, overlap=True)


def test_a_crash_while_following_the_first_counts_backlog(cases: Cases) -> None:
    # The crash stores the roll-ups counted from the rows with the position of the last batch
    # applied before it; the rest of the backlog is in those rows already.
    _replay(cases, [START, *_operations(7, 200), CRASH, START])


def test_first_start_builds_the_rollups_from_the_rows_once(cases: Cases) -> None:
    steps = [*_operations(9, 200), FORGET_CHANGES]
    for seed in (1, 2, 3):
        steps += [("department", seed), START]
    _replay(cases, steps)


def test_occupancy_is_time_weighted_per_hour_with_its_peak() -> None:
    recorder = HistoryRecorder(ZoneInfo("UTC"))
    at = datetime(2026, 11, 23, 10, 0)
    recorder.observe_occupancy(None, 0.5, at)
    recorder.observe_occupancy(None, 1.0, at + timedelta(minutes=30))
    recorder.observe_occupancy(None, 0.25, at + timedelta(minutes=75))
    ten, eleven = (recorder._pending["occupancy", 0, at + timedelta(hours=h)] for h in (0, 1))
    assert (ten.weighted, ten.seconds, ten.peak) == (0.5 * 1800 + 1.0 * 1800, 3600.0, 1.0)
    assert (eleven.weighted, eleven.seconds, eleven.peak) == (1.0 * 900, 900.0, 1.0)


async def test_growth_and_trend_figures(database_url: str) -> None:
    now = datetime(2026, 11, 25, 14, 30, tzinfo=ZONE)  # a Wednesday
    recorder = HistoryRecorder(ZONE)

    def admit(moment: datetime, department: int = 1) -> None:
        admitted = moment.astimezone(UTC).replace(tzinfo=None)
        recorder.load("admissions", {"department_id": department, "admitted_at": admitted})

    for hour in (3, 9, 12, 13):  # today before 14:30: 4 admissions
        admit(now.replace(hour=hour))
    for hour in (2, 10):  # yesterday before 14:30: 2; and 3 more after it
        admit(now.replace(hour=hour) - timedelta(days=1))
    for hour in (15, 16, 20):
        admit(now.replace(hour=hour) - timedelta(days=1))
    admit(now.replace(day=17, hour=8))  # last Tuesday, inside last week's Mon-Wed 14:30 span
    engine = create_engine(database_url)
    async with engine.connect() as connection:
        figures = await HistoryFigures(recorder, ZONE).compute(connection, now, [1, 2])
    await engine.dispose()
    assert figures["admissions_growth_day", None] == 1.0  # 4 against 2
    assert figures["admissions_growth_day", 1] == 1.0
    assert figures["admissions_growth_week", None] == 8.0  # Mon-Wed 9 vs last Mon-Wed 1
    assert figures["admissions_growth_month", None] is None  # nothing in October
    assert figures["admissions_growth_week", 2] is None  # another department: nothing
    assert figures["admissions_trend", None] == "increasing"  # 08-14h: 3, 02-08h: 1
    assert figures["discharges_growth_day", None] is None
    assert figures["discharges_trend", None] == "stable"
    assert figures["occupancy_trend", None] == "stable"


def _values(points: list[Any]) -> list[Any]:
    return [point.value for point in points]


async def test_series_by_hour_and_by_local_day_across_a_dst_change(database_url: str) -> None:
    recorder = HistoryRecorder(ZONE)
    # Clocks go back on 2026-10-25 at 03:00 in Berlin: that day has 25 hours.
    for moment in ("2026-10-24 22:30:00", "2026-10-25 00:30:00", "2026-10-25 01:30:00"):
        recorder.load("payments", {"department_id": 2, "paid_at": moment, "amount_cents": 1000})
    figures = HistoryFigures(recorder, ZONE)
    engine = create_engine(database_url)
    start = datetime(2026, 10, 25, 0, 0, tzinfo=ZONE)
    end = datetime(2026, 10, 26, 0, 0, tzinfo=ZONE)
    async with engine.connect() as connection:
        hours = await figures.series(connection, "revenue", 2, start, end, "hour")
        days = await figures.series(
            connection, "revenue", None, start - timedelta(days=1), end, "day"
        )
    await engine.dispose()
    assert len(hours) == 25
    assert sum(_values(hours)) == 3000
    assert [point.start.astimezone(ZONE).hour for point in hours[:4]] == [0, 1, 2, 2]
    assert _values(days) == [0, 3000]
