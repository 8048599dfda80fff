"""The bus between the embedded default's processes: the primary and its socket workers.

What Redis carries between instances in a deployment, this carries between the processes of
one embedded service (`LIVEDASH_SOCKET_WORKERS`): the metric values and causes the primary's
engine publishes, the update history's entries, and python-socketio's messages to rooms.
Each worker has one link to the primary, a Unix socket pair made before the worker starts;
the primary relays what a worker publishes to the others.

A message is a JSON object on a line of its own. A link keeps the order of its messages,
which is what makes a worker's copy of the values safe to snapshot from: the values of an
update reach it before the update itself (`livedash.cluster.mirror`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from livedash.aio import BackgroundTasks

log = structlog.get_logger(__name__)

Message = dict[str, Any]
LINE_LIMIT = 64 * 1024 * 1024  # a first sync carries every value and the whole history


def encode(message: Message) -> bytes:
    """A message as one line of the bus (without its newline)."""
    return json.dumps(message, separators=(",", ":")).encode()


class BusLink:
    """One end of a link: messages out without waiting, messages in, in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._outgoing: list[bytes] = []

    @classmethod
    async def open(cls, sock: socket.socket) -> BusLink:
        """The link over `sock`, one end of a Unix socket pair."""
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        """Queue `message` for the other end (a closed link drops it)."""
        self.send_encoded(encode(message))

    def send_encoded(self, line: bytes) -> None:
        """Queue a message `encode` made (once for every link it goes to).

        What is sent within one turn of the event loop leaves in one write: in a reconnect
        storm a worker's rate-limit calls and their answers come by the hundred."""
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(line)

    def _flush(self) -> None:
        lines, self._outgoing = self._outgoing, []
        if not self._writer.is_closing():
            self._writer.write(b"\n".join(lines) + b"\n")

    async def receive(self) -> Message | None:
        """The next message, or None once the other end has gone."""
        try:
            line = await self._reader.readline()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as error:
            log.warning("bus_link_broken", error=str(error))
            return None
        if not line:
            return None
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"not a bus message: {line[:80]!r}")
        return message

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


Handler = Callable[[str, Message], Awaitable[None]]
"""Hears every message a worker sends, with the worker's name."""


class BusHub:
    """The primary's ends of its workers' links: sends to all, relays, hears each."""

    def __init__(self) -> None:
        self._links: dict[str, BusLink] = {}
        self._handlers: list[Handler] = []
        self._readers = BackgroundTasks()

    def on_message(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def attach(self, name: str, link: BusLink, on_gone: Callable[[str], None]) -> None:
        """Hear `name` on `link` until it goes; then `on_gone(name)`."""
        self._links[name] = link
        self._readers.spawn(self._read(name, link, on_gone), name=f"livedash-bus-{name}")

    def broadcast(self, message: Message, *, skip: str | None = None) -> None:
        """Send `message` to every linked worker (but `skip`), encoded once."""
        line: bytes | None = None
        for name, link in list(self._links.items()):
            if name != skip:
                line = line or encode(message)
                link.send_encoded(line)

    def send(self, name: str, message: Message) -> None:
        link = self._links.get(name)
        if link is not None:
            link.send(message)

    async def _read(self, name: str, link: BusLink, on_gone: Callable[[str], None]) -> None:
        try:
            while (message := await link.receive()) is not None:
                for handler in self._handlers:
                    try:
                        await handler(name, message)
                    except Exception:
                        log.exception("bus_message_failed", worker=name, kind=message.get("t"))
        except ValueError as error:
            log.warning("bus_message_unreadable", worker=name, error=str(error))
        finally:
            self._links.pop(name, None)
            await link.aclose()
            on_gone(name)

    async def aclose(self) -> None:
        for link in list(self._links.values()):
            await link.aclose()
        await self._readers.close()


class Calls:
    """Requests over a link, each answered once: a worker asking the main process."""

    def __init__(self, send: Callable[[Message], None]) -> None:
        self._send = send
        self._ids = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    async def call(self, kind: str, **fields: Any) -> Any:
        """Send a `kind` request and wait for its answer's `result`."""
        self._ids += 1
        answer = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = answer
        self._send({"t": kind, "id": self._ids, **fields})
        return await answer

    def answer(self, message: Message) -> None:
        """Take in an answer (`reply`)."""
        waiting = self._waiting.pop(int(message["id"]), None)
        if waiting is None or waiting.done():
            return
        if "error" in message:
            waiting.set_exception(ConnectionError(str(message["error"])))
        else:
            waiting.set_result(message.get("result"))

    def fail_all(self, reason: str) -> None:
        """The link has gone: every request still waiting fails."""
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(ConnectionError(reason))


REPLY = "reply"


def reply(request: Message, result: Any = None, *, error: str | None = None) -> Message:
    """The answer to `request` (made by `Calls.call`)."""
    message: Message = {"t": REPLY, "id": request["id"]}
    if error is not None:
        message["error"] = error
    else:
        message["result"] = result
    return message
