"""One WebSocket frame per room event, written to every socket of the room in one loop.

python-socketio sends an event to a room by starting a task per recipient; each puts the
packet on its socket's queue, whose writer task then wakes to send it. At 1,000 sockets that
path was most of the server's CPU and all of its tail latency (docs/performance.md). Here the
event is encoded once, as one WebSocket frame, and written to each socket's transport: no
task and no queue per recipient.

A frame goes straight to a socket's transport only when that is what its writer task would do
next: the socket is on WebSocket (not polling, not upgrading), nothing is queued or in flight
for it, and its transport is not paused. Otherwise the packet is queued as before, so a
socket's packets keep their order.

Backpressure, latest value only: a socket whose transport is paused (a slow or stuck client,
its buffer above the high-water mark) is skipped. Of `dashboard_update`, the newest packet of
each (metric, department) it missed is kept and queued once the transport drains; of
`dashboard_updates`, the newest value of each, all sent as one batch then; other events are
queued as before. Skipping is safe because a value only ever supersedes the ones before it:
the client ends up with the newest version of every key, as it would have.

The outbox's values of one send also reach the manager as one emit (`SocketIOFanOut.to_batched`,
one message between instances too), which `FrameManager` sorts into the groups of batched
sockets (groups.py), each group's share written here as one frame.

Internals this relies on, pinned in pyproject.toml and checked by tests/test_realtime_frames.py:

- uvicorn's sans-I/O websockets protocol, whose ASGI `send` is a method of the protocol and
  which has `transport`, `conn` (a websockets `ServerProtocol`), `writable` (cleared while
  the transport is paused), `close_sent` and `disconnected`;
- uvicorn's protocol's `queue` of received ASGI events, replaced by a `LeanQueue`;
- python-engineio's socket: `queue` (a `LeanQueue`, made by the server's `create_queue`,
  that one writer task drains), `upgraded`, `upgrading` and `closed`; and the server's
  `_async["websocket"]`, the class that runs a socket's WebSocket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from engineio import packet as eio_packet
from engineio.async_drivers.asgi import WebSocket
from socketio import packet as sio_packet
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from livedash.realtime.clients import Scope
from livedash.realtime.groups import SubscriberGroups
from livedash.realtime.lean_queue import LeanQueue
from livedash.realtime.room_index import IndexedRooms
from livedash.realtime.rooms import UPDATES_ROOM, is_metric_room
from livedash.realtime.schemas import BATCH_EVENT, UPDATE_EVENT
from livedash.realtime.websocket import ping_on_timers, serve, shed_request

Key = tuple[str, str | None]
"""What a newer packet supersedes: (metric, department) of a `dashboard_update`."""
Batched = Sequence[tuple[Key, dict[str, Any]]]
"""The updates of a `dashboard_updates`, each with its key."""

SWEEP_SECONDS = 0.02
"""How often sockets that missed updates are checked for a drained transport."""


def superseding_key(event: str, data: list[Any]) -> Key | None:
    """The key whose newer value makes this packet redundant, or None if none does."""
    if event != UPDATE_EVENT or len(data) != 1 or not isinstance(data[0], dict):
        return None
    metric = data[0].get("metric")
    department = data[0].get("department")
    if not isinstance(metric, str) or not (department is None or isinstance(department, str)):
        return None
    return metric, department


def batched_updates(event: str, data: list[Any]) -> Batched | None:
    """The updates of a `dashboard_updates` packet with their keys, or None if it is not one."""
    if event != BATCH_EVENT or len(data) != 1 or not isinstance(data[0], dict):
        return None
    updates = data[0].get("updates")
    if not isinstance(updates, list):
        return None
    keyed = []
    for update in updates:
        key = superseding_key(UPDATE_EVENT, [update])
        if key is None:
            return None
        keyed.append((key, update))
    return keyed


@dataclass
class FrameStats:
    """Packets of room events, by how they left (read by Prometheus)."""

    written: int = 0  # straight to the transport
    queued: int = 0  # through the socket's queue and writer task
    skipped: int = 0  # superseded while the transport was paused
    caught_up: int = 0  # newest missed values queued once it drained


@dataclass(slots=True)
class _Connection:
    socket: Any  # engineio.async_socket.AsyncSocket
    protocol: WebSocketsSansIOProtocol


@dataclass(slots=True)
class _Missed:
    """What a paused socket missed: the newest `dashboard_update` packet of each key, and the
    newest batched value of each key (sent as one `dashboard_updates`)."""

    packets: dict[Key, eio_packet.Packet] = field(default_factory=dict)
    updates: dict[Key, dict[str, Any]] = field(default_factory=dict)
    namespace: str = "/"


class RoomFrames:
    """Engine.IO's WebSocket connections, to which room events are written as frames."""

    def __init__(self, engine: Any, packet_class: Any = sio_packet.Packet) -> None:
        self._engine = engine
        self._packet_class = packet_class
        self._connections: dict[str, _Connection] = {}
        self._behind: dict[str, _Missed] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self.stats = FrameStats()
        # Per server: engineio's table of drivers is shared by every server of the process.
        engine._async = {**engine._async, "websocket": self._websocket}
        engine.create_queue = LeanQueue  # each socket's packets (lean_queue.py says why)
        ping_on_timers(engine)

    def send(
        self,
        packet: eio_packet.Packet,
        eio_sids: Iterable[str],
        key: Key | None,
        batched: Batched | None = None,
        namespace: str = "/",
    ) -> None:
        """Send one Engine.IO packet to each socket; never waits. `key` (a `dashboard_update`)
        or `batched` (a `dashboard_updates`) say what a paused socket may skip."""
        frame: bytes | None = None
        for eio_sid in eio_sids:
            socket = self._engine.sockets.get(eio_sid)
            if socket is None or socket.closed:
                continue
            connection = self._connections.get(eio_sid)
            if connection is None or socket.upgrading or not socket.upgraded:
                self._queue(socket, packet)
                continue
            protocol = connection.protocol
            if (
                protocol.close_sent
                or protocol.disconnected
                or protocol.conn.state is not State.OPEN
                or protocol.transport.is_closing()
            ):
                continue  # closing: its writer is ending, nothing more reaches the client
            missed = self._behind.get(eio_sid)
            if not protocol.writable.is_set():
                if key is None and batched is None:
                    self._queue(socket, packet)
                    continue
                if missed is None:
                    missed = self._behind[eio_sid] = _Missed()
                    self._schedule_sweep()
                if batched is not None:
                    missed.namespace = namespace
                    for update_key, update in batched:
                        if missed.updates.pop(update_key, None) is not None:
                            self.stats.skipped += 1
                        missed.updates[update_key] = update
                elif key is not None:
                    if missed.packets.pop(key, None) is not None:
                        self.stats.skipped += 1
                    missed.packets[key] = packet
                continue
            if missed is not None:
                self._catch_up(eio_sid, socket, missed)
            # Queued or in flight (taken from the queue, not yet written): after those.
            if socket.queue._unfinished_tasks:
                self._queue(socket, packet)
                continue
            if protocol.conn.extensions:
                # permessage-deflate negotiated: compressed per socket, as uvicorn would.
                protocol.conn.send_text(packet.encode().encode())
                protocol.transport.write(b"".join(protocol.conn.data_to_send()))
            else:
                if frame is None:
                    text = packet.encode().encode()
                    frame = Frame(Opcode.TEXT, text).serialize(mask=False)
                protocol.transport.write(frame)
            self.stats.written += 1

    def _queue(self, socket: Any, packet: eio_packet.Packet) -> None:
        socket.queue.put_nowait(packet)
        self.stats.queued += 1

    def _catch_up(self, eio_sid: str, socket: Any, missed: _Missed) -> None:
        del self._behind[eio_sid]
        for packet in missed.packets.values():
            socket.queue.put_nowait(packet)
        if missed.updates:
            batch = {"updates": list(missed.updates.values())}
            encoded = _encoded_text(self._packet_class, missed.namespace, [BATCH_EVENT, batch])
            assert encoded is not None  # JSON from the outbox: never binary
            socket.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, encoded))
        self.stats.caught_up += len(missed.packets) + len(missed.updates)

    def _schedule_sweep(self) -> None:
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep_behind)

    def _sweep_behind(self) -> None:
        self._sweep = None
        for eio_sid, missed in list(self._behind.items()):
            connection = self._connections.get(eio_sid)
            if connection is None or connection.socket.closed:
                del self._behind[eio_sid]
            elif connection.protocol.writable.is_set():
                self._catch_up(eio_sid, connection.socket, missed)
        if self._behind:
            self._schedule_sweep()

    def _websocket(self, handler: Callable[..., Any], server: Any) -> WebSocket:
        return _AttachedWebSocket(handler, server, self)

    def attach(self, socket: Any, protocol: Any) -> bool:
        """Write room events to `socket` through `protocol`'s transport, if it is uvicorn's."""
        if not isinstance(protocol, WebSocketsSansIOProtocol):
            return False
        self._connections[socket.sid] = _Connection(socket, protocol)
        return True

    def detach(self, eio_sid: str) -> None:
        """The socket's WebSocket has ended."""
        self._connections.pop(eio_sid, None)
        self._behind.pop(eio_sid, None)


