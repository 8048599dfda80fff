"""The composition root: every shared resource of one process, built once and closed once.

`open_services(settings, server)` builds a `Services` for the deployment mode the database
URL names, and closes everything in reverse order when it exits:

- **embedded** (`sqlite://`): this process reads the feed for its whole life.
- **cluster** (`postgresql://`): the instance that holds the leader lock reads the feed.

Redis, when configured (`LIVEDASH_REDIS_URL`), shares values, the update history, fan-out and
rate limits between instances; without it they stay in this process.

Every component takes the instances it uses (the engine, `SharedRedis` or its pool, the
breakers), never a URL. The process has one `AsyncEngine`; its writers take
`write_locking(engine)`, the same pool. Two things keep connections of their own, on
purpose: the change feed (a SQLite reader and writer that never wait for the service's
pool; on PostgreSQL the replication slot's connection) and the leader election (its
advisory lock lives exactly as long as its connection).

Consumers of the metric stream (alerts, notifications, reports) register through `Consumer`:
they hear every batch of changed values while this instance reads the feed, and run a task
while it leads. They are built from `Services`, and reach the rest only through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import cast

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.aio import BackgroundTasks
from livedash.alerts.anomaly_watch import AnomalyWatch
from livedash.alerts.config import AlertConfig, parse_alert_config, scaled
from livedash.alerts.lifecycle import AlertDesk
from livedash.alerts.rulebook import RuleBook
from livedash.alerts.rules import read_rules_file
from livedash.alerts.service import AlertService
from livedash.alerts.silences import Silencer
from livedash.auth.ratelimit import RateLimiter, shared_storage
from livedash.auth.sessions import SessionService
from livedash.auth.throttle import LoginLimits
from livedash.auth.users import Authenticator
from livedash.changefeed.positions import load_position
from livedash.cluster.instances import InstanceBoard
from livedash.cluster.leader import LeaderElection
from livedash.cluster.local_bus import REPLY, BusHub, BusLink, Calls, Message
from livedash.cluster.mirror import (
    BusPublisher,
    MirroredState,
    departments_message,
    values_message,
)
from livedash.cluster.probes import FeedLagReader, database_probe, feed_probe, job_queue_probe
from livedash.cluster.runner import FEED_CONSUMER, Consumer, FeedRunner
from livedash.cluster.shared_redis import SharedRedis
from livedash.cluster.state import SharedMetricState, ValuesShared
from livedash.cluster.view import MetricView, SharedView
from livedash.errors import ConfigurationError
from livedash.ingest import Ingest
from livedash.metrics.clock import Clock, SystemClock
from livedash.notifications.delivery import DeliveryWorker
from livedash.notifications.dispatcher import Dispatcher
from livedash.notifications.email import EmailSender, TlsMode
from livedash.notifications.inbox import Inbox
from livedash.notifications.push import PushSender
from livedash.observability.readiness import (
    Instant,
    Readiness,
    breaker_check,
    connections_check,
    memory_probe,
)
from livedash.observability.status import ServiceStatus
from livedash.observability.telemetry import Telemetry
from livedash.observability.upstream import UpstreamPoller, polled
from livedash.realtime.bus_manager import SOCKETIO, BusManager
from livedash.realtime.fanout import SocketIOFanOut
from livedash.realtime.gateway import Gateway
from livedash.realtime.handoff import HandOff
from livedash.realtime.limiter import SocketLimiter
from livedash.realtime.outbox import Outbox, RoomScreens
from livedash.realtime.redis_manager import CappedRedisManager
from livedash.realtime.server import GatewayServer
from livedash.realtime.shared_limits import BusLimitStorage, LimitCalls
from livedash.realtime.socket_workers import SYNCED, SocketWorkers, report_message
from livedash.realtime.stream import (
    HISTORY,
    Entry,
    MemoryHistory,
    MirroredHistory,
    RedisHistory,
    UpdateHistory,
    adopt_message,
    entries_message,
)
from livedash.reports.mailing import ReportMailer
from livedash.reports.scheduler import ReportScheduler
from livedash.reports.schedules import ScheduleBook
from livedash.reports.service import ReportService, configured_report_service
from livedash.settings import Settings
from livedash.store.engine import create_engine, is_sqlite, write_locking

log = structlog.get_logger(__name__)

START_TIMEOUT_SECONDS = 30.0
REPORT_SECONDS = 1.0  # how often a socket worker tells the main process of its sockets
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
    instances, readiness, feed_lag, upstream = await _health(
        stack, settings, database, redis, status, runner, election, gateway, clock, socket_workers
    )
    screens = RoomScreens(fanout)
    document, source = read_rules_file(settings.alert_rules_file)
    alerting = scaled(parse_alert_config(document, source=source), settings.alert_time_scale)
    rulebook = RuleBook(database, document, time_scale=settings.alert_time_scale)
    silencer = Silencer(database, settings.zone, alerting.mute_timings)
    deliveries = DeliveryWorker(
        database,
        clock,
        settings.zone,
        hospital=settings.hospital_name,
        public_url=settings.public_url,
        email=_email_sender(settings),
        push=await _push_sender(stack, settings),
        lease=timedelta(seconds=settings.delivery_lease_seconds),
    )
    runner.lead(deliveries.run)  # e-mails and pushes leave from the leader
    dispatcher = Dispatcher(
        database,
        screens,
        clock,
        settings.zone,
        silenced=silencer.silenced,
        deliveries=deliveries,
    )
    alerts = AlertService(
        alerting.rules,
        database,
        screens,
        clock,
        settings.zone,
        stale_after_seconds=settings.alert_stale_after_seconds,
        listeners=[dispatcher.on_alert],
    )
    runner.register(alerts)  # evaluated where the feed is read: on the leader
    anomalies = AnomalyWatch(
        alerting.anomaly_rules,
        database,
        screens,
        clock,
        settings.zone,
        stale=lambda: alerts.stale,
        tell=alerts.announce,
    )
    runner.lead(anomalies.while_leading)

    async def apply_rules(config: AlertConfig) -> None:
        silencer.mute_timings = config.mute_timings
        await alerts.replace_rules(config.rules)
        await anomalies.replace_rules(config.anomaly_rules)

    rulebook.on_change(apply_rules)
    runner.lead(rulebook.follow)  # rules set through the API reach the leader
    reports, report_schedules, report_scheduler = _reports(
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
        alerts=alerts,
        alert_desk=AlertDesk(
            database, screens, clock, lambda: alerts.rules, announce=alerts.announce
        ),
        inbox=Inbox(database),
        silencer=silencer,
        dispatcher=dispatcher,
        deliveries=deliveries,
        anomalies=anomalies,
        rulebook=rulebook,
        reports=reports,
        report_schedules=report_schedules,
        report_scheduler=report_scheduler,
        readiness=readiness,
        feed_lag=feed_lag,
        upstream=upstream,
        socket_workers=socket_workers,
    )


def _reports(
    stack: AsyncExitStack,
    settings: Settings,
    database: AsyncEngine,
    view: MetricView,
    runner: FeedRunner,
    clock: Clock,
    telemetry: Telemetry,
) -> tuple[ReportService, ScheduleBook, ReportScheduler]:
    """Reports on demand everywhere; schedules run on the leader."""

    async def feed_position() -> int:
        pipeline = runner.pipeline
        if pipeline is not None:
            return pipeline.status().position
        async with database.connect() as connection:
            return await load_position(connection, FEED_CONSUMER)

    async def publish_failing(count: int) -> None:
        pipeline = runner.pipeline
        if pipeline is not None:
            await pipeline.set_system(report_runs_failing=count)

    service = configured_report_service(
        settings, database, view, now=clock.now, feed_position=feed_position, telemetry=telemetry
    )
    stack.push_async_callback(service.close)
    book = ScheduleBook(database, settings.zone, mail=settings.smtp_host is not None)
    sender = _email_sender(settings)
    mailer = None
    if sender is not None:
        mailer = ReportMailer(
            sender,
            database,
            hospital=settings.hospital_name,
            public_url=settings.public_url,
            attachment_max_bytes=settings.report_attachment_max_bytes,
        )
    scheduler = ReportScheduler(
        book,
        service,
        clock,
        settings.zone,
        mailer=mailer,
        max_attempts=settings.report_max_attempts,
        retry_seconds=settings.report_retry_seconds,
        on_failing=publish_failing,
        settle=timedelta(seconds=settings.report_settle_seconds),
    )
    runner.lead(scheduler.while_leading)
    return service, book, scheduler


def _email_sender(settings: Settings) -> EmailSender | None:
    if settings.smtp_host is None:
        return None
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return EmailSender(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_sender,
        username=settings.smtp_username,
        password=password,
        tls=cast(TlsMode, settings.smtp_tls),
        timeout=settings.smtp_timeout_seconds,
    )


async def _push_sender(stack: AsyncExitStack, settings: Settings) -> PushSender | None:
    path = settings.vapid_private_key_file
    if path is None:
        return None
    try:
        key = path.read_text()
    except OSError as error:
        raise ConfigurationError(f"cannot read the VAPID key at {path}: {error}") from error
    sender = PushSender(key, settings.vapid_subject)
    return await stack.enter_async_context(sender)


async def _health(
    stack: AsyncExitStack,
    settings: Settings,
    database: AsyncEngine,
    redis: SharedRedis | None,
    status: ServiceStatus,
    runner: FeedRunner,
    election: LeaderElection | None,
    gateway: Gateway,
    clock: Clock,
    socket_workers: SocketWorkers | None,
) -> tuple[InstanceBoard, Readiness, FeedLagReader, UpstreamPoller | None]:
    """Readiness's checks, the instance board (GET /api/realtime/stats, `livedash status`) and
    the main application's poller, whose verdict the leader publishes as `main_app_up`."""
    upstream = await stack.enter_async_context(
        polled(
            settings.main_app_health_url,
            interval=settings.main_app_poll_seconds,
            request_timeout=settings.main_app_timeout_seconds,
        )
    )
    feed_lag = FeedLagReader(runner, database, sqlite=election is None)

    def report() -> dict[str, object]:
        verdict = readiness.report()
        lag = feed_lag.latest
        leading = runner.pipeline is not None and (election is None or election.leading)
        return {
            **gateway.stats().as_dict(),
            "role": "leader" if leading else "follower",
            "feed_lag_seconds": lag.seconds if lag is not None else None,
            "ready": verdict.ready,
            "failing": verdict.failing,
            **({"socket_workers": socket_workers.figures()} if socket_workers else {}),
        }

    board = InstanceBoard(redis, report)

    async def leader_lag() -> float | None:
        leader = await board.leader()
        lag = leader.get("feed_lag_seconds") if leader is not None else None
        return float(lag) if isinstance(lag, int | float) else None

    instant: list[Instant] = [
        connections_check(
            # Each process (the main one, each socket worker) holds up to the cap.
            lambda: gateway.transports,
            settings.max_connections * (1 + settings.socket_workers),
            lambda: gateway.draining,
        )
    ]
    if status.cache is not None:
        cache = status.cache
        instant.append(lambda: breaker_check("redis", cache, what="Redis"))
    if upstream is not None:
        instant.append(upstream.check)
    probes = [
        database_probe(database, status.database),
        feed_probe(
            feed_lag,
            runner,
            max_lag_seconds=settings.ready_max_feed_lag_seconds,
            embedded=election is None,
            leader_lag=leader_lag,
        ),
        job_queue_probe(database, clock.now, max_waiting=settings.ready_max_waiting_jobs),
        memory_probe(settings.ready_max_memory_mb),
    ]
    readiness = await stack.enter_async_context(
        Readiness(instant, probes, interval=settings.ready_probe_seconds)
    )
    await stack.enter_async_context(board)
    if upstream is not None:
        poller = upstream

        async def publish_main_app() -> None:
            async for up in poller.changes():
                pipeline = runner.pipeline
                if pipeline is not None:
                    await pipeline.set_system(main_app_up=up)

        runner.lead(publish_main_app)  # the metric engine is the leader's
    return board, readiness, feed_lag, upstream


