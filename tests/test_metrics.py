"""The incremental engine equals a full SQL recompute, whatever the writes and their order."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from livedash.changefeed import Change, ChangeSource, Op, open_change_source
from livedash.metrics.clock import ManualClock
from livedash.metrics.definitions import FAMILY_METRICS, METRIC_NAMES
from livedash.metrics.engine import MetricEngine, MetricValue
from livedash.metrics.pipeline import MetricPipeline
from livedash.store.engine import create_engine
from livedash.testing.oracle import Values, recompute
from tests.support.cases import Cases, CaseWriter, cases_fixture, committed  # noqa: F401
from tests.support.operations import NOW, OPERATIONS, ZONE, apply_operation
from tests.support.writers import Write, register_patient

pytestmark = pytest.mark.both_backends


# The service's own health and the historical tier do not come from the current rows.
SYSTEM_METRICS = set(FAMILY_METRICS["system"]) | set(FAMILY_METRICS["historical"])


def engine_values(engine: MetricEngine) -> Values:
    return {
        (value.metric, value.department): value.value
        for value in engine.snapshot()
        if value.metric not in SYSTEM_METRICS
    }


async def _check(cases: Cases, operations: list[tuple[str, int]]) -> None:
    clock = ManualClock(NOW)
    incremental = MetricEngine(ZONE, clock)
    incremental.finish_loading(0)
    halfway = len(operations) // 2
    async with cases.new() as case:
        database = create_engine(case.url)
        async with case.writer() as write, case.feed("test", batch_size=7) as feed:
            for kind, seed in operations[:halfway]:
                await apply_operation(write, kind, seed)
            # One engine starts from a recount in the middle of the writes...
            rebuilt = MetricEngine(ZONE, clock)
            await MetricPipeline(rebuilt, feed, database).rebuild()
            for kind, seed in operations[halfway:]:
                await apply_operation(write, kind, seed)
            # ...and then both take every change from the start, in small batches; the
            # recounted one skips what its count held already.
            async with contextlib.aclosing(committed(feed)) as batches:
                async for batch in batches:
                    incremental.apply(batch)
                    rebuilt.apply([c for c in batch if not feed.counted_at_start(c)])
                    await feed.confirm(batch[-1].position)
        await database.dispose()
        truth = await recompute(case.url, ZONE, NOW.astimezone(ZONE).date())
    assert engine_values(incremental) == truth
    assert engine_values(rebuilt) == truth
    assert {metric for metric, _ in truth} == set(METRIC_NAMES) - SYSTEM_METRICS


# Each PostgreSQL example clones a database and creates a replication slot: fewer of them.
EXAMPLES = {"sqlite": 40, "postgres": 10}


def test_incremental_engine_equals_sql_recompute(backend: str, cases: Cases) -> None:
    @settings(
        max_examples=EXAMPLES[backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        operations=st.lists(
            st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 10_000)),
            min_size=1,
            max_size=60,
        )
    )
    def check(operations: list[tuple[str, int]]) -> None:
        asyncio.run(_check(cases, operations))

    check()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_random_histories_equal_sql_recompute(cases: Cases, seed: int) -> None:
    rng = random.Random(seed)
    operations = [(rng.choice(OPERATIONS), rng.randrange(10_000)) for _ in range(400)]
    asyncio.run(_check(cases, operations))


def _change(
    position: int, table: str, new: dict[str, object], old: dict[str, object] | None = None
):  # type: ignore[no-untyped-def]

    op = Op.INSERT if old is None else Op.UPDATE
    return Change(position, table, op, old, new, NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("evening", "label"),
    [
        (datetime(2026, 11, 23, 22, 30, tzinfo=UTC), "ordinary night"),
        (datetime(2026, 3, 28, 22, 30, tzinfo=UTC), "clocks go forward at 02:00"),
        (datetime(2026, 10, 24, 21, 30, tzinfo=UTC), "clocks go back at 03:00"),
    ],
)
def test_day_figures_roll_over_at_local_midnight(evening: datetime, label: str) -> None:
    clock = ManualClock(evening)  # 23:30 in Berlin either way
    engine = MetricEngine(ZONE, clock)
    engine.finish_loading(0)
    registered = evening.replace(tzinfo=None)
    updates = engine.apply(
        [
            _change(1, "departments", {"id": 1, "code": "ED", "name": "Emergency"}),
            _change(
                2,
                "patients",
                {"id": 1, "department_id": 1, "status": "registered", "registered_at": registered},
            ),
            _change(
                3,
                "appointments",
                {"id": 1, "department_id": 1, "status": "scheduled", "scheduled_at": registered},
            ),
        ]
    )
    assert engine.value("patients_new_today", "ED") == 1
    assert {(u.metric, u.department, u.value) for u in updates} >= {
        ("patients_new_today", "ED", 1),
        ("appointments_today", None, 1),
    }
    clock.advance(timedelta(minutes=29))  # 23:59 local: still the same day
    assert engine.refresh_time() == []
    clock.advance(timedelta(minutes=2))  # 00:01 local on the next day
    rolled = {(u.metric, u.department): u.value for u in engine.refresh_time()}
    assert rolled == {
        ("patients_new_today", None): 0,
        ("patients_new_today", "ED"): 0,
        ("appointments_today", None): 0,
        ("appointments_today", "ED"): 0,
        ("appointments_scheduled_today", None): 0,
        ("appointments_scheduled_today", "ED"): 0,
    }, label
    assert engine.value("patients_total", "ED") == 1
    assert engine.refresh_time() == []


def test_changes_already_counted_are_skipped_and_versions_only_grow() -> None:
    engine = MetricEngine(ZONE, ManualClock(NOW))
    first = engine.finish_loading(0)
    department = _change(1, "departments", {"id": 1, "code": "ED", "name": "Emergency"})
    bed = {"id": 1, "room_id": 1, "status": "free"}
    room = _change(2, "rooms", {"id": 1, "department_id": 1, "number": "1"})
    updates = engine.apply([department, room, _change(3, "beds", bed)])
    assert engine.value("beds_free", "ED") == 1
    again = engine.apply([department, room, _change(3, "beds", bed)])  # replayed after a crash
    assert again == []
    assert engine.value("beds_free", "ED") == 1
    occupied = engine.apply([_change(4, "beds", {**bed, "status": "occupied"}, old=bed)])
    assert {(u.metric, u.value) for u in occupied if u.department == "ED"} >= {
        ("beds_occupied", 1),
        ("beds_free", 0),
        ("bed_occupancy_rate", 1.0),
        ("rooms_occupied", 1),
    }
    versions = [u.version for u in [*first, *updates, *occupied]]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


def test_a_new_engine_continues_above_the_old_versions() -> None:
    old = MetricEngine(ZONE, ManualClock(NOW))
    last = max(u.version for u in old.finish_loading(0))
    new = MetricEngine(ZONE, ManualClock(NOW))
    assert min(u.version for u in new.finish_loading(0)) > last


class FailsOnce:
    """A change source whose first read fails with an error nobody planned for."""

    def __init__(self, source: ChangeSource) -> None:
        self._source = source
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def batches(self) -> AsyncIterator[list[Change]]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("an error nobody planned for")
        return self._source.batches()


@pytest.mark.both_backends
async def test_the_feed_goes_on_after_an_unexpected_error(
    database_url: str, hospital: dict[str, int], writer: Write
) -> None:
    received: asyncio.Queue[MetricValue] = asyncio.Queue()

    async def listen(updates: list[MetricValue]) -> None:
        for update in updates:
            received.put_nowait(update)

    database = create_engine(database_url)
    try:
        slot = "slot_" + str(make_url(database_url).database).replace(".", "_").split("/")[-1]
        async with open_change_source(database_url, "metrics", slot=slot) as source:
            failing = FailsOnce(source)
            pipeline = MetricPipeline(MetricEngine(ZONE, ManualClock(NOW)), failing, database)  # type: ignore[arg-type]
            pipeline.add_listener(listen)
            async with pipeline:
                await register_patient(writer, hospital["ED"], "after the error")
                async with asyncio.timeout(10):
                    while True:
                        update = await received.get()
                        if (update.metric, update.department, update.value) == (
                            "patients_total",
                            "ED",
                            2,
                        ):
                            break
            assert failing.failed
            assert pipeline.status().last_error is None  # cleared by the batch that followed
    finally:
        await database.dispose()
