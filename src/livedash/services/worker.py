"""A socket worker's composition root (`livedash.worker`): a gateway that serves the main
process's values, reached over the bus to it, and counts its rate limits there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.aio import BackgroundTasks
from livedash.auth.users import Authenticator
from livedash.cluster.local_bus import REPLY, BusLink, Calls
from livedash.cluster.mirror import MirroredState
from livedash.cluster.view import SharedView
from livedash.metrics.clock import SystemClock
from livedash.observability.status import ServiceStatus
from livedash.realtime.bus_manager import SOCKETIO, BusManager
from livedash.realtime.fanout import SocketIOFanOut
from livedash.realtime.gateway import Gateway
from livedash.realtime.limiter import SocketLimiter
from livedash.realtime.server import GatewayServer
from livedash.realtime.shared_limits import BusLimitStorage
from livedash.realtime.socket_workers import SYNCED, report_message
from livedash.realtime.stream import HISTORY, MirroredHistory, adopt_message
from livedash.settings import Settings
from livedash.store.engine import create_engine

log = structlog.get_logger(__name__)

REPORT_SECONDS = 1.0  # how often a socket worker tells the main process of its sockets


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
