"""What the gateway reads: current values, departments and history series.

`SharedView` serves both modes. Where this process reads the feed (the embedded process, a
cluster's leader) it answers from its own engine. Elsewhere (a follower) it reads L1
(in-process, at most 1 s old), then L2 (Redis, written by the leader), then the database
(cache-aside). Reading from the database means counting the rows once, which is what a
follower does when no leader has written for longer than a tier's TTL or Redis is down; such
values carry version 0 ("not from the feed"), so any later update replaces them on the
screen. History series are cached the same way, for whoever serves them. The causes of a
value (what moved it) come from the engine's log where the feed is read, and from the lists
the leader writes to Redis elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.cluster.cache import CacheStats, LocalCache
from livedash.cluster.state import TIER_TTL_SECONDS, SharedValues
from livedash.errors import StoreError
from livedash.metrics.causes import CAUSES_KEPT, Cause, newest
from livedash.metrics.clock import Clock
from livedash.metrics.definitions import METRIC_NAMES, Tier
from livedash.metrics.engine import MetricEngine, MetricValue
from livedash.metrics.figures import HistoryFigures, Point
from livedash.metrics.pipeline import MetricPipeline, count_rows
from livedash.observability.breaker import CircuitBreaker

log = structlog.get_logger(__name__)

MetricKey = tuple[str, str | None]
L1_MAX_AGE_SECONDS = 1.0
PipelineRef = Callable[[], MetricPipeline | None]


class MetricView(Protocol):
    """The gateway's read side."""

    @property
    def stats(self) -> CacheStats | None:
        """Cache lookups by layer and result, where there is a cache."""
        ...

    async def departments(self) -> dict[str, int]:
        """Every department's code and id."""
        ...

    async def snapshot(
        self, metrics: Iterable[str], departments: Iterable[str | None], *, fresh: bool = False
    ) -> list[MetricValue]:
        """Current values of `metrics` for `departments` (None: the hospital).

        `fresh`: at least as new as every update sent so far (no in-process cache), for a
        subscription that follows with the updates after the stream's current position.
        """
        ...

    async def history(
        self,
        series: str,
        department: str | None,
        start: datetime,
        end: datetime,
        granularity: str,
        *,
        fresh: bool = False,
    ) -> list[Point]:
        """A stored series for `request_historical`.

        `fresh`: read past the caches, for a report that records the feed position its
        figures were computed at.
        """
        ...

    async def causes(self, metric: str, department: str | None) -> list[Cause]:
        """What moved a metric's value for a department (None: the hospital), newest first."""
        ...


