"""The service in this test's process, served by uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from livedash.app import create_app
from livedash.metrics.clock import Clock
from livedash.service import server_config
from livedash.services import ConsumerFactory
from livedash.settings import Settings
from livedash.testing.recorder import Recorder

STOP_TIMEOUT_SECONDS = 30.0

Serve = Callable[..., Awaitable["LiveServer"]]
"""The `serve` fixture: `await serve(settings?, clock?)` starts a server."""
Connect = Callable[..., Awaitable[Recorder]]
"""The `connect` fixture: `await connect(server, token?)` opens a recorded client."""


def _after(wait: Callable[[], Awaitable[None]], app: ASGIApp) -> ASGIApp:
    async def waiting(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            await wait()
        await app(scope, receive, send)

    return waiting


class _Server(uvicorn.Server):
    """uvicorn with an event for "accepting connections", so tests await instead of polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class LiveServer:
    """A running service on a free loopback port."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        consumers: Sequence[ConsumerFactory] = (),
        *,
        before_each: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`before_each` is awaited before every request and WebSocket is served."""
        self.settings = settings
        self.app = create_app(settings, clock=clock, consumers=consumers)
        # IPPROTO_TCP, so asyncio switches Nagle off on accepted sockets as uvicorn does.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # Production's own configuration (HTTP implementation, limits, proxies); quieter logs.
        served = self.app if before_each is None else _after(before_each, self.app)
        self.uvicorn = _Server(server_config(settings, served, log_level="warning"))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> LiveServer:
        self._task = asyncio.create_task(self.uvicorn.serve(sockets=[self._socket]))
        ready = asyncio.create_task(self.uvicorn.ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            ready.cancel()
            self._task.result()
            raise RuntimeError("the server stopped during start-up")
        return self

    async def stop(self) -> None:
        if self._task is None:
            return
        self.uvicorn.should_exit = True
        try:
            # A server that cannot stop is a bug to see, not a suite that hangs: show what
            # every task waits on, then fail.
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await asyncio.shield(self._task)
        except TimeoutError:
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            self._task.cancel()
            raise AssertionError("the server did not stop") from None
        finally:
            self._task = None
            self._socket.close()
