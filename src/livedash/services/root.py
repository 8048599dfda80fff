"""The main process's composition root: `open_services` and what it builds (the package's
docstring says how)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.alerts.anomaly_watch import AnomalyWatch
from livedash.alerts.lifecycle import AlertDesk
from livedash.alerts.rulebook import RuleBook
from livedash.alerts.service import AlertService
from livedash.alerts.silences import Silencer
from livedash.auth.ratelimit import RateLimiter, shared_storage
from livedash.auth.sessions import SessionService
from livedash.auth.throttle import LoginLimits
from livedash.auth.users import Authenticator
from livedash.cluster.instances import InstanceBoard
from livedash.cluster.leader import LeaderElection
from livedash.cluster.local_bus import BusHub, Message
from livedash.cluster.mirror import BusPublisher, departments_message, values_message
from livedash.cluster.probes import FeedLagReader
from livedash.cluster.runner import Consumer, FeedRunner
from livedash.cluster.shared_redis import SharedRedis
from livedash.cluster.state import SharedMetricState, ValuesShared
from livedash.cluster.view import MetricView, SharedView
from livedash.errors import ConfigurationError
from livedash.ingest import Ingest
from livedash.metrics.clock import Clock, SystemClock
from livedash.notifications.delivery import DeliveryWorker
from livedash.notifications.dispatcher import Dispatcher
from livedash.notifications.inbox import Inbox
from livedash.observability.readiness import Readiness
from livedash.observability.status import ServiceStatus
from livedash.observability.telemetry import Telemetry
from livedash.observability.upstream import UpstreamPoller
from livedash.realtime.bus_manager import BusManager
from livedash.realtime.fanout import SocketIOFanOut
from livedash.realtime.gateway import Gateway
from livedash.realtime.handoff import HandOff
from livedash.realtime.limiter import SocketLimiter
from livedash.realtime.outbox import Outbox, RoomScreens
from livedash.realtime.redis_manager import CappedRedisManager
from livedash.realtime.server import GatewayServer
from livedash.realtime.shared_limits import LimitCalls
from livedash.realtime.socket_workers import SocketWorkers
from livedash.realtime.stream import (
    Entry,
    MemoryHistory,
    RedisHistory,
    UpdateHistory,
    entries_message,
)
from livedash.reports.scheduler import ReportScheduler
from livedash.reports.schedules import ScheduleBook
from livedash.reports.service import ReportService
from livedash.services.alerting import build_alerting
from livedash.services.health import build_health
from livedash.services.reporting import build_reports
from livedash.settings import Settings
from livedash.store.engine import create_engine, is_sqlite, write_locking

log = structlog.get_logger(__name__)

START_TIMEOUT_SECONDS = 30.0
SOCKETIO_CHANNEL = "livedash-socketio"


ConsumerFactory = Callable[["Services"], Consumer]
"""Builds a consumer from the process's services (called once, before the feed starts)."""


@dataclass(frozen=True, slots=True)
class Services:
    """Every shared resource of this process; built by `open_services`."""

    settings: Settings
    clock: Clock
    database: AsyncEngine
    redis: SharedRedis | None
    status: ServiceStatus
    telemetry: Telemetry
    history: UpdateHistory
    outbox: Outbox
    runner: FeedRunner
    view: MetricView
    election: LeaderElection | None
    authenticator: Authenticator
    sessions: SessionService
    login_limits: LoginLimits
    rest_limiter: RateLimiter
    ingest: Ingest
    gateway: Gateway
    instances: InstanceBoard
    alerts: AlertService
    alert_desk: AlertDesk
    silencer: Silencer
    dispatcher: Dispatcher
    deliveries: DeliveryWorker
    anomalies: AnomalyWatch
    rulebook: RuleBook
    inbox: Inbox
    reports: ReportService
    report_schedules: ScheduleBook
    report_scheduler: ReportScheduler
    readiness: Readiness
    feed_lag: FeedLagReader
    upstream: UpstreamPoller | None
    socket_workers: SocketWorkers | None = None
    """This process's socket workers, where it has some (started once the feed runs)."""

    @property
    def leading(self) -> bool:
        """Whether this instance reads the change feed now."""
        return self.runner.pipeline is not None and (self.election is None or self.election.leading)


