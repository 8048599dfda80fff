"""The application factory: one FastAPI app with the Socket.IO gateway mounted in front."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import socketio
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from livedash import __version__
from livedash.auth.keys import token_keys
from livedash.auth.ratelimit import RateLimiter
from livedash.auth.sessions import SessionService
from livedash.auth.users import Authenticator
from livedash.changefeed import open_change_source
from livedash.metrics.clock import Clock, SystemClock
from livedash.metrics.engine import MetricEngine
from livedash.metrics.history import HistoryRecorder
from livedash.metrics.pipeline import MetricPipeline
from livedash.realtime.fanout import SocketIOFanOut
from livedash.realtime.gateway import Gateway
from livedash.realtime.outbox import Outbox
from livedash.settings import Settings
from livedash.store.engine import create_engine
from livedash.web.api import install_api
from livedash.web.auth_api import LoginLimits, install_auth_api
from livedash.web.ingest import Ingest, install_ingest
from livedash.web.routes import install_routes
from livedash.web.security import OriginPolicy, SecurityHeaders

FEED_CONSUMER = "metrics"


def create_app(settings: Settings, *, clock: Clock | None = None) -> ASGIApp:
    """The whole service as one ASGI app; resources open and close in its lifespan."""
    token_keys(settings)  # a bad key configuration fails at start, not at the first login
    origins = OriginPolicy(settings.cors_origins)
    rest_limiter = RateLimiter(settings.rate_limit_rest, namespace="rest")
    ingest = Ingest(settings)
    login_limits = LoginLimits()
    server = socketio.AsyncServer(
        async_mode="asgi",
        always_connect=True,
        # A handshake whose Origin is neither ours nor listed is refused (cross-site WebSocket
        # hijacking); one without Origin comes from a program, not a browser, and is let in.
        cors_allowed_origins=origins.engineio_check,
        cors_credentials=False,
        max_http_buffer_size=settings.max_payload_bytes,
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
        logger=False,
        engineio_logger=False,
    )
    fanout = SocketIOFanOut(server)
    gateway = Gateway(settings, server, fanout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(rest_limiter)
            await stack.enter_async_context(ingest)
            await stack.enter_async_context(login_limits)
            database = create_engine(settings.database_url)
            stack.push_async_callback(database.dispose)
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
            engine = MetricEngine(settings.zone, clock or SystemClock())
            pipeline = MetricPipeline(
                engine,
                source,
                database,
                history=HistoryRecorder(settings.zone),
                time_refresh_seconds=settings.time_refresh_seconds,
                confirm_interval_seconds=settings.feed_confirm_interval_seconds,
                history_refresh_seconds=settings.history_refresh_seconds,
            )
            outbox = await stack.enter_async_context(
                Outbox(fanout, window=settings.coalesce_window_seconds)
            )
            authenticator = Authenticator(settings, database)
            app.state.authenticator = authenticator
            # Its own engine: on SQLite a refresh reads and writes in one transaction, which
            # must hold the write lock from its start.
            sessions_database = create_engine(settings.database_url, writer=True)
            stack.push_async_callback(sessions_database.dispose)
            app.state.sessions = SessionService(settings, sessions_database)
            gateway.attach(pipeline, outbox, authenticator)
            stack.push_async_callback(gateway.close)
            await stack.enter_async_context(pipeline)
            app.state.pipeline = pipeline
            yield

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
    install_api(api)
    install_ingest(api)
    install_auth_api(api, login_limits)
    app: ASGIApp = SecurityHeaders(socketio.ASGIApp(server, other_asgi_app=api))
    return app
