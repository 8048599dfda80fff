"""Handing a new WebSocket connection from the main process to a socket worker.

The main process accepts every connection on the service's port. When the first bytes of one
are a complete Engine.IO WebSocket handshake that opens a new session (`transport=websocket`,
no `sid`), it sends the connection's file descriptor and those bytes to a socket worker (in
turn) over a Unix socket, and forgets it; the worker's uvicorn goes on from those bytes as if
it had accepted the connection itself. Everything else stays: the page, the REST API, and
long-polling sessions, whose requests must all reach the process that holds the session (the
main process), as Node's socket.io needs `@socket.io/sticky` for.

A connection is given away before anything has been answered on it, so nothing is lost if
the worker's end is gone: the main process serves it.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

HANDSHAKE_PATH = b"GET /socket.io/?"
MAX_HEAD_BYTES = 16 * 1024


def opens_websocket_session(head: bytes) -> bool:
    """Whether `head`, a connection's first bytes, is a whole Engine.IO WebSocket handshake
    that opens a new session."""
    if not head.startswith(HANDSHAKE_PATH) or len(head) > MAX_HEAD_BYTES:
        return False
    end = head.find(b"\r\n\r\n")
    if end < 0 or end + 4 != len(head):
        return False  # incomplete, or more than the handshake (pipelined): served here
    request_line, _, headers = head[:end].partition(b"\r\n")
    query = request_line.split(b" ", 2)[1].partition(b"?")[2]
    fields = {name for name, _, _ in (pair.partition(b"=") for pair in query.split(b"&"))}
    if b"sid" in fields or b"transport=websocket" not in query.split(b"&"):
        return False
    return any(
        line.partition(b":")[0].strip().lower() == b"upgrade"
        and line.partition(b":")[2].strip().lower() == b"websocket"
        for line in headers.split(b"\r\n")
    )


class HandOff:
    """The main process's side: the workers that take connections, in turn."""

    def __init__(self) -> None:
        self._channels: dict[str, socket.socket] = {}
        self._turn = itertools.count()
        self.given = 0
        self.kept = 0  # handshakes served here: no worker ready, or one that refused

    def add(self, name: str, channel: socket.socket) -> None:
        """Give connections to `name` through `channel` (its end of a SOCK_SEQPACKET pair)."""
        channel.setblocking(False)
        self._channels[name] = channel

    def remove(self, name: str) -> None:
        channel = self._channels.pop(name, None)
        if channel is not None:
            channel.close()

    def give(self, transport: asyncio.Transport, head: bytes) -> bool:
        """Send the connection under `transport` and its first bytes to a worker; True if one
        took it (the caller then lets go of it without closing the connection)."""
        sock = transport.get_extra_info("socket")
        names = list(self._channels)
        if sock is None or not names:
            self.kept += 1
            return False
        start = next(self._turn)
        for step in range(len(names)):
            name = names[(start + step) % len(names)]
            try:
                socket.send_fds(self._channels[name], [head], [sock.fileno()])
            except BlockingIOError:
                continue  # its queue is full: the next one
            except OSError as error:
                log.warning("socket_worker_unreachable", worker=name, error=str(error))
                self.remove(name)
                continue
            self.given += 1
            return True
        self.kept += 1
        return False


def handing_off(protocol_class: type[Any], hand_off: HandOff) -> type[Any]:
    """`protocol_class` (uvicorn's h11 protocol), giving new WebSocket sessions to workers."""

    class HandingOff(protocol_class):  # type: ignore[misc]
        _first = True

        def data_received(self, data: bytes) -> None:
            if self._first:
                self._first = False
                if opens_websocket_session(data) and hand_off.give(self.transport, data):
                    # The worker holds the connection now; closing this process's descriptor
                    # neither shuts it down nor sends anything.
                    self.transport.abort()
                    return
            super().data_received(data)

    return HandingOff


class _Resumed(asyncio.Protocol):
    """Hands a received connection to the real protocol with the bytes read before."""

    def __init__(self, protocol: asyncio.Protocol, head: bytes) -> None:
        self._protocol = protocol
        self._head = head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.set_protocol(self._protocol)
        self._protocol.connection_made(transport)
        self._protocol.data_received(self._head)


def receive_connections(
    channel: socket.socket, create_protocol: Callable[[], asyncio.Protocol]
) -> Callable[[], None]:
    """The worker's side: serve each connection arriving on `channel` with a new protocol
    from `create_protocol`; returns the function that stops receiving."""
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    pending: set[asyncio.Task[Any]] = set()

    def readable() -> None:
        while True:
            try:
                head, fds, _flags, _address = socket.recv_fds(channel, MAX_HEAD_BYTES, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.warning("hand_off_channel_broken", error=str(error))
                loop.remove_reader(channel.fileno())
                return
            if not fds:
                if not head:  # the main process has gone
                    loop.remove_reader(channel.fileno())
                return
            sock = socket.socket(fileno=fds[0])
            resumed = _Resumed(create_protocol(), head)
            task = loop.create_task(loop.connect_accepted_socket(_made(resumed), sock))
            pending.add(task)
            task.add_done_callback(_settled(pending, sock))

    loop.add_reader(channel.fileno(), readable)

    def stop() -> None:
        loop.remove_reader(channel.fileno())

    return stop


def _made(protocol: asyncio.Protocol) -> Callable[[], asyncio.Protocol]:
    return lambda: protocol


def _settled(pending: set[asyncio.Task[Any]], sock: socket.socket) -> Callable[[Any], None]:
    def settled(task: asyncio.Task[Any]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("handed_connection_failed", error=str(task.exception()))
            sock.close()

    return settled