@dataclass(frozen=True, slots=True)
class WorkerServices:
    """Every shared resource of a socket worker (`livedash.worker`): a gateway serving the
    main process's values, over the bus to it."""

    settings: Settings
    database: AsyncEngine
    gateway: Gateway
    link: BusLink


@asynccontextmanager
async def open_worker_services(
    settings: Settings, server: GatewayServer, link: BusLink, *, on_lost: Callable[[], None]
) -> AsyncIterator[WorkerServices]:
    """A socket worker's services, fed by the main process over `link` until exit;
    `on_lost` is called if the main process goes first."""
    async with AsyncExitStack() as stack:
        database = create_engine(settings.database_url, pool_pre_ping=True)
        stack.push_async_callback(database.dispose)
        mirror = MirroredState()
        history = MirroredHistory(settings.history_size, settings.history_max_age_seconds)
        calls = Calls(link.send)
        manager = BusManager(link.send)
        server.use_manager(manager)
        clock = SystemClock()
        view = SharedView(database, mirror, settings.zone, clock, leader_pipeline=lambda: None)
        gateway = await stack.enter_async_context(
            Gateway(
                settings,
                server,
                SocketIOFanOut(server),
                view=view,
                authenticator=Authenticator(settings, database),
                status=ServiceStatus(with_cache=False),
                history=history,
                limiter=SocketLimiter(settings, shared=BusLimitStorage(calls.call)),
            )
        )
        synced = asyncio.Event()

        async def follow() -> None:
            while (message := await link.receive()) is not None:
                kind = message.get("t")
                if kind == SOCKETIO:
                    manager.deliver(message["m"])
                elif kind == HISTORY:
                    adopt_message(history, message)
                elif kind == REPLY:
                    calls.answer(message)
                elif kind == SYNCED:
                    synced.set()
                elif not mirror.apply(message):
                    log.warning("bus_message_unknown", kind=kind)
            calls.fail_all("the main process has gone")
            on_lost()

        async def report() -> None:
            while True:
                link.send(report_message(gateway.report()))
                await asyncio.sleep(REPORT_SECONDS)

        tasks = BackgroundTasks()
        stack.push_async_callback(tasks.close)
        tasks.spawn(follow(), name="livedash-bus-follow")
        await synced.wait()
        tasks.spawn(report(), name="livedash-bus-report")
        stack.push_async_callback(server.shutdown)
        stack.push_async_callback(gateway.drain)
        yield WorkerServices(settings, database, gateway, link)