class SharedView:
    """The one view: where this process reads the feed (the embedded process, a cluster's
    leader), its own engine; elsewhere L1, then Redis, then the database."""

    def __init__(
        self,
        database: AsyncEngine,
        state: SharedValues | None,
        zone: ZoneInfo,
        clock: Clock,
        *,
        leader_pipeline: PipelineRef,
        breaker: CircuitBreaker | None = None,
        cache_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._state = state
        self._zone = zone
        self._clock = clock
        self._leader_pipeline = leader_pipeline
        # The cache's circuit breaker: while open, Redis is not asked at all (a hung Redis
        # would cost its timeout on every request); failures and successes move it.
        self._breaker = breaker
        self.stats = CacheStats()
        self._values: LocalCache[MetricValue] = LocalCache(L1_MAX_AGE_SECONDS, clock=cache_clock)
        self._other: LocalCache[Any] = LocalCache(L1_MAX_AGE_SECONDS, clock=cache_clock)
        self._counting: asyncio.Lock = asyncio.Lock()
        self._counts_done = 0
        self._last_count: dict[MetricKey, MetricValue] = {}
        self._figures = HistoryFigures(None, zone)

    # -- departments ---------------------------------------------------------------------

    async def departments(self) -> dict[str, int]:
        pipeline = self._leader_pipeline()
        if pipeline is not None:
            return {code: ident for ident, code in pipeline.engine.departments.items()}
        cached = self._other.get("departments")
        if cached is not None:
            self.stats.hit("l1")
            return dict(cached)
        self.stats.miss("l1")
        found = await self._redis(lambda state: state.departments())
        if found is not None:
            self.stats.hit("l2")
        else:
            self.stats.miss("l2")
            found = await self._departments_from_database()
        self._other.put("departments", found)
        return dict(found)

    async def _departments_from_database(self) -> dict[str, int]:
        try:
            async with self._database.connect() as connection:
                rows = (await connection.execute(text("SELECT id, code FROM departments"))).all()
        except SQLAlchemyError as error:
            raise StoreError("the database is not reachable") from error
        return {str(code): int(ident) for ident, code in rows}

    # -- values --------------------------------------------------------------------------

    async def snapshot(
        self, metrics: Iterable[str], departments: Iterable[str | None], *, fresh: bool = False
    ) -> list[MetricValue]:
        wanted_metrics, wanted_departments = list(metrics), list(departments)
        pipeline = self._leader_pipeline()
        if pipeline is not None:
            return pipeline.engine.snapshot(wanted_metrics, wanted_departments)
        keys = [(m, d) for m in wanted_metrics for d in wanted_departments]
        found: dict[MetricKey, MetricValue] = {}
        missing: list[MetricKey] = []
        for key in keys:
            cached = None if fresh else self._values.get(key)
            if cached is None:
                missing.append(key)
            else:
                found[key] = cached
        if not fresh:  # a fresh read does not look at L1
            self.stats.hit("l1", len(found))
            self.stats.miss("l1", len(missing))
        if missing:
            stored = await self._redis(lambda state: state.read(missing)) or {}
            self.stats.hit("l2", len(stored))
            still = [key for key in missing if key not in stored]
            self.stats.miss("l2", len(still))
            if still:
                stored.update(await self._count_from_database(still))
            for key, value in stored.items():
                self._values.put(key, value)
            found.update(stored)
        return [found[key] for key in keys if key in found]

    async def _count_from_database(self, keys: list[MetricKey]) -> dict[MetricKey, MetricValue]:
        # One count at a time: a burst of requests waits for it and takes its result. Only a
        # count that began after this request asked is reused; L1 may hold older values from
        # Redis, which a `fresh` request must not get.
        asked_after = self._counts_done
        async with self._counting:
            if self._counts_done == asked_after:
                self._last_count = await self._count_rows()
                self._counts_done += 1
                self.stats.counts["database_counts"] += 1
                for key, value in self._last_count.items():
                    self._values.put(key, value)
            counted = self._last_count
        return {key: counted[key] for key in keys if key in counted}

    async def _count_rows(self) -> dict[MetricKey, MetricValue]:
        """Every value counted from the rows in one snapshot, with version 0."""
        engine = MetricEngine(self._zone, self._clock)
        try:
            async with self._database.connect() as connection, connection.begin():
                if connection.dialect.name == "postgresql":  # every table as of one moment
                    await connection.execute(
                        text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    )
                await count_rows(connection, engine)
                engine.finish_loading(0)
                # The historical tier is read from the roll-ups, as the leader does.
                figures = await self._figures.compute(connection, engine.now(), engine.departments)
                engine.set_historical(figures)
        except SQLAlchemyError as error:
            raise StoreError("the database is not reachable") from error
        return {
            (value.metric, value.department): replace(value, version=0)
            for value in engine.snapshot(METRIC_NAMES)
        }

    # -- history -------------------------------------------------------------------------

    async def history(
        self,
        series: str,
        department: str | None,
        start: datetime,
        end: datetime,
        granularity: str,
        *,
        fresh: bool = False,
    ) -> list[Point]:
        if fresh:
            return await self._history_from_database(series, department, start, end, granularity)
        key = f"h:{series}:{department or ''}:{start.isoformat()}:{end.isoformat()}:{granularity}"
        cached = self._other.get(key)
        if cached is not None:
            self.stats.hit("l1")
            return list(cached)
        self.stats.miss("l1")
        stored = await self._redis(lambda state: state.get_json(key))
        if stored is not None:
            self.stats.hit("l2")
            points = [
                Point(start=datetime.fromisoformat(p["start"]), value=p["value"], peak=p["peak"])
                for p in stored
            ]
        else:
            self.stats.miss("l2")
            points = await self._history_from_database(series, department, start, end, granularity)
            wire = [
                {"start": p.start.isoformat(), "value": p.value, "peak": p.peak} for p in points
            ]
            ttl = TIER_TTL_SECONDS[Tier.HISTORICAL]
            await self._redis(lambda state: state.put_json(key, wire, ttl))
        self._other.put(key, points)
        return points

    async def _history_from_database(
        self, series: str, department: str | None, start: datetime, end: datetime, granularity: str
    ) -> list[Point]:
        self.stats.counts["database_series"] += 1
        pipeline = self._leader_pipeline()
        if pipeline is not None:  # includes the roll-ups not yet written
            department_id = pipeline.engine.department_id(department)
            return await pipeline.history_series(series, department_id, start, end, granularity)
        # An unknown department is a KeyError, as on the leader (never the hospital's series).
        department_id = None if department is None else (await self.departments())[department]
        try:
            async with self._database.connect() as connection:
                return await self._figures.series(
                    connection, series, department_id, start, end, granularity
                )
        except SQLAlchemyError as error:
            raise StoreError("the database is not reachable") from error

    # -- causes --------------------------------------------------------------------------

    async def causes(self, metric: str, department: str | None) -> list[Cause]:
        pipeline = self._leader_pipeline()
        if pipeline is not None:
            own = pipeline.engine.causes.recent(metric, department)
            if self._state is None or len(own) >= CAUSES_KEPT:
                return own
            # A new leader's log starts empty: its predecessors' causes are in Redis (when
            # Redis is out of reach, its own are all it has).
            shared = await self._redis(lambda state: state.causes(metric, department))
            return newest(shared or (), own)
        if self._state is None:
            return []  # no leader to ask: nothing has been published
        found = await self._redis(lambda state: state.causes(metric, department))
        if found is None:
            raise StoreError("the shared cache is not reachable")
        return list(found)

    # -- Redis ---------------------------------------------------------------------------

    async def _redis(self, call: Callable[[SharedValues], Any]) -> Any:
        """`call`'s result, or None when there is no Redis or it fails (then: a cache miss)."""
        breaker = self._breaker
        if self._state is None or (breaker is not None and not breaker.allow()):
            return None
        try:
            result = await call(self._state)
        except (RedisError, OSError) as error:
            self.stats.counts["l2_errors"] += 1
            if breaker is not None:
                breaker.failure(error)
            return None
        if breaker is not None:
            breaker.success()
        return result
