"""Starting and stopping the feed reader: change source, metric engine and pipeline.

The embedded default runs it for the life of the process; in a deployment the elected leader
runs it and a deposed one stops it. Every batch of changed values goes to the outbox (this
instance's and, through the Redis manager, every instance's sockets) and to Redis.

While Redis is down the leader's updates reach its own sockets only, and Redis keeps older
values. When it is back the leader writes every value to Redis and then asks the other
instances to resend current values to their sockets (`announce`): an instance whose own link
to Redis came back earlier has already resent, before those updates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from typing import Any, Protocol

import structlog
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.aio import BackgroundTasks
from livedash.changefeed import ChangeSource, open_change_source
from livedash.cluster.state import ValuesShared
from livedash.metrics.causes import Cause
from livedash.metrics.clock import Clock
from livedash.metrics.engine import MetricEngine, MetricValue
from livedash.metrics.history import HistoryRecorder
from livedash.metrics.pipeline import MetricPipeline
from livedash.observability.breaker import CircuitBreaker, State
from livedash.observability.status import ServiceStatus
from livedash.settings import Settings

log = structlog.get_logger(__name__)

FEED_CONSUMER = "metrics"


class Consumer(Protocol):
    """A subsystem fed by the metric stream where the feed is read (see livedash.services)."""

    async def on_updates(self, values: list[MetricValue]) -> None: ...

    async def while_leading(self) -> None: ...


class UpdateSink(Protocol):
    """Where the leader's changed values go: to every screen (realtime's outbox)."""

    def put(self, values: Iterable[MetricValue]) -> None:
        """Send these values, each once, as soon as the sink can."""
        ...

    def rotate(self) -> None:
        """Start a new stream epoch: a new leader cannot vouch for what was sent before."""
        ...


UpdateListener = Callable[[list[MetricValue]], Awaitable[None]]
"""Hears every batch of changed values while this instance reads the feed."""


class FeedRunner:
    """The change feed, engine and pipeline, while this instance reads the feed."""

    def __init__(
        self,
        settings: Settings,
        database: AsyncEngine,
        sink: UpdateSink,
        clock: Clock,
        state: ValuesShared | None = None,
        *,
        status: ServiceStatus | None = None,
        announce: Callable[[], Awaitable[None]] | None = None,
        listeners: Iterable[UpdateListener] = (),
    ) -> None:
        self._settings = settings
        self._database = database
        self._sink = sink
        self._clock = clock
        self._state = state
        self._listeners = list(listeners)
        self._leader_tasks: list[Callable[[], Awaitable[None]]] = []
        self._status = status
        self._announce = announce
        self._cache_was_closed = True
        self.pipeline: MetricPipeline | None = None
        self.source: ChangeSource | None = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._tasks = BackgroundTasks()

    def register(self, consumer: Consumer) -> None:
        """Give `consumer` every batch of changed values, and run its `while_leading` task,
        whenever this instance reads the feed (from the next start on)."""
        self._listeners.append(consumer.on_updates)
        self._leader_tasks.append(consumer.while_leading)

    def lead(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run `task` whenever this instance reads the feed (from the next start on); it is
        cancelled when the instance stops reading (a deposed leader)."""
        self._leader_tasks.append(task)

    async def start(self) -> None:
        async with self._lock:
            if self._stack is not None:
                return
            stack = AsyncExitStack()
            try:
                await self._start(stack)
            except BaseException:
                await stack.aclose()
                raise
            self._stack = stack

    async def _start(self, stack: AsyncExitStack) -> None:
        settings = self._settings
        source = await stack.enter_async_context(
            open_change_source(
                settings.database_url,
                FEED_CONSUMER,
                batch_size=settings.feed_batch_size,
                fallback_poll_seconds=settings.feed_fallback_poll_seconds,
                settle_seconds=settings.feed_settle_seconds,
                keep_rows=settings.feed_keep_rows,
                slot=settings.feed_slot,
                heartbeat_seconds=settings.feed_heartbeat_seconds,
            )
        )
        engine = MetricEngine(settings.zone, self._clock, version_floor=await self._version_floor())
        pipeline = MetricPipeline(
            engine,
            source,
            self._database,
            history=HistoryRecorder(settings.zone),
            time_refresh_seconds=settings.time_refresh_seconds,
            confirm_interval_seconds=settings.feed_confirm_interval_seconds,
            history_refresh_seconds=settings.history_refresh_seconds,
            database_breaker=self._status.database if self._status is not None else None,
        )
        # Shared state first: a follower's snapshot at a stream position must already hold
        # the values of every update up to it.
        if self._state is not None:

            async def share(updates: list[MetricValue]) -> None:
                await self._share(updates, engine.causes.of(updates))

            pipeline.add_listener(share)
        pipeline.add_listener(self._send)
        for listener in self._listeners:
            pipeline.add_listener(listener)
        self._sink.rotate()
        await stack.enter_async_context(pipeline)
        self.pipeline, self.source = pipeline, source
        await self._tell_health()
        stack.callback(self._forget)
        tasks = BackgroundTasks()
        stack.push_async_callback(tasks.close)
        if self._state is not None and self._state.rewrite_seconds is not None:
            tasks.spawn(
                self._share_periodically(pipeline, self._state.rewrite_seconds),
                name="livedash-share",
            )
        for lead in self._leader_tasks:
            tasks.spawn(_logged(lead), name=f"livedash-leading-{lead.__qualname__}")

    def _forget(self) -> None:
        self.pipeline, self.source = None, None

    async def stop(self, database_lost: bool = False) -> None:
        """Stop reading the feed; `database_lost`: because the database went away, which
        `database_up` then says while the engine can still publish it (the outbox sends it)."""
        if database_lost and self.pipeline is not None:
            await self.pipeline.set_system(database_up=False)
        async with self._lock:
            stack, self._stack = self._stack, None
            if stack is not None:
                await stack.aclose()

    def watch(self, status: ServiceStatus) -> None:
        """Keep `database_up` and `cache_up` equal to the breakers while this instance leads."""
        self._status = status
        self._cache_was_closed = self._cache_closed()

        def changed(_status: ServiceStatus) -> None:
            closed = self._cache_closed()
            returned = closed and not self._cache_was_closed
            self._cache_was_closed = closed
            self._spawn(self._status_changed(cache_returned=returned))

        status.on_change(changed)

    @property
    def _cache(self) -> CircuitBreaker | None:
        return self._status.cache if self._status is not None else None

    def _cache_closed(self) -> bool:
        return self._cache is None or self._cache.state is State.CLOSED

    async def _status_changed(self, *, cache_returned: bool) -> None:
        await self._tell_health()
        if cache_returned:
            await self._cache_returned()

    async def _cache_returned(self) -> None:
        pipeline = self.pipeline
        if pipeline is None or self._state is None:
            return  # not leading: the leader announces
        try:
            await self._share_everything(pipeline)
            if self._announce is not None:
                await self._announce()
        except (RedisError, OSError) as error:
            log.warning("resync_announce_failed", error=str(error))
            if self._cache is not None:
                self._cache.trip(error)
        else:
            log.info("resync_announced")

    def _spawn(self, work: Awaitable[None]) -> None:
        self._tasks.spawn(work)

    async def _tell_health(self) -> None:
        pipeline, status = self.pipeline, self._status
        if pipeline is None or status is None:
            return
        cache = status.cache
        await pipeline.set_system(
            database_up=status.database.state is State.CLOSED,
            cache_up=cache is None or cache.state is State.CLOSED,
        )

    async def _version_floor(self) -> int:
        if self._state is None:
            return 0
        try:
            return await self._state.version_floor() + 1
        except (RedisError, OSError) as error:
            log.warning("version_floor_unavailable", error=str(error))
            return 0

    async def _send(self, updates: list[MetricValue]) -> None:
        self._sink.put(updates)

    async def _share(self, updates: list[MetricValue], causes: Sequence[Cause]) -> None:
        assert self._state is not None
        breaker = self._cache
        if breaker is not None and not breaker.allow():
            return  # Redis is down: the prober tells when to write again
        try:
            await self._state.publish(updates, causes)
        except (RedisError, OSError) as error:
            # The outbox is about to send values Redis does not hold: a follower's snapshot
            # would miss them. Open now; the return rewrites everything and resyncs.
            log.warning("shared_state_write_failed", error=str(error))
            if breaker is not None:
                breaker.trip(error)
        else:
            if breaker is not None:
                breaker.success()

    async def _share_periodically(self, pipeline: MetricPipeline, seconds: float) -> None:
        assert self._state is not None
        while True:
            try:
                await self._share_everything(pipeline)
            except (RedisError, OSError) as error:
                log.warning("shared_state_write_failed", error=str(error))
            except Exception:  # never stop rewriting: the values would expire on followers
                log.exception("shared_state_write_failed_unexpectedly")
            await asyncio.sleep(seconds)

    async def _share_everything(self, pipeline: MetricPipeline) -> None:
        assert self._state is not None
        await self._state.publish(pipeline.engine.snapshot())
        await self._state.publish_departments(pipeline.engine.departments)

    async def feed_status(self) -> dict[str, Any]:
        """The slot's lag and WAL status where the source has a slot."""
        status = getattr(self.source, "slot_status", None)
        if status is None:
            return {}
        try:
            return dict(await status())
        except Exception as error:
            return {"error": str(error)}


async def _logged(lead: Callable[[], Awaitable[None]]) -> None:
    """Run a consumer's task; a failure is logged, and does not stop the feed."""
    try:
        await lead()
    except Exception:
        log.exception("leader_task_failed", task=lead.__qualname__)
