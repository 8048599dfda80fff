"""Running the service: the server alone, or the demo (server + simulator) in one process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import ssl
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from livedash.app import create_app, create_worker_app
from livedash.cluster.local_bus import BusLink
from livedash.errors import ConfigurationError
from livedash.observability.logging import configure_logging
from livedash.realtime.handoff import HandOff, handing_off, receive_connections
from livedash.realtime.socket_workers import READY, settings_from
from livedash.settings import Settings
from livedash.web.deps import SERVICES
from livedash.web.request_limits import MAX_REQUEST_HEAD_BYTES

log = structlog.get_logger(__name__)


YOUNG_COLLECTION_THRESHOLD = 10_000
"""Container allocations between two passes of the collector over its youngest generation
(CPython's default: 700)."""


def settle_the_collector() -> None:
    """Once the service is up: tune the garbage collector for a long-lived server.

    Everything alive now (modules, the app, the seeded engine) lives as long as the process:
    it is kept out of the collector's full passes, which otherwise stall the event loop for
    ~100 ms now and then (measured with bench/latency.py). And a connect storm allocates
    objects that mostly live as long as their socket: at CPython's default the collector
    passed over them so often that it took a fifth of the service's CPU (10,000 sockets:
    ~6 s of ~25 s; bench/idle_sockets.py, docs/performance.md).
    """
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


class _Server(uvicorn.Server):
    """uvicorn, telling its caller once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        settle_the_collector()
        if self._on_ready is not None and not self.should_exit:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn closes every WebSocket (1012) before the app's lifespan shutdown: the
        # gateway hands its clients over first, telling them why; the feed stops (and stores
        # its position) in the lifespan shutdown, after them.
        services = getattr(self.lifespan, "state", {}).get(SERVICES)
        if services is not None:
            try:
                await services.gateway.drain()
            except Exception:
                log.exception("drain_failed")
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            # How an orchestrator asks for a graceful stop: shut down, then exit with 0 (uvicorn
            # would raise the signal again afterwards, and the process would die of it).
            self.should_exit = True
            return
        super().handle_exit(sig, frame)


def _no_password() -> bytes:
    raise ConfigurationError("the TLS key file is encrypted; give livedash an unencrypted key")


def tls_files(settings: Settings) -> tuple[str, str] | tuple[None, None]:
    """The TLS certificate and key, checked to load as a pair, or neither (plain HTTP)."""
    certfile, keyfile = settings.tls_certfile, settings.tls_keyfile
    if certfile is None and keyfile is None:
        return None, None
    if certfile is None or keyfile is None:
        missing = "LIVEDASH_TLS_CERTFILE" if certfile is None else "LIVEDASH_TLS_KEYFILE"
        raise ConfigurationError(f"TLS needs a certificate and its key: {missing} is not set")
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except OSError as error:  # ssl.SSLError is one too: not PEM, or a key of another certificate
        raise ConfigurationError(
            f"cannot use the TLS certificate {certfile} with the key {keyfile}: {error}"
        ) from error
    return str(certfile), str(keyfile)


def server_config(settings: Settings, app: ASGIApp, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for serving `app` with `settings`; `overrides` replace options."""
    certfile, keyfile = tls_files(settings)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        # uvicorn's log goes through the root handler of configure_logging, at our level; its
        # access log is off: RequestContext logs each request, without its query string.
        "log_config": None,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "lifespan": "on",
        # h11, not httptools: httptools buffers a request head of any size (a 100 MB header
        # was read whole). h11 refuses a head still incomplete past this, so a head costs at
        # most one socket read (256 KiB) more; RequestLimits refuses the rest (431).
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD_BYTES,
        "proxy_headers": True,
        # Only these proxies (nginx) are believed about the client address (X-Forwarded-For).
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        # Past this, connections still open at shutdown are closed rather than waited for.
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        # The WebSocket implementation whose transport RoomFrames writes room events to.
        "ws": "websockets-sansio",
        # Refuse oversized WebSocket messages while reading them, not after (Engine.IO's own
        # limit applies only once a whole message has been read).
        "ws_max_size": max(2 * settings.max_payload_bytes, 64 * 1024),
        "ws_per_message_deflate": settings.ws_per_message_deflate,
        "ssl_certfile": certfile,
        "ssl_keyfile": keyfile,
    }
    return uvicorn.Config(app, **(options | overrides))


def build_server(settings: Settings, on_ready: Callable[[], None] | None = None) -> uvicorn.Server:
    """The uvicorn server for `settings` (over TLS when its files are set), not yet started;
    with socket workers, it gives them new WebSocket connections."""
    if not settings.socket_workers:
        return _Server(server_config(settings, create_app(settings)), on_ready)
    hand_off = HandOff()
    app = create_app(settings, hand_off=hand_off)
    return _Server(server_config(settings, app, http=handing_off(H11Protocol, hand_off)), on_ready)


class WorkerServer(_Server):
    """A socket worker's uvicorn: serves the connections the main process hands it
    (`livedash.realtime.handoff`) instead of listening on a port of its own."""

    def __init__(
        self, config: uvicorn.Config, channel: socket.socket, on_ready: Callable[[], None]
    ) -> None:
        super().__init__(config, on_ready)
        self._channel = channel
        self._stop_receiving: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            self.should_exit = True
            return
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        self._stop_receiving = receive_connections(self._channel, create_protocol)
        self.servers = []
        self.started = True
        settle_the_collector()  # as the main process does (_Server.startup)
        if self._on_ready is not None:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._stop_receiving is not None:
            self._stop_receiving()
        await super().shutdown(sockets)


async def run_worker(name: str, link: BusLink, channel: socket.socket) -> None:
    """Serve as socket worker `name` until told to stop or the main process goes."""
    settings, file = settings_from(await _first(link))
    configure_logging(settings.log_level, json=settings.log_json, file=file)
    structlog.contextvars.bind_contextvars(worker=name)
    server: WorkerServer | None = None

    def lost() -> None:
        log.warning("main_process_gone", worker=name)
        if server is not None:
            server.should_exit = True

    app = create_worker_app(settings, link, on_lost=lost)
    server = WorkerServer(
        server_config(settings, app), channel, on_ready=lambda: link.send({"t": READY})
    )
    await server.serve()


async def _first(link: BusLink) -> dict[str, Any]:
    message = await link.receive()
    if message is None:
        raise ConfigurationError("the main process went before sending the settings")
    return message


async def run_service(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); `on_ready` runs once it accepts connections."""
    await build_server(settings, on_ready).serve()


async def run_demo(
    settings: Settings, *, seed: int, speed: float, on_ready: Callable[[], None] | None = None
) -> None:
    """Serve, and run the simulator against the same database until interrupted."""
    from livedash.simulator import HospitalSimulator

    # The simulated day runs `speed` times faster than the clock: so do the alert periods.
    settings = settings.model_copy(update={"alert_time_scale": speed})
    server = build_server(settings, on_ready)
    stop = asyncio.Event()
    async with HospitalSimulator(settings.database_url, seed=seed, zone=settings.zone) as simulator:
        simulation = asyncio.create_task(simulator.run(speed=speed, stop=stop))
        try:
            await server.serve()
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                events = await simulation
                log.info("simulator_stopped", events=events)