@asynccontextmanager
async def open_services(
    settings: Settings,
    server: GatewayServer,
    *,
    clock: Clock | None = None,
    consumers: Sequence[ConsumerFactory] = (),
    hand_off: HandOff | None = None,
) -> AsyncIterator[Services]:
    """The services of the mode `settings` name, serving sockets on `server`, open until exit.

    `hand_off`: where the server gives new WebSocket connections to socket workers, which
    are started here when `settings.socket_workers` asks for them."""
    _check_workers(settings, hand_off)
    async with AsyncExitStack() as stack:
        services = await _build(stack, settings, server, clock or SystemClock(), hand_off)
        for build in consumers:
            services.runner.register(build(services))
        if services.election is None:
            # Embedded: this process reads the feed for as long as it runs.
            await services.runner.start()
            stack.push_async_callback(services.runner.stop)
            if services.socket_workers is not None:
                # After the feed: a worker starts from the engine's values.
                await stack.enter_async_context(services.socket_workers)
        else:
            await stack.enter_async_context(services.election)
            # Serve once it is known who reads the feed (and the leader has counted), so the
            # first snapshots come from the engine; a database that is down delays this by
            # at most the start timeout, then the service runs degraded.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(START_TIMEOUT_SECONDS):
                    await services.election.decided.wait()
        # Stops the Redis manager's listener with the app, not after Redis has gone.
        stack.push_async_callback(server.shutdown)
        # Unwound first: clients are handed over before the feed stops (and stores its
        # position). The server may call it earlier, before it closes the connections.
        stack.push_async_callback(services.gateway.drain)
        await services.readiness.refresh()  # the first answer of /health/ready is a verdict
        yield services


def _broadcast_entries(hub: BusHub, epoch: str, entries: list[Entry]) -> None:
    hub.broadcast(entries_message(epoch, entries))


def _check_workers(settings: Settings, hand_off: HandOff | None) -> None:
    # Where they may run is checked with the settings (the embedded default, without TLS).
    if settings.socket_workers and hand_off is None:
        raise ConfigurationError("socket workers need the service's own server (livedash serve)")


def _worker_sync(runner: FeedRunner, history: MemoryHistory) -> Callable[[], list[Message]]:
    """What a socket worker is sent first: every value and cause, the departments, the
    update history."""

    def sync() -> list[Message]:
        messages: list[Message] = []
        pipeline = runner.pipeline
        if pipeline is not None:
            engine = pipeline.engine
            messages.append(values_message(engine.snapshot(), engine.causes.every()))
            messages.append(departments_message(engine.departments))
        messages.append(entries_message(history.epoch, history.kept()))
        return messages

    return sync


