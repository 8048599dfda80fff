"""A screen whose browser stops reading: a Socket.IO client that reads only when told to.

Written on websockets' sans-I/O client over a TCP socket with a small receive buffer, so that
the server's send buffer fills after a few kilobytes instead of megabytes, and nothing reads
ahead in the background while the test says the screen is stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

RECEIVE_BUFFER_BYTES = 4096


class StalledSocket:
    """A signed-in Socket.IO session over a WebSocket, read only in `receive()`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._protocol: ClientProtocol | None = None
        self._messages: list[str] = []
        self._acks = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str, token: str, *, batched: bool = False
    ) -> AsyncIterator[StalledSocket]:
        """Connect to the service at `url` and sign in with `token` (`batched`: asking for
        `dashboard_updates`)."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, (host, port))
        reader, writer = await asyncio.open_connection(sock=raw, limit=RECEIVE_BUFFER_BYTES)
        stalled = cls(reader, writer)
        try:
            await stalled._handshake(f"ws://{host}:{port}/socket.io/?EIO=4&transport=websocket")
            opened = await stalled.receive()
            assert opened.startswith("0"), opened  # Engine.IO OPEN
            auth = {"token": token, **({"updates": "batched"} if batched else {})}
            await stalled.send("40" + json.dumps(auth))
            while not (await stalled.receive()).startswith('42["authenticated"'):
                pass
            yield stalled
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handshake(self, uri: str) -> None:
        self._protocol = ClientProtocol(parse_uri(uri), max_size=None)
        self._protocol.send_request(self._protocol.connect())
        await self._flush()
        accepted = False
        while not accepted:
            await self._read()
            for event in self._protocol.events_received():
                if isinstance(event, Response):
                    if event.status_code != 101:
                        raise ConnectionError(f"WebSocket refused: {event.status_code}")
                    accepted = True
                elif getattr(event, "opcode", None) is Opcode.TEXT:
                    # The server's first packets may come in the same read as its answer.
                    self._messages.append(event.data.decode())

    async def send(self, text: str) -> None:
        """Send one Engine.IO packet."""
        assert self._protocol is not None
        self._protocol.send_text(text.encode())
        await self._flush()

    async def call(self, event: str, data: Any) -> Any:
        """Emit `event` with an acknowledgement and return what the server answered; other
        packets received meanwhile are kept for `receive()`."""
        self._acks += 1
        ack = self._acks
        await self.send(f"42{ack}" + json.dumps([event, data]))
        held: list[str] = []
        while True:
            message = await self.receive()
            if message.startswith(f"43{ack}"):
                self._messages[:0] = held
                return json.loads(message[len(f"43{ack}") :])[0]
            held.append(message)

    async def versions_until(
        self, last: int, departments: Sequence[str], *, batched: bool = False
    ) -> dict[str, list[int]]:
        """Read `dashboard_update` packets (`batched`: `dashboard_updates`, and no other kind)
        until every department's newest version is `last`: the versions, by department, in
        the order they came."""
        event = "dashboard_updates" if batched else "dashboard_update"
        received: dict[str, list[int]] = {department: [] for department in departments}
        async with asyncio.timeout(10):
            while min(seen[-1] if seen else 0 for seen in received.values()) < last:
                message = await self.receive()
                assert not (batched and message.startswith('42["dashboard_update"')), message
                if message.startswith(f'42["{event}"'):
                    payload = json.loads(message[2:])[1]
                    for update in payload["updates"] if batched else [payload]:
                        received[update["department"]].append(update["version"])
        return received

    async def receive(self) -> str:
        """The next Engine.IO packet that is not a ping (pings are answered)."""
        assert self._protocol is not None
        while True:
            if self._messages:
                message = self._messages.pop(0)
                if message == "2":
                    await self.send("3")
                    continue
                return message
            await self._read()
            for frame in self._protocol.events_received():
                if getattr(frame, "opcode", None) is Opcode.TEXT:
                    self._messages.append(frame.data.decode())
            await self._flush()  # pongs and close frames the protocol answered

    async def _read(self) -> None:
        assert self._protocol is not None
        data = await self._reader.read(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._protocol.receive_data(data)

    async def _flush(self) -> None:
        assert self._protocol is not None
        for data in self._protocol.data_to_send():
            if data:
                self._writer.write(data)
        await self._writer.drain()
