"""python-socketio's rooms with an index from each session to the rooms it is in.

python-socketio finds a session's rooms by testing every room of the namespace, on every
disconnect: each session has a room of its own, so with N sockets connected a disconnect costs
O(N), and N screens dropping together (a network blip, a proxy reload) cost O(N²) on the event
loop just as they reconnect: 11 s of CPU for 10,000 (bench/disconnects.py). Here a disconnect
costs the rooms its session is in: 0.05 s for the same 10,000.

The overridden methods are python-socketio's own (`BaseManager`), pinned with it in
pyproject.toml and checked by tests/test_realtime_room_index.py.
"""

from __future__ import annotations

from typing import Any

import socketio


class IndexedRooms(socketio.AsyncManager):  # type: ignore[misc]
    """`socketio.AsyncManager` that also keeps, for each session, the rooms it is in (a short
    list: a set and a tuple key per session cost 10 MB more at 10,000 sockets)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rooms_of: dict[str, dict[str, list[Any]]] = {}
        """Namespace -> session -> the rooms it is in (None: connected; its own sid)."""

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        joined = self.rooms_of.setdefault(namespace, {}).setdefault(sid, [])
        if room not in joined:
            joined.append(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        sessions = self.rooms_of.get(namespace)
        joined = sessions.get(sid) if sessions is not None else None
        if sessions is None or joined is None or room not in joined:
            return
        joined.remove(room)
        if not joined:
            del sessions[sid]
            if not sessions:
                del self.rooms_of[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        joined = self.rooms_of.get(namespace, {}).get(sid, ())
        return [room for room in joined if room is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        if namespace not in self.rooms:
            return
        for room in list(self.rooms_of.get(namespace, {}).get(sid, ())):
            self.basic_leave_room(sid, namespace, room)
        # The rest as python-socketio's own.
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]
