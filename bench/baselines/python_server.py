"""Bare python-socketio, the second baseline of bench/run.py: the same broadcast as livedash
with nothing behind it, served by uvicorn as livedash is (h11, no per-message deflate).

    .venv/bin/python bench/baselines/python_server.py --port 8124 --rate 40 --count 480

A client connects (websocket), is answered `authenticated` at once (its token is not checked)
and joins the one room with `subscribe_metrics`, acknowledged {"ok": true}, as livedash's
clients do. GET /start begins `--count` emits to the room at `--rate` per second on a fixed
schedule; GET /health answers {"status": "ok", "sent": n}. Each payload has livedash's
`dashboard_update` shape; `timestamp` is the emit time (ISO) and `sent_at` the same in epoch ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import socketio
import uvicorn

ROOM = "dashboard"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Broadcast:
    """The room, its clients and the emit schedule."""

    def __init__(self, rate: float, count: int) -> None:
        # always_connect: the CONNECT answer goes out before the handler's `authenticated`.
        self.sio = socketio.AsyncServer(
            async_mode="asgi", cors_allowed_origins=[], always_connect=True
        )
        self.rate = rate
        self.count = count
        self.sent = 0
        self._task: asyncio.Task[None] | None = None
        self.sio.on("connect", self.connect)
        self.sio.on("subscribe_metrics", self.subscribe)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        await self.sio.emit("authenticated", {"user": "bench"}, to=sid)

    async def subscribe(self, sid: str, data: Any) -> dict[str, bool]:
        await self.sio.enter_room(sid, ROOM)
        return {"ok": True}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._emit_on_schedule())

    async def _emit_on_schedule(self) -> None:
        origin = time.monotonic()
        for n in range(1, self.count + 1):
            await asyncio.sleep(max(0.0, origin + n / self.rate - time.monotonic()))
            now = time.monotonic()  # the clients' clock (CLOCK_MONOTONIC), in the ISO form
            self.sent = n
            await self.sio.emit(
                "dashboard_update",
                {
                    "metric": "patients_total",
                    "department": "ED",
                    "value": n,
                    "version": n,
                    "timestamp": datetime.fromtimestamp(now, UTC).isoformat(),
                    "sent_at": now * 1000,
                },
                room=ROOM,
            )

    async def control(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /start and GET /health (any other path answers as /health)."""
        if scope["path"] == "/start":
            self.start()
        body = json.dumps({"status": "ok", "role": "python-socketio", "sent": self.sent})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8124)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args()
    broadcast = Broadcast(args.rate, args.count)
    app = socketio.ASGIApp(broadcast.sio, other_asgi_app=broadcast.control)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        http="h11",
        ws_per_message_deflate=False,
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    main()
