"""python-socketio's server, hardened where the gateway's handlers cannot reach.

Three defences sit below the Socket.IO events, on the Engine.IO connection itself:

- **No binary packets.** The realtime API has none, and python-socketio would buffer every
  attachment of a binary packet, without a cap, before any handler sees it. The first binary
  packet or frame closes its connection; nothing of it is kept.
- **Malformed packets are counted, not logged.** A packet python-socketio cannot decode (say
  `42[]`) is dropped and counted in `PacketStats`; one line per packet would let a client
  write the log as fast as it can send.
- **Every Engine.IO connection is admitted and timed.** A connection counts against its
  client's address (and the instance's `max_connections`) when it opens, whether or not it
  ever opens a Socket.IO session; one that has not opened a session within the sign-in
  timeout is closed. A refusal is kept with the connection, so that the Socket.IO connect
  that follows is answered with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio
import structlog

from livedash.errors import ClientError
from livedash.realtime.frames import FrameManager, RoomFrames

log = structlog.get_logger(__name__)

REFUSAL = "livedash.refusal"
"""Key of the environ (one per Engine.IO connection) holding why it was refused, if it was."""

# Socket.IO packet types (the first character of an encoded packet) that announce attachments.
_BINARY_TYPES = frozenset("56")
_EVENT_TYPES = frozenset("23")  # EVENT and ACK: only within a session

Admit = Callable[[dict[str, Any]], Awaitable[ClientError | None]]
"""Decides whether a new Engine.IO connection (its environ) may be served: None, or why not."""


@dataclass
class PacketStats:
    """Packets refused below the event handlers, by kind (read by Prometheus)."""

    binary: int = 0
    malformed: int = 0
    idle_closed: int = 0


class GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    """An `AsyncServer` that refuses binary packets, drops malformed ones quietly, and admits
    and times out connections at the Engine.IO level."""

    def __init__(self, *, session_deadline: float, **options: Any) -> None:
        super().__init__(client_manager=FrameManager(), **options)
        # Room events leave as one frame per room, written to each socket (frames.py).
        self.frames = RoomFrames(self.eio, self.packet_class)
        self.manager.frames = self.frames
        self.packets = PacketStats()
        self._session_deadline = session_deadline
        self._admit: Admit | None = None
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Future[None]] = set()

    async def shutdown(self) -> None:
        """Stop python-socketio's background work, and the pub/sub manager's listener too,
        which the stock shutdown leaves running: it outlived the app, retried against the
        closed Redis client and held the process's exit for good (20 s per stop in tests)."""
        await super().shutdown()
        listener = getattr(self.manager, "thread", None)
        if isinstance(listener, asyncio.Task) and not listener.done():
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def use_manager(self, manager: socketio.AsyncManager) -> None:
        """Fan out through `manager` (Redis, shared by the instances) instead of the
        in-process one; before the first connection, since the manager starts with it."""
        manager.set_server(self)
        if isinstance(manager, FrameManager):
            manager.frames = self.frames
        self.manager = manager

    def admit_with(self, admit: Admit) -> None:
        """Ask `admit` about every new Engine.IO connection."""
        self._admit = admit

    @property
    def transports(self) -> int:
        """Engine.IO connections open on this instance, with a Socket.IO session or not."""
        return len(self.eio.sockets)

    async def close_transport(self, sid: str) -> None:
        """End a Socket.IO session and close its Engine.IO connection too.

        python-socketio's `disconnect` ends the session only: the connection would stay open,
        answering pings, for as long as the client likes.
        """
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        await self.disconnect(sid)
        if eio_sid is not None:
            await self.close_connection(eio_sid)

    async def hand_over(self, sid: str) -> None:
        """Close a Socket.IO session's Engine.IO connection once what is queued for it went
        out, so that its client reconnects (behind a load balancer, to another instance).

        No CLOSE packet and no namespace disconnect: after either, a Socket.IO client does
        not reconnect on its own.
        """
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        connection = self.eio.sockets.get(eio_sid) if eio_sid else None
        if connection is None:
            await self.disconnect(sid)
            return
        # The writer sends what is queued up to this None, then closes the WebSocket; the
        # queue is joined once all of it went out.
        connection.queue.put_nowait(None)
        await connection.queue.join()
        # Calls the disconnect handler; a polling client fails its next request.
        await connection.close(wait=False, abort=True)

    async def close_connection(self, eio_sid: str) -> None:
        """Close an Engine.IO connection whether or not its client agrees.

        python-engineio's `disconnect` sends a CLOSE packet and waits for the client to hang
        up: one that ignores it stays connected, and its packets are still read.
        """
        connection = self.eio.sockets.get(eio_sid)
        if connection is None:
            return
        await connection.close(wait=False)
        # The writer sends what is queued (the CLOSE packet) up to this None, then closes
        # the WebSocket (or ends the long-poll).
        connection.queue.put_nowait(None)

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        self._arm_deadline(eio_sid)
        if self._admit is not None:
            refusal = await self._admit(environ)
            if refusal is not None:
                environ[REFUSAL] = refusal
        return result

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if isinstance(data, bytes | bytearray) or (
            isinstance(data, str) and data[:1] in _BINARY_TYPES
        ):
            self.packets.binary += 1
            log.info("binary_packet_refused", eio_sid=eio_sid)
            await self.close_connection(eio_sid)
            return
        if data[:1] in _EVENT_TYPES and self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            # An event before (or without) a session: python-socketio would log a warning
            # for each one.
            self.packets.malformed += 1
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as error:
            # Handlers run as tasks of their own: what arrives here failed to decode or to
            # dispatch, which only a malformed packet does.
            self.packets.malformed += 1
            log.debug("malformed_packet", eio_sid=eio_sid, error=type(error).__name__)

    async def _handle_disconnect(self, eio_sid: str, namespace: Any, reason: Any = None) -> None:
        await super()._handle_disconnect(eio_sid, namespace, reason)
        if reason == self.reason.CLIENT_DISCONNECT and eio_sid in self.eio.sockets:
            # The client ended its session but keeps the connection: it gets the same time
            # to open a new one as a new connection does.
            self._arm_deadline(eio_sid)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        deadline = self._deadlines.pop(eio_sid, None)
        if deadline is not None:
            deadline.cancel()
        await super()._handle_eio_disconnect(eio_sid, reason)

    def _arm_deadline(self, eio_sid: str) -> None:
        previous = self._deadlines.pop(eio_sid, None)
        if previous is not None:
            previous.cancel()
        loop = asyncio.get_running_loop()
        self._deadlines[eio_sid] = loop.call_later(
            self._session_deadline, self._close_without_session, eio_sid
        )

    def _close_without_session(self, eio_sid: str) -> None:
        self._deadlines.pop(eio_sid, None)
        if self.manager.sid_from_eio_sid(eio_sid, "/") is not None:
            return
        self.packets.idle_closed += 1
        log.info("transport_without_session_closed", eio_sid=eio_sid)
        closing = asyncio.ensure_future(self.close_connection(eio_sid))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