class _AttachedWebSocket(WebSocket):  # type: ignore[misc]
    """python-engineio's ASGI WebSocket, known to `RoomFrames` while it runs, and served by
    livedash's own loop (websocket.py) when it is uvicorn's."""

    def __init__(self, handler: Callable[..., Any], server: Any, frames: RoomFrames) -> None:
        super().__init__(handler, server)
        self._frames = frames

    async def __call__(self, environ: dict[str, Any]) -> Any:
        socket = getattr(self.handler, "__self__", None)
        # Without middleware that wraps a WebSocket's `send`, it is uvicorn's protocol's own.
        protocol = getattr(environ.get("asgi.send"), "__self__", None)
        if socket is None or not self._frames.attach(socket, protocol):
            return await super().__call__(environ)
        try:
            self.asgi_receive = environ["asgi.receive"]
            self.asgi_send = environ["asgi.send"]
            handshake = cast(Any, protocol)
            # Swapped while empty: nothing is received before the handshake is accepted.
            handshake.queue = LeanQueue()
            await self.asgi_send({"type": "websocket.accept"})
            # uvicorn keeps the handshake's request and response (their headers, 2.3 KB of
            # RSS per socket with bench/idle_sockets.py) for the connection's life, and reads
            # neither once it has accepted (guarded by tests/test_realtime_frames.py). The
            # request stays referenced by the websockets parser's suspended generator as
            # well: its headers are emptied in place.
            if handshake.request is not None:
                handshake.request.headers.clear()
            handshake.request = handshake.response = None
            shed_request(environ)
            await serve(socket, self)
            return ""
        finally:
            self._frames.detach(socket.sid)


