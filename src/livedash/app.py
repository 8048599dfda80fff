"""The application factory: one FastAPI app with the Socket.IO gateway mounted in front."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import socketio
import structlog
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from livedash import __version__
from livedash.aio import cancel_and_wait
from livedash.auth.keys import token_keys
from livedash.auth.ratelimit import RateLimiter, shared_storage
from livedash.auth.sessions import SessionService
from livedash.auth.users import Authenticator
from livedash.cluster.leader import LeaderElection
from livedash.cluster.runner import FeedRunner
from livedash.cluster.state import SharedMetricState
from livedash.cluster.view import LocalView, MetricView, SharedView
from livedash.metrics.clock import Clock, SystemClock
from livedash.observability.breaker import CircuitBreaker, State
from livedash.observability.logging import ENGINEIO_LOGGER, SOCKETIO_LOGGER
from livedash.observability.prometheus import install_metrics
from livedash.observability.status import ServiceStatus
from livedash.realtime.fanout import SocketIOFanOut
from livedash.realtime.gateway import Gateway
from livedash.realtime.outbox import Outbox
from livedash.realtime.redis_manager import CappedRedisManager
from livedash.realtime.server import GatewayServer
from livedash.realtime.stream import MemoryHistory, RedisHistory
from livedash.settings import Settings
from livedash.store.engine import create_engine, is_sqlite
from livedash.web.api import install_api
from livedash.web.auth_api import LoginLimits, install_auth_api
from livedash.web.ingest import Ingest, install_ingest
from livedash.web.request_limits import RequestLimits, body_limits
from livedash.web.routes import install_routes
from livedash.web.security import OriginPolicy, SecurityHeaders

log = structlog.get_logger(__name__)

START_TIMEOUT_SECONDS = 30.0
REDIS_PROBE_SECONDS = 1.0
DRAIN = "livedash.drain"
"""Lifespan state: `await state[DRAIN]()` hands the sockets over before a graceful stop."""


async def _probe_redis(redis: Redis, breaker: CircuitBreaker | None) -> None:
    """Ping Redis every second; while it is down, retry with backoff and jitter."""
    assert breaker is not None
    retrying = AsyncRetrying(
        wait=wait_exponential_jitter(multiplier=0.1, max=2.0),
        retry=retry_if_exception_type((RedisError, OSError)),
    )
    while True:
        async for attempt in retrying:
            with attempt:
                try:
                    await redis.ping()
                except (RedisError, OSError) as error:
                    breaker.failure(error)
                    raise
        breaker.success()
        await asyncio.sleep(REDIS_PROBE_SECONDS)


async def _cancel(task: asyncio.Task[None]) -> None:
    await cancel_and_wait(task)


def create_app(settings: Settings, *, clock: Clock | None = None) -> ASGIApp:
    """The whole service as one ASGI app; resources open and close in its lifespan."""
    token_keys(settings)  # a bad key configuration fails at start, not at the first login
    origins = OriginPolicy(settings.cors_origins)
    shared = shared_storage(settings.redis_url)
    rest_limiter = RateLimiter(settings.rate_limit_rest, namespace="rest", storage_uri=shared)
    ingest = Ingest(settings)
    login_limits = LoginLimits(shared)
    # With Redis, an emit to a room reaches that room's sockets on every instance.
    manager = (
        CappedRedisManager(settings.redis_url, channel="livedash-socketio")
        if settings.redis_url is not None
        else None
    )
    server = GatewayServer(
        # An Engine.IO connection gets as long to open a session as a socket gets to sign in.
        session_deadline=settings.auth_timeout_seconds,
        async_mode="asgi",
        client_manager=manager,
        always_connect=True,
        # A handshake whose Origin is neither ours nor listed is refused (cross-site WebSocket
        # hijacking); one without Origin comes from a program, not a browser, and is let in.
        cors_allowed_origins=origins.engineio_check,
        cors_credentials=False,
        max_http_buffer_size=settings.max_payload_bytes,
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
        # Through the standard library's logging (configure_logging renders it as structlog
        # events), not the handlers python-socketio and python-engineio would add of their own.
        logger=logging.getLogger(SOCKETIO_LOGGER),
        engineio_logger=logging.getLogger(ENGINEIO_LOGGER),
    )
    status = ServiceStatus(with_cache=settings.redis_url is not None)
    cache_breaker = status.cache
    fanout = SocketIOFanOut(
        server,
        local_only=lambda: cache_breaker is not None and cache_breaker.state is not State.CLOSED,
    )
    gateway = Gateway(settings, server, fanout)
    gateway.watch(status)
    if manager is not None and cache_breaker is not None:
        # Messages Redis did not carry to (or from) this instance: resend current values.
        manager.on_resync(gateway.resync)
        manager.on_publish_failed(cache_breaker.trip)
    service_clock = clock or SystemClock()

    def wall_seconds() -> float:
        # The update history ages by the service's clock too, so that simulated time
        # (a ManualClock in tests) moves both the metrics and the history's age limit.
        return service_clock.now().timestamp()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(rest_limiter)
            await stack.enter_async_context(ingest)
            await stack.enter_async_context(login_limits)
            database = create_engine(settings.database_url, pool_pre_ping=True)
            stack.push_async_callback(database.dispose)
            state = None
            history: MemoryHistory | RedisHistory = MemoryHistory(
                settings.history_size, settings.history_max_age_seconds, clock=wall_seconds
            )
            if settings.redis_url is not None:
                redis = Redis.from_url(
                    settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
                )
                stack.push_async_callback(redis.aclose)
                state = SharedMetricState(redis)
                history = RedisHistory(
                    redis,
                    settings.history_size,
                    settings.history_max_age_seconds,
                    breaker=cache_breaker,
                    clock=wall_seconds,
                )
                prober = asyncio.create_task(_probe_redis(redis, cache_breaker), name="redis-probe")
                stack.push_async_callback(_cancel, prober)
            outbox = await stack.enter_async_context(
                Outbox(fanout, window=settings.coalesce_window_seconds, history=history)
            )
            runner = FeedRunner(
                settings,
                database,
                outbox,
                service_clock,
                state,
                history=history,
                status=status,
                announce=manager.announce_resync if manager is not None else None,
            )
            runner.watch(status)
            app.state.runner = runner
            authenticator = Authenticator(settings, database)
            app.state.authenticator = authenticator
            # Its own engine: on SQLite a refresh reads and writes in one transaction, which
            # must hold the write lock from its start.
            sessions_database = create_engine(settings.database_url, writer=True)
            stack.push_async_callback(sessions_database.dispose)
            app.state.sessions = SessionService(settings, sessions_database, reader=database)
            view: MetricView
            if is_sqlite(settings.database_url):
                view = LocalView(lambda: runner.pipeline)
                gateway.attach(view, authenticator, history)
                stack.push_async_callback(gateway.close)
                await runner.start()
                stack.push_async_callback(runner.stop)
                app.state.election = None
            else:
                if state is None:
                    log.warning(
                        "no_redis_configured",
                        detail="one instance only: without LIVEDASH_REDIS_URL the clients of "
                        "other instances would get no live updates",
                    )
                view = SharedView(
                    database,
                    state,
                    settings.zone,
                    service_clock,
                    leader_pipeline=lambda: runner.pipeline,
                    on_cache_error=cache_breaker.failure if cache_breaker else lambda _e: None,
                    on_cache_ok=cache_breaker.success if cache_breaker else lambda: None,
                    cache_allowed=cache_breaker.allow if cache_breaker else lambda: True,
                )
                gateway.attach(view, authenticator, history)
                stack.push_async_callback(gateway.close)
                election = LeaderElection(
                    settings.database_url,
                    settings.leader_lock_key,
                    poll_seconds=settings.leader_poll_seconds,
                    on_elected=runner.start,
                    on_deposed=runner.stop,
                    breaker=status.database,
                    name=f"{settings.host}:{settings.port}",
                )
                await stack.enter_async_context(election)
                # Serve once it is known who reads the feed (and the leader has counted), so
                # the first snapshots come from the engine; a database that is down delays
                # this by at most the start timeout, then the service runs degraded.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(START_TIMEOUT_SECONDS):
                        await election.decided.wait()
                app.state.election = election
            app.state.view = view
            app.state.status = status
            app.state.outbox = outbox
            # Stops the Redis manager's listener with the app, not after Redis has gone.
            stack.push_async_callback(server.shutdown)
            # Unwound first: clients are handed over before the feed stops (and stores its
            # position). The server may call it earlier, before it closes the connections.
            stack.push_async_callback(gateway.drain)
            yield {DRAIN: gateway.drain}

    # No Swagger UI or ReDoc: they load scripts from a CDN, which the page's CSP refuses.
    api = FastAPI(
        title="livedash", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    api.state.settings = settings
    api.state.gateway = gateway
    api.state.rest_limiter = rest_limiter
    api.state.ingest = ingest
    if origins.origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(origins.origins),
            allow_methods=["GET"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
        )
    install_routes(api)
    install_metrics(api)
    install_api(api)
    install_ingest(api)
    install_auth_api(api, login_limits)
    app: ASGIApp = SecurityHeaders(
        RequestLimits(socketio.ASGIApp(server, other_asgi_app=api), body_limits(settings))
    )
    return app
