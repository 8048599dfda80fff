"""`livedash serve`'s own server (`livedash.service.build_server`), run in the test process."""

from __future__ import annotations

import asyncio
import gc
import socket

from livedash.service import build_server
from livedash.settings import Settings


class InProcessService:
    """`build_server` for `settings` on a free loopback port, the one that drains first and
    tunes the garbage collector once it is up: `stop` puts the collector back as it was, for
    the test run goes on in this process."""

    def __init__(self, settings: Settings) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        port = self._socket.getsockname()[1]
        scheme = "https" if settings.tls_certfile is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        self._ready = asyncio.Event()
        self.server = build_server(
            settings.model_copy(update={"port": port, "log_level": "warning"}), self._ready.set
        )
        self._task: asyncio.Task[None] | None = None
        self._threshold = gc.get_threshold()

    async def start(self) -> InProcessService:
        self._task = asyncio.create_task(self.server.serve(sockets=[self._socket]))
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            ready.cancel()
            self._task.result()
            raise RuntimeError("the service stopped during start-up")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self.server.should_exit = True
            await self._task
            self._task = None
        self._socket.close()
        gc.unfreeze()
        gc.set_threshold(*self._threshold)
