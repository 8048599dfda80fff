"""Fan-out: the one narrow interface between the gateway and the socket layer.

The gateway only ever emits to rooms, never loops over sockets; a faster frame-level
broadcaster can replace `SocketIOFanOut` by implementing these methods.
"""

from __future__ import annotations

from typing import Any, Protocol

import socketio

from livedash.observability.breaker import CircuitBreaker, State
from livedash.realtime.clients import Scope
from livedash.realtime.rooms import UPDATES_ROOM


class FanOut(Protocol):
    """Rooms of sockets, and events sent to a room or one socket."""

    async def join(self, sid: str, room: str) -> None: ...

    async def leave(self, sid: str, room: str) -> None: ...

    async def to_room(self, room: str, event: str, payload: Any) -> None: ...

    async def to_socket(self, sid: str, event: str, payload: Any) -> None: ...

    async def to_batched(self, payloads: list[dict[str, Any]]) -> None:
        """One send of metric updates to the batched sockets: to each, those of its scopes as
        one `dashboard_updates`."""
        ...

    async def batch(self, sid: str, scopes: frozenset[Scope]) -> None:
        """Send a batched socket the updates of `scopes`, and no others (none: it leaves)."""
        ...


class SocketIOFanOut:
    """Fan-out through python-socketio's rooms (and its manager, local or Redis)."""

    def __init__(
        self, server: socketio.AsyncServer, *, breaker: CircuitBreaker | None = None
    ) -> None:
        self._server = server
        # While Redis is down (its breaker is not closed), publishing to the other instances
        # only fails (and logs) for every update: send to this instance's sockets alone.
        self._breaker = breaker

    def _local_only(self) -> bool:
        return self._breaker is not None and self._breaker.state is not State.CLOSED

    async def join(self, sid: str, room: str) -> None:
        await self._server.enter_room(sid, room)

    async def leave(self, sid: str, room: str) -> None:
        await self._server.leave_room(sid, room)

    async def to_room(self, room: str, event: str, payload: Any) -> None:
        await self._server.emit(event, payload, room=room, ignore_queue=self._local_only())

    async def to_socket(self, sid: str, event: str, payload: Any) -> None:
        # Our own sockets only: no need to publish a reply through Redis to every instance.
        await self._server.emit(event, payload, to=sid, ignore_queue=True)

    async def to_batched(self, payloads: list[dict[str, Any]]) -> None:
        # One emit, one message to the other instances: each sorts the values into its own
        # sockets' groups (frames.FrameManager).
        await self._server.emit(
            "updates", payloads, room=UPDATES_ROOM, ignore_queue=self._local_only()
        )

    async def batch(self, sid: str, scopes: frozenset[Scope]) -> None:
        self._server.manager.regroup(sid, "/", scopes)