async def _build(
    stack: AsyncExitStack,
    settings: Settings,
    server: GatewayServer,
    clock: Clock,
    hand_off: HandOff | None = None,
) -> Services:
    """What both modes share; `redis` and the election make the difference."""
    embedded = is_sqlite(settings.database_url)
    status = ServiceStatus(with_cache=settings.redis_url is not None)
    redis = None
    if settings.redis_url is not None and status.cache is not None:
        redis = await stack.enter_async_context(SharedRedis(settings.redis_url, status.cache))
    elif not embedded:
        log.warning(
            "no_redis_configured",
            detail="one instance only: without LIVEDASH_REDIS_URL the clients of other "
            "instances would get no live updates",
        )
    database = create_engine(settings.database_url, pool_pre_ping=True)
    stack.push_async_callback(database.dispose)
    pool = redis.pool if redis is not None else None
    storage = shared_storage(settings.redis_url)
    rest_limiter = await stack.enter_async_context(
        RateLimiter(
            settings.rate_limit_rest,
            namespace="rest",
            storage_uri=storage,
            connection_pool=pool,
            per_unit=settings.rate_limit_rest_per_socket,
        )
    )
    login_limits = await stack.enter_async_context(LoginLimits(storage, pool))
    ingest = await stack.enter_async_context(Ingest(settings, database, pool))

    def wall_seconds() -> float:
        # The update history ages by the service's clock too, so that simulated time
        # (a ManualClock in tests) moves both the metrics and the history's age limit.
        return clock.now().timestamp()

    history: UpdateHistory
    manager: CappedRedisManager | None = None
    state: SharedMetricState | None = None
    shared: ValuesShared | None = None
    hub: BusHub | None = None
    limiter = SocketLimiter(settings, pool)
    if redis is None:
        history = memory = MemoryHistory(
            settings.history_size, settings.history_max_age_seconds, clock=wall_seconds
        )
        if settings.socket_workers:
            # The bus to the socket workers is to them what Redis is between instances.
            hub = BusHub()
            stack.push_async_callback(hub.aclose)
            shared = BusPublisher(hub)
            memory.on_append = partial(_broadcast_entries, hub)
    else:
        state = SharedMetricState(redis.client)
        history = RedisHistory(
            redis.client,
            settings.history_size,
            settings.history_max_age_seconds,
            breaker=redis.breaker,
            clock=wall_seconds,
        )
        # With Redis, an emit to a room reaches that room's sockets on every instance.
        manager = CappedRedisManager(redis.subscriber, channel=SOCKETIO_CHANNEL)
        server.use_manager(manager)
        shared = state
    breaker = redis.breaker if redis is not None else None
    fanout = SocketIOFanOut(server, breaker=breaker)
    telemetry = Telemetry()
    outbox = await stack.enter_async_context(
        Outbox(
            fanout,
            window=settings.coalesce_window_seconds,
            history=history,
            telemetry=telemetry,
        )
    )
    runner = FeedRunner(
        settings,
        database,
        outbox,
        clock,
        shared,
        status=status,
        announce=manager.announce_resync if manager is not None else None,
    )
    runner.watch(status)

    def batch_committed_at() -> datetime | None:
        pipeline = runner.pipeline
        return pipeline.batch_committed_at if pipeline is not None else None

    outbox.commit_time = batch_committed_at
    view = SharedView(
        database,
        state,
        settings.zone,
        clock,
        leader_pipeline=lambda: runner.pipeline,
        breaker=breaker,
    )
    election = None
    if not embedded:
        election = LeaderElection(
            settings.database_url,
            settings.leader_lock_key,
            poll_seconds=settings.leader_poll_seconds,
            on_elected=runner.start,
            on_deposed=runner.stop,
            breaker=status.database,
            name=f"{settings.host}:{settings.port}",
        )
    authenticator = Authenticator(settings, database)
    gateway = await stack.enter_async_context(
        Gateway(
            settings,
            server,
            fanout,
            view=view,
            authenticator=authenticator,
            status=status,
            history=history,
            limiter=limiter,
        )
    )
    socket_workers = None
    if hub is not None:
        assert hand_off is not None  # `_check_workers`
        assert limiter.shared is not None  # no Redis: the embedded default
        bus_manager = BusManager(hub.broadcast)
        server.use_manager(bus_manager)
        socket_workers = SocketWorkers(
            settings,
            hand_off,
            hub=hub,
            sync=_worker_sync(runner, memory),
            manager=bus_manager,
            limits=LimitCalls(limiter.shared),
        )
        gateway.count_workers(socket_workers.reports.values)
    instances, readiness, feed_lag, upstream = await build_health(
        stack, settings, database, redis, status, runner, election, gateway, clock, socket_workers
    )
    screens = RoomScreens(fanout)
    alerting = await build_alerting(stack, settings, database, runner, screens, clock)
    reports, report_schedules, report_scheduler = build_reports(
        stack, settings, database, view, runner, clock, telemetry
    )
    if manager is not None and breaker is not None:
        # Messages Redis did not carry to (or from) this instance: resend current values.
        manager.on_resync(gateway.resync)
        manager.on_publish_failed(breaker.trip)
    return Services(
        settings=settings,
        clock=clock,
        database=database,
        redis=redis,
        status=status,
        telemetry=telemetry,
        history=history,
        outbox=outbox,
        runner=runner,
        view=view,
        election=election,
        authenticator=authenticator,
        sessions=SessionService(settings, write_locking(database), reader=database),
        login_limits=login_limits,
        rest_limiter=rest_limiter,
        ingest=ingest,
        gateway=gateway,
        instances=instances,
        alerts=alerting.alerts,
        alert_desk=alerting.alert_desk,
        inbox=Inbox(database),
        silencer=alerting.silencer,
        dispatcher=alerting.dispatcher,
        deliveries=alerting.deliveries,
        anomalies=alerting.anomalies,
        rulebook=alerting.rulebook,
        reports=reports,
        report_schedules=report_schedules,
        report_scheduler=report_scheduler,
        readiness=readiness,
        feed_lag=feed_lag,
        upstream=upstream,
        socket_workers=socket_workers,
    )
