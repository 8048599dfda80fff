"""A disconnect costs the rooms its session is in, not every room of the namespace
(realtime/room_index.py); and the rooms come out as python-socketio's own manager leaves them,
which guards the internals the index overrides."""

from __future__ import annotations

import random
from typing import Any

import socketio

from livedash.realtime.frames import FrameManager
from livedash.realtime.rooms import room_name
from livedash.realtime.schemas import UPDATE_EVENT
from tests.support.live import Connect, LiveServer
from tests.support.polling import read_until
from tests.support.probes import gateway_of
from tests.support.writers import Write, register_patient

NAMESPACE = "/"


class ScanCounting(dict[Any, Any]):
    """A namespace's rooms that count every walk through all of them."""

    scans = 0

    def copy(self) -> dict[Any, Any]:
        ScanCounting.scans += 1
        return dict(self)

    def items(self) -> Any:
        ScanCounting.scans += 1
        return super().items()


def _connect(manager: socketio.AsyncManager, sid: str, rooms: list[str]) -> None:
    manager.basic_enter_room(sid, NAMESPACE, None, eio_sid=f"eio-{sid}")
    manager.basic_enter_room(sid, NAMESPACE, sid)
    for room in rooms:
        manager.basic_enter_room(sid, NAMESPACE, room)


def _state(manager: socketio.AsyncManager) -> tuple[Any, ...]:
    rooms = {
        namespace: {room: dict(members) for room, members in by_room.items()}
        for namespace, by_room in manager.rooms.items()
    }
    return rooms, manager.callbacks, manager.pending_connect, manager.pending_disconnect


def test_a_disconnect_does_not_walk_every_room() -> None:
    manager = FrameManager()
    for n in range(200):
        _connect(manager, f"s{n}", [room_name("patients_total", "ED"), f"user|u{n}"])
    manager.rooms[NAMESPACE] = ScanCounting(manager.rooms[NAMESPACE])
    ScanCounting.scans = 0

    manager.basic_disconnect("s7", NAMESPACE)

    assert ScanCounting.scans == 0
    assert all("s7" not in members for members in manager.rooms[NAMESPACE].values())
    assert "user|u7" not in manager.rooms[NAMESPACE]
    assert len(manager.rooms[NAMESPACE][room_name("patients_total", "ED")]) == 199
    assert sorted(manager.get_rooms("s8", NAMESPACE)) == sorted(
        ["s8", "user|u8", room_name("patients_total", "ED")]
    )


def _operations(seed: int, count: int) -> list[tuple[str, str, str]]:
    """Joins, leaves, closed rooms and disconnects of sessions that come and go."""
    rng = random.Random(seed)
    rooms = [room_name("patients_total", code) for code in ("ED", "CARD", None)]
    rooms += ["alerts|hospital", "user|a", "user|b"]
    connected: list[str] = []
    operations = []
    for step in range(count):
        action = rng.random()
        if action < 0.3 or not connected:
            connected.append(f"s{step}")
            operations.append(("connect", connected[-1], rng.choice(rooms)))
        elif action < 0.5:
            operations.append(("join", rng.choice(connected), rng.choice(rooms)))
        elif action < 0.7:
            operations.append(("leave", rng.choice(connected), rng.choice(rooms)))
        elif action < 0.75:
            operations.append(("close", "", rng.choice(rooms)))
        else:
            sid = rng.choice(connected)
            connected.remove(sid)
            operations.append(("disconnect", sid, ""))
    return operations


def _apply(manager: socketio.AsyncManager, operation: tuple[str, str, str]) -> None:
    kind, sid, room = operation
    if kind == "connect":
        _connect(manager, sid, [room])
        manager.pending_connect.setdefault(NAMESPACE, []).append(sid)
        manager.callbacks[sid] = {1: "ack"}
    elif kind == "join":
        manager.basic_enter_room(sid, NAMESPACE, room)
    elif kind == "leave":
        manager.basic_leave_room(sid, NAMESPACE, room)
    elif kind == "close":
        manager.basic_close_room(room, NAMESPACE)
    else:
        manager.pending_disconnect.setdefault(NAMESPACE, []).append(sid)
        manager.basic_disconnect(sid, NAMESPACE)


def test_rooms_end_as_python_socketios_own_manager_leaves_them() -> None:
    # The same operations on the stock manager and on ours: if python-socketio changes what a
    # disconnect clears, or how rooms are kept, this fails.
    ours, stock = FrameManager(), socketio.AsyncManager()
    sessions: set[str] = set()
    for step, operation in enumerate(_operations(seed=14, count=600)):
        for manager in (ours, stock):
            _apply(manager, operation)
        kind, sid, _room = operation
        if kind == "connect":
            sessions.add(sid)
        elif kind == "disconnect":
            sessions.discard(sid)
        assert _state(ours) == _state(stock), (step, operation)
        for session in sessions:
            assert sorted(ours.get_rooms(session, NAMESPACE), key=str) == sorted(
                stock.get_rooms(session, NAMESPACE), key=str
            ), (step, session)


async def test_a_screen_that_leaves_is_gone_from_every_room_and_others_still_get_updates(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    staying = await connect(server, token(sub="staying"))
    leaving = await connect(server, token(sub="leaving"))
    for screen in (staying, leaving):
        await screen.call("subscribe_metrics", {"metrics": ["patients_total"]})
    sid = leaving.client.get_sid()
    manager = gateway_of(server).server.manager
    assert len(manager.get_rooms(sid, NAMESPACE)) > 2  # its own, its user's, metric rooms

    gateway = gateway_of(server)
    await leaving.client.disconnect()

    async def connected() -> int:
        return gateway.connected

    await read_until(connected, lambda count: count == 1, what="the server's sockets", every=0.01)
    await register_patient(writer, hospital["ED"], "Ada")

    update = await staying.next(UPDATE_EVENT, lambda u: u["department"] == "ED")
    assert update["value"] == 2
    assert all(sid not in members for members in manager.rooms[NAMESPACE].values())
    assert sid not in manager.rooms_of.get(NAMESPACE, {})