def _encoded_text(packet_class: Any, namespace: str, data: list[Any]) -> str | None:
    """An event packet encoded as text, or None if its data holds bytes.

    Told there is no binary data, python-socketio skips its own check, which walks the whole
    payload (a snapshot's every value and field): 2.48-2.57 ms of CPU per socket in a reconnect
    storm before, 2.37-2.40 ms after (bench/idle_sockets.py). Bytes then fail in the JSON
    encoder instead.
    """
    try:
        encoded = packet_class(sio_packet.EVENT, namespace=namespace, data=data, binary=False)
        return cast(str, encoded.encode())
    except TypeError:
        return None


class FrameManager(IndexedRooms):
    """python-socketio's manager, sending an event to a room through `RoomFrames`.

    The local part of an emit only: with the Redis manager (which derives from this one), an
    event is published as before and every instance sends it to its own sockets here. An emit
    to `UPDATES_ROOM` is one send of the outbox: each group of batched sockets gets its share
    as one `dashboard_updates`.
    """

    frames: RoomFrames | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups = SubscriberGroups()
        self.heard_batches = False
        """Whether a send to `UPDATES_ROOM` came: until one does, the leader may be from
        before batched updates (a rolling deploy), and its values reach the groups one by
        one from their rooms' emits."""

    def regroup(self, sid: str, namespace: str, scopes: frozenset[Scope]) -> None:
        """Put a batched socket in the group of exactly `scopes` (none: in no group), out of
        the one it was in; at once, so that a send finds it in one group."""
        joined = self.rooms_of.get(namespace, {}).get(sid, ())
        before = [room for room in joined if room in self.groups]
        after = self.groups.room_for(scopes) if scopes else None
        if after is not None:
            self.basic_enter_room(sid, namespace, after)
        for room in before:
            if room != after:
                self.basic_leave_room(sid, namespace, room)

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        joined = sid in self.rooms.get(namespace, {}).get(room, ())
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if not joined:
            self.groups.entered(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        joined = sid in self.rooms.get(namespace, {}).get(room, ())
        super().basic_leave_room(sid, namespace, room)
        if joined:
            self.groups.left(room)

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if room == UPDATES_ROOM:
            self.heard_batches = True
            await self._send_updates(data, namespace)
            return
        if (
            not self.heard_batches
            and is_metric_room(room)
            and superseding_key(event, [data]) is not None
        ):
            # A new leader's first send reaches the groups this way and then as its batch:
            # once twice, which the version rule makes harmless.
            await self._send_updates([data], namespace)
        if self.frames is not None and callback is None and namespace in self.rooms:
            arguments = list(data) if isinstance(data, tuple) else [] if data is None else [data]
            encoded = _encoded_text(self.server.packet_class, namespace, [event, *arguments])
            # None: binary attachments, which this API never sends: the stock path.
            if encoded is not None:
                skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
                recipients = (
                    eio_sid
                    for sid, eio_sid in self.get_participants(namespace, room)
                    if sid not in skipped
                )
                self.frames.send(
                    eio_packet.Packet(eio_packet.MESSAGE, encoded),
                    recipients,
                    superseding_key(event, arguments),
                    batched_updates(event, arguments),
                    namespace,
                )
                return
        await super().emit(
            event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
        )

    async def _send_updates(self, updates: Any, namespace: str) -> None:
        if not isinstance(updates, list) or not self.groups:
            return
        for room, share in self.groups.batches(updates).items():
            await FrameManager.emit(self, BATCH_EVENT, {"updates": share}, namespace, room=room)
