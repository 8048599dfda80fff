"""The historical tier: roll-ups equal a recount by hour, survive restarts exactly, and the
growth, trend and occupancy figures are right."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from livedash.changefeed.sqlite import SqliteChangeFeed
from livedash.metrics.clock import ManualClock
from livedash.metrics.engine import MetricEngine
from livedash.metrics.figures import HistoryFigures
from livedash.metrics.history import HistoryRecorder
from livedash.metrics.pipeline import MetricPipeline
from livedash.store.engine import create_engine
from tests.test_metrics import NOW, OPERATIONS, ZONE, apply_operation, template  # noqa: F401

Rollups = dict[tuple[str, int, datetime], int]


def _hour(value: str | None) -> datetime | None:
    """The UTC start of the Berlin hour holding a stored timestamp (written independently)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value).replace(tzinfo=UTC).astimezone(ZONE)
    return moment.replace(minute=0, second=0, microsecond=0).astimezone(UTC).replace(tzinfo=None)


def recount(database: Path) -> Rollups:
    """Every count series by (series, department or 0, hour), straight from the rows."""
    totals: Counter[tuple[str, int, datetime]] = Counter()
    queries = {
        "admissions": "SELECT department_id, admitted_at, 1 FROM admissions",
        "discharges": "SELECT department_id, discharged_at, 1 FROM admissions",
        "emergency_arrivals": "SELECT department_id, registered_at, 1 FROM patients "
        "WHERE emergency",
        "appointments_completed": "SELECT department_id, scheduled_at, 1 FROM appointments "
        "WHERE status = 'completed'",
        "revenue": "SELECT department_id, paid_at, amount_cents FROM payments",
    }
    with sqlite3.connect(database) as connection:
        for series, sql in queries.items():
            for department, moment, amount in connection.execute(sql):
                hour = _hour(moment)
                if hour is None:
                    continue
                totals[series, 0, hour] += amount
                if department:
                    totals[series, department, hour] += amount
    return {key: amount for key, amount in totals.items() if amount}


def stored(database: Path) -> Rollups:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT series, department_id, hour_start, amount FROM metric_rollups "
            "WHERE series <> 'occupancy' AND amount <> 0"
        ).fetchall()
    return {(s, d, datetime.fromisoformat(h)): a for s, d, h, a in rows}


async def _run(database: Path, operations: list[tuple[str, int]], *, crash_at: int) -> None:
    """Write, follow and confirm like the service; "crash" once (losing what was not stored)
    and restart from the stored position; the roll-ups must equal a recount."""
    url = f"sqlite+aiosqlite:///{database}"
    clock = ManualClock(NOW)
    with sqlite3.connect(database, isolation_level=None) as writer:
        for number, (kind, seed) in enumerate(operations):
            apply_operation(writer, kind, seed)
            if number in (len(operations) // 3, crash_at, len(operations) - 1):
                database_engine = create_engine(url)
                async with SqliteChangeFeed(url, "metrics", batch_size=5) as feed:
                    pipeline = MetricPipeline(
                        MetricEngine(ZONE, clock),
                        feed,
                        database_engine,
                        history=HistoryRecorder(ZONE),
                    )
                    await pipeline.rebuild()
                    after = await feed.confirmed_position()
                    while True:
                        batch, last = await feed.read_after(after)
                        if last == after:
                            break
                        assert pipeline.history is not None
                        pipeline.history.apply(batch)
                        pipeline.engine.apply(batch)
                        after = last
                    if number != crash_at:
                        await pipeline.confirm()
                await database_engine.dispose()


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_rollups_equal_a_recount_across_restarts_and_a_crash(
    template: Path,  # noqa: F811
    tmp_path: Path,
    seed: int,
) -> None:
    rng = random.Random(seed)
    operations = [(rng.choice(OPERATIONS), rng.randrange(10_000)) for _ in range(300)]
    database = tmp_path / "history.db"
    shutil.copy(template, database)
    asyncio.run(_run(database, operations, crash_at=len(operations) // 2))
    truth = recount(database)
    assert truth, "the operations should have produced some history"
    assert stored(database) == truth


def test_first_start_builds_the_rollups_from_the_rows_once(
    template: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    database = tmp_path / "history.db"
    shutil.copy(template, database)
    rng = random.Random(9)
    with sqlite3.connect(database, isolation_level=None) as writer:
        for _ in range(200):
            apply_operation(writer, rng.choice(OPERATIONS), rng.randrange(10_000))
        writer.execute("DELETE FROM change_log")  # rows that predate any captured change
    asyncio.run(_run(database, [("department", 1)], crash_at=-1))
    assert stored(database) == recount(database)


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
