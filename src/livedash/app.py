"""The application factory: one FastAPI app, with the Socket.IO gateway mounted in front.

`create_app(settings)` builds only what serves requests: the Socket.IO server, the routes and
the middleware. Every resource (database, Redis, the feed, the gateway's handlers) is built
by the lifespan through `livedash.services.open_services`, and reaches the routes as the
lifespan state's `services` (`livedash.web.deps.services`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import socketio
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Lifespan

from livedash import __version__
from livedash.auth.keys import token_keys
from livedash.auth.ratelimit import check_rate_limits
from livedash.cluster.local_bus import BusLink
from livedash.metrics.clock import Clock
from livedash.observability.logging import ENGINEIO_LOGGER, SOCKETIO_LOGGER
from livedash.realtime.handoff import HandOff
from livedash.realtime.server import GatewayServer
from livedash.services import ConsumerFactory, open_services, open_worker_services
from livedash.settings import Settings
from livedash.web.alerts_api import install_alerts_api
from livedash.web.api import install_api
from livedash.web.auth_api import install_auth_api
from livedash.web.changes_api import install_changes_api
from livedash.web.dashboard_api import install_dashboard_api
from livedash.web.deps import SERVICES
from livedash.web.ingest import install_ingest
from livedash.web.notifications_api import install_notifications_api
from livedash.web.problems import install_problems
from livedash.web.prometheus import install_metrics
from livedash.web.reports_api import install_reports_api
from livedash.web.request_context import RequestContext
from livedash.web.request_limits import RequestLimits, body_limits
from livedash.web.routes import install_routes
from livedash.web.security import OriginPolicy, SecurityHeaders


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    consumers: Sequence[ConsumerFactory] = (),
    hand_off: HandOff | None = None,
) -> ASGIApp:
    """The whole service as one ASGI app; resources open and close in its lifespan.

    `consumers` are built from the services and fed the metric stream where it is read;
    `hand_off` gives new WebSocket connections to socket workers (`livedash.worker`).
    """
    # Bad settings fail here, at start, not at the first sign-in or request.
    token_keys(settings)
    check_rate_limits(settings)
    origins = OriginPolicy(settings.cors_origins)
    server = gateway_server(settings, origins)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_services(
            settings, server, clock=clock, consumers=consumers, hand_off=hand_off
        ) as services:
            yield {SERVICES: services}

    api = rest_api(lifespan)
    if origins.origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(origins.origins),
            allow_methods=["GET"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After", "Link"],
        )
    return _served(settings, server, api)


def create_worker_app(settings: Settings, link: BusLink, *, on_lost: Callable[[], None]) -> ASGIApp:
    """A socket worker's app (`livedash.worker`): the Socket.IO gateway alone, fed by the main
    process over `link`; `on_lost` is called if the main process goes first."""
    token_keys(settings)
    server = gateway_server(settings, OriginPolicy(settings.cors_origins))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_worker_services(settings, server, link, on_lost=on_lost) as services:
            yield {SERVICES: services}

    return _served(settings, server, Starlette(lifespan=lifespan))


def _served(settings: Settings, server: GatewayServer, other: ASGIApp) -> ASGIApp:
    app: ASGIApp = SecurityHeaders(
        RequestLimits(socketio.ASGIApp(server, other_asgi_app=other), body_limits(settings))
    )
    # Outermost, so that refusals (431, 413) get an id and an access line too.
    return RequestContext(app)


def gateway_server(settings: Settings, origins: OriginPolicy) -> GatewayServer:
    """The Socket.IO server of one process."""
    return GatewayServer(
        # An Engine.IO connection gets as long to open a session as a socket gets to sign in.
        session_deadline=settings.auth_timeout_seconds,
        async_mode="asgi",
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


def rest_api(lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    """The FastAPI app of the page, `/health`, `/metrics` and the REST API; its routes reach
    the services `lifespan` yields."""
    # FastAPI's Swagger UI and ReDoc load scripts from a CDN, which the page's CSP refuses;
    # web/routes.py serves `/docs` from our own files instead.
    api = FastAPI(
        title="livedash", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    install_problems(api)
    install_routes(api)
    install_metrics(api)
    install_api(api)
    install_dashboard_api(api)
    install_changes_api(api)
    install_alerts_api(api)
    install_notifications_api(api)
    install_reports_api(api)
    install_ingest(api)
    install_auth_api(api)
    return api


def api_reference() -> str:
    """The API reference (docs/api.md): the gateway's events, and those of the parts built on
    it (alerts, notifications); then the REST API, from its OpenAPI schema."""
    from livedash.alerts.messages import ALERT_EVENT_DOC
    from livedash.notifications.messages import NOTIFICATION_EVENT_DOC
    from livedash.realtime.apidoc import render_api_doc
    from livedash.web.restdoc import render_rest_doc

    realtime = render_api_doc([ALERT_EVENT_DOC, NOTIFICATION_EVENT_DOC])
    return realtime + "\n" + render_rest_doc(rest_api().openapi())
