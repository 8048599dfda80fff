"""The pipeline: change source -> metric engine -> listeners, then confirm the position.

At start-up the engine counts every row once, in one read transaction that also tells which
feed position it reflects; from then on only changes are applied. A position is confirmed
(periodically, and on shutdown) only after its updates were handed to every listener, so a
crash replays a few changes rather than skipping any; the engine ignores the replayed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from livedash.aio import cancel_and_wait
from livedash.changefeed import Change, ChangeSource
from livedash.changefeed.rows import decode_row
from livedash.errors import ChangeFeedError
from livedash.metrics.engine import COUNTED_TABLES, MetricEngine, MetricValue
from livedash.metrics.figures import HistoryFigures, Point
from livedash.metrics.history import HistoryRecorder
from livedash.observability.breaker import CircuitBreaker

log = structlog.get_logger(__name__)

Listener = Callable[[list[MetricValue]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    """What health checks report about the feed."""

    running: bool
    position: int
    last_change_at: datetime | None
    last_error: str | None


async def count_rows(
    connection: AsyncConnection, engine: MetricEngine, history: HistoryRecorder | None = None
) -> None:
    """Count every row of the counted tables into `engine` (and `history`), in one read."""
    for table in COUNTED_TABLES:
        result = await connection.stream(text(f'SELECT * FROM "{table}"'))
        async for partition in result.mappings().partitions(1000):
            for row in partition:
                decoded = decode_row(table, row)
                engine.load(table, decoded)
                if history is not None:
                    history.load(table, decoded)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("changefeed_retry", attempt=state.attempt_number, error=str(error))


class MetricPipeline:
    """Runs the engine from a change source for the lifetime of the service."""

    def __init__(
        self,
        engine: MetricEngine,
        source: ChangeSource,
        database: AsyncEngine,
        *,
        history: HistoryRecorder | None = None,
        time_refresh_seconds: float = 5.0,
        confirm_interval_seconds: float = 0.5,
        history_refresh_seconds: float = 60.0,
        database_breaker: CircuitBreaker | None = None,
    ) -> None:
        self.engine = engine
        self._source = source
        self._database = database
        self._time_refresh_seconds = time_refresh_seconds
        self._confirm_interval = confirm_interval_seconds
        self._history_refresh_seconds = history_refresh_seconds
        self._confirmed = 0
        self.history = history
        self._figures = HistoryFigures(history, engine.zone) if history is not None else None
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._last_change_at: datetime | None = None
        self.batch_committed_at: datetime | None = None
        """While a batch from the feed is handed to the listeners: its first change's commit
        time (naive UTC), from which a sink times the values' way out; None otherwise."""
        self._last_error: str | None = None
        self._running = False
        self._history_from_rows = False
        self._breaker = database_breaker

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` with every batch of changed values, in order."""
        self._listeners.append(listener)

    def status(self) -> PipelineStatus:
        """The feed's state, for health checks."""
        return PipelineStatus(
            self._running, self.engine.position, self._last_change_at, self._last_error
        )

    async def __aenter__(self) -> MetricPipeline:
        await self.rebuild()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._follow(), name="livedash-feed"),
            asyncio.create_task(self._refresh_time(), name="livedash-clock"),
            asyncio.create_task(self._confirm_periodically(), name="livedash-confirm"),
        ]
        if self.history is not None:
            self._tasks.append(
                asyncio.create_task(self._refresh_history(), name="livedash-history")
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await cancel_and_wait(task)
        with contextlib.suppress(SQLAlchemyError, ChangeFeedError, OSError):
            await self.confirm()

    async def rebuild(self) -> None:
        """Count every row once, at the feed position the same read transaction sees.

        The roll-ups are stored, so they are built from the rows only on the very first start
        (nothing confirmed yet); afterwards they resume from the stored position.
        """
        confirmed = await self._source.confirmed_position()
        self._confirmed = confirmed
        history = self.history
        build_history = history is not None and confirmed == 0
        async with self._database.connect() as connection, connection.begin():
            position = await self._source.position_in(connection)
            await count_rows(connection, self.engine, history if build_history else None)
        if history is not None:
            history.position = position if build_history else confirmed
            self._history_from_rows = build_history
        updates = self.engine.finish_loading(position)
        log.info("metrics_rebuilt", position=position, values=len(updates))
        self._observe_occupancy(updates, datetime.now(UTC).replace(tzinfo=None))
        await self._notify(updates)
        await self.refresh_history()

    async def _follow(self) -> None:
        # Any error is retried: a feed task that died of an unexpected one would leave a
        # leader that reads nothing, silently.
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
            before_sleep=_log_retry,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    await self._follow_once()
                except (SQLAlchemyError, ChangeFeedError, OSError) as error:
                    self._last_error = str(error)
                    if self._breaker is not None:
                        self._breaker.failure(error)
                    await self.set_system(database_up=False)
                    raise
                except Exception as error:
                    self._last_error = str(error) or type(error).__name__
                    log.exception("changefeed_failed_unexpectedly")
                    raise

    async def _follow_once(self) -> None:
        self._confirmed = max(self._confirmed, await self._source.confirmed_position())
        if self._breaker is not None:
            self._breaker.success()
        await self.set_system(database_up=True)
        async for delivered in self._source.batches():
            updates = self._apply(delivered)
            applied_at = datetime.now(UTC).replace(tzinfo=None)
            self._last_change_at = delivered[-1].committed_at
            self._last_error = None
            self._observe_occupancy(updates, delivered[-1].committed_at)
            lag = max((applied_at - delivered[-1].committed_at).total_seconds(), 0.0)
            updates += self.engine.set_system(
                replace(self.engine.system, feed_lag_seconds=round(lag, 1))
            )
            self.batch_committed_at = delivered[0].committed_at
            try:
                await self._notify(updates)
            finally:
                self.batch_committed_at = None

    def _apply(self, delivered: list[Change]) -> list[MetricValue]:
        """Count a delivered batch into the engine and the roll-ups; both reach its position.

        The two positions differ only after a restart, while the roll-ups (stored with the
        confirmed position) catch up with the engine (counted from the rows at a later one).
        """
        fresh = [c for c in delivered if not self._source.counted_at_start(c)]
        last = delivered[-1].position
        if self.history is not None:
            self.history.apply(fresh if self._history_from_rows else delivered)
            self.history.position = max(self.history.position, last)
        updates = self.engine.apply(fresh)
        self.engine.position = max(self.engine.position, last)
        return updates

    def _applied(self) -> int:
        """The position up to which both the engine and the roll-ups have counted."""
        if self.history is None:
            return self.engine.position
        return min(self.engine.position, self.history.position)

    def _observe_occupancy(self, updates: list[MetricValue], at: datetime) -> None:
        if self.history is None:
            return
        for update in updates:
            if update.metric == "bed_occupancy_rate" and isinstance(update.value, float):
                self.history.observe_occupancy(update.department_id, update.value, at)

    async def set_system(self, **changes: Any) -> None:
        """Record the service's own health (`database_up`, `cache_up`, ...); publish changes."""
        await self._notify(self.engine.set_system(replace(self.engine.system, **changes)))

    async def confirm(self) -> None:
        """Store the applied position (and the roll-ups up to it), if it moved."""
        history = self.history
        position = self._applied()
        if position <= self._confirmed:
            return
        if self._history_from_rows and not self._source.start_settled():
            return
        if history is not None:
            history.seal()  # the deltas up to `position`, and no later ones
        committed = False
        try:
            await self._source.confirm(
                position, also=history.flush if history is not None else None
            )
            committed = True
            self._confirmed = position
        finally:
            if history is not None:
                history.settle(committed=committed)

    async def refresh_history(self) -> None:
        """Recompute the historical tier's growth and trend figures from the roll-ups."""
        if self._figures is None:
            return
        async with self._database.connect() as connection:
            figures = await self._figures.compute(
                connection, self.engine.now(), self.engine.departments
            )
        await self._notify(self.engine.set_historical(figures))

    async def history_series(
        self, series: str, department: int | None, start: datetime, end: datetime, granularity: str
    ) -> list[Point]:
        """A stored series for `request_historical`."""
        if self._figures is None:
            return []
        async with self._database.connect() as connection:
            return await self._figures.series(
                connection, series, department, start, end, granularity
            )

    async def _refresh_history(self) -> None:
        while True:
            await asyncio.sleep(self._history_refresh_seconds)
            try:
                await self.refresh_history()
            except (SQLAlchemyError, OSError) as error:
                log.warning("history_refresh_failed", error=str(error))

    async def _confirm_periodically(self) -> None:
        # Storing the position is a write transaction that competes with the hospital's own
        # writers; once per interval is enough, since replaying a few changes is harmless.
        while True:
            await asyncio.sleep(self._confirm_interval)
            try:
                await self.confirm()
            except (SQLAlchemyError, ChangeFeedError, OSError) as error:
                log.warning("changefeed_confirm_failed", error=str(error))

    async def _refresh_time(self) -> None:
        while True:
            await asyncio.sleep(self._time_refresh_seconds)
            await self._notify(self.engine.refresh_time())

    async def _notify(self, updates: list[MetricValue]) -> None:
        if not updates:
            return
        for listener in self._listeners:
            try:
                await listener(updates)
            except Exception:
                # One broken listener must not stop the feed for the others.
                log.exception("metrics_listener_failed", listener=repr(listener))
