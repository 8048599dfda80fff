"""Clients that speak below socket.io's client library: raw Engine.IO, and `/health`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

from livedash.realtime.gateway import Gateway
from livedash.services import Services
from livedash.web.deps import SERVICES


async def health(url: str, token: str) -> dict[str, Any]:
    """A service's full `/health` report, as a super_admin's `token` gets it."""
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/health", headers={"Authorization": f"Bearer {token}"})
    body: dict[str, Any] = response.json()
    return body


class RawSocket:
    """A Socket.IO client written by hand (Engine.IO v4 over a WebSocket), so that it can send
    what no library would, or stop answering the server's pings."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pings = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def transport(cls, http: aiohttp.ClientSession, url: str) -> AsyncIterator[RawSocket]:
        """An Engine.IO connection that has not opened a Socket.IO session."""
        async with http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket") as ws:
            opened = await ws.receive_str()
            assert opened.startswith("0"), opened  # Engine.IO OPEN
            yield cls(ws)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, http: aiohttp.ClientSession, url: str, token: str
    ) -> AsyncIterator[RawSocket]:
        """A Socket.IO session authenticated with `token` in its handshake."""
        async with cls.transport(http, url) as raw:
            await raw.ws.send_str("40" + json.dumps({"token": token}))  # CONNECT, with auth
            while not (await raw.receive()).startswith('42["authenticated"'):
                pass
            yield raw

    async def receive(self) -> str:
        """The next message that is not a ping; pings are answered."""
        while True:
            message = await self.ws.receive_str()
            if message != "2":
                return message
            self.pings += 1
            await self.ws.send_str("3")

    async def closed(self) -> aiohttp.WSMessage:
        """Read (answering pings) until the server closes the connection; the closing message."""
        while True:
            message = await self.ws.receive()
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                return message
            if message.type is aiohttp.WSMsgType.TEXT and message.data == "2":
                self.pings += 1
                await self.ws.send_str("3")


def services_of(server: Any) -> Services:
    """The services of a running server (its lifespan state; `server` is a `LiveServer` or a
    uvicorn `Server`)."""
    uvicorn_server = getattr(server, "uvicorn", server)
    services: Services = uvicorn_server.lifespan.state[SERVICES]
    return services


def gateway_of(server: Any) -> Gateway:
    """The gateway of a running server."""
    return services_of(server).gateway
