"""Room events leave as one WebSocket frame written to each socket (realtime/frames.py).

What a screen must see is unchanged: every update of what it subscribed to, in order, after
what was already on its way to it; polling clients as before. What is new is a screen that
stops reading: it is skipped instead of buffered without end, and once it reads again it gets
the newest value of each metric it missed, never an older one after a newer.

These tests also guard the internals frames.py relies on (uvicorn's sans-I/O WebSocket
protocol, python-engineio's socket queue): if either changes, frames are no longer written
directly (the first test) or leave out of order (the third).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
import socketio
from engineio import packet as eio_packet

from livedash.realtime.lean_queue import LeanQueue
from livedash.realtime.rooms import room_name
from livedash.realtime.schemas import UPDATE_EVENT
from livedash.testing.recorder import Recorder
from tests.support.live import Connect, LiveServer
from tests.support.probes import gateway_of
from tests.support.stalled import StalledSocket
from tests.support.writers import Write, register_patient

METRIC = "patients_total"
PADDING = "x" * 4000  # a large update fills a stalled screen's buffers in fewer of them


def _update(department: str, version: int, *, padding: str = "") -> dict[str, Any]:
    return {
        "metric": METRIC,
        "department": department,
        "value": version,
        "version": version,
        "timestamp": datetime.now(UTC).isoformat(),
        **({"note": padding} if padding else {}),
    }


async def _scrape_room_packets(server: LiveServer, path: str) -> float:
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    line = f'livedash_room_packets_total{{path="{path}"}}'
    return float(next(row for row in text.splitlines() if row.startswith(line)).split()[-1])


async def test_an_update_is_written_to_every_subscribed_websocket_as_one_frame(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    screens = [await connect(server, token(sub=f"screen-{n}")) for n in range(3)]
    for screen in screens:
        await screen.call("subscribe_metrics", {"metrics": [METRIC], "departments": ["ED"]})
    frames = gateway_of(server).frames
    written, queued = frames.written, frames.queued

    await register_patient(writer, hospital["ED"], "Ada")

    for screen in screens:
        update = await screen.next(UPDATE_EVENT, lambda u: u["department"] == "ED")
        assert update["value"] == 2
    assert frames.written - written == 3
    assert frames.queued == queued
    assert await _scrape_room_packets(server, "written") >= 3


@contextlib.asynccontextmanager
async def _watching_ed(
    server: LiveServer, token: str, transports: list[str]
) -> AsyncIterator[tuple[socketio.AsyncClient, Recorder]]:
    """A python-socketio client on `transports`, signed in and subscribed to ED's patients."""
    client = socketio.AsyncClient(reconnection=False)
    screen = Recorder(client)
    await client.connect(server.url, auth={"token": token}, transports=transports, wait_timeout=10)
    try:
        await screen.next("authenticated")
        await screen.call("subscribe_metrics", {"metrics": [METRIC], "departments": ["ED"]})
        yield client, screen
    finally:
        if client.transport() == "polling":
            # Closed from the server's side: python-engineio leaves a pending long-poll open
            # after the client's CLOSE until the ping interval (25 s) ends it.
            await gateway_of(server).server.close_transport(client.get_sid())
        await client.disconnect()


async def test_a_polling_client_still_receives_room_updates(
    hospital: dict[str, int], server: LiveServer, token: Any, users: Any, writer: Write
) -> None:
    await users.settled()
    async with _watching_ed(server, token(), ["polling"]) as (_, screen):
        queued = gateway_of(server).frames.queued

        await register_patient(writer, hospital["ED"], "Ada")

        assert (await screen.next(UPDATE_EVENT))["value"] == 2
        assert gateway_of(server).frames.queued > queued


async def test_an_update_leaves_after_what_was_already_queued_for_that_socket(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    screen = await connect(server, token())
    await screen.call("subscribe_metrics", {"metrics": [METRIC], "departments": ["ED"]})
    gateway = gateway_of(server)
    sio = gateway.server
    (sid,) = [sid for sid, _ in sio.manager.get_participants("/", room_name(METRIC, "ED"))]
    eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
    marker = '2["connection_status",{"marker":true}]'

    # Queued for the socket's writer, which has not run yet when the update is emitted.
    await sio.eio.send_packet(eio_sid, eio_packet.Packet(eio_packet.MESSAGE, marker))
    await sio.emit(UPDATE_EVENT, _update("ED", 10**6), room=room_name(METRIC, "ED"))

    await screen.next(UPDATE_EVENT, lambda u: u["version"] == 10**6)
    names = [name for name, data in screen.events if name in ("connection_status", UPDATE_EVENT)]
    marker_at = next(
        index
        for index, (name, data) in enumerate(screen.events)
        if name == "connection_status" and data.get("marker")
    )
    update_at = next(
        index
        for index, (name, data) in enumerate(screen.events)
        if name == UPDATE_EVENT and data["version"] == 10**6
    )
    assert marker_at < update_at, names


async def test_a_screen_that_stops_reading_is_skipped_then_gets_the_newest_value_of_each_metric(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    reading = await connect(server, token(sub="reading"))
    await reading.call("subscribe_metrics", {"metrics": [METRIC], "departments": ["ED", "CARD"]})
    gateway = gateway_of(server)
    sio, frames = gateway.server, gateway.frames
    async with StalledSocket.open(server.url, token(sub="stalled")) as stalled:
        ack = await stalled.call(
            "subscribe_metrics", {"metrics": [METRIC], "departments": ["ED", "CARD"]}
        )
        assert ack["ok"] is True
        skipped = frames.skipped

        # The stalled screen reads nothing from here on; the other one reads every update.
        version = 0
        while frames.skipped - skipped < 20:
            version += 1
            assert version <= 5000, "the stalled screen was never skipped"
            for department in ("ED", "CARD"):
                update = _update(department, version, padding=PADDING)
                await sio.emit(UPDATE_EVENT, update, room=room_name(METRIC, department))
            await reading.next(UPDATE_EVENT, lambda u, v=version: u["version"] == v)
        last = version

        received = await stalled.versions_until(last, ["ED", "CARD"])

    for seen in received.values():
        assert seen == sorted(set(seen)), "an older value arrived after a newer one"
        assert seen[-1] == last
    assert sum(len(seen) for seen in received.values()) < 2 * last  # some were skipped
    assert frames.caught_up > 0
    for department in ("ED", "CARD"):  # the reading screen missed nothing
        versions = [
            u["version"] for u in reading.received(UPDATE_EVENT) if u["department"] == department
        ]
        assert versions[-last:] == list(range(1, last + 1))


async def test_a_client_that_starts_polling_upgrades_and_then_receives_frames(
    hospital: dict[str, int], server: LiveServer, token: Any, users: Any, writer: Write
) -> None:
    await users.settled()
    # As a browser connects: long-polling first, then the upgrade to WebSocket.
    async with _watching_ed(server, token(), ["polling", "websocket"]) as (client, screen):
        assert client.transport() == "websocket"  # python-engineio upgrades within connect()
        frames = gateway_of(server).frames
        written = frames.written

        await register_patient(writer, hospital["ED"], "Ada")

        assert (await screen.next(UPDATE_EVENT))["value"] == 2
        assert frames.written == written + 1
        assert (await screen.call("request_snapshot", [METRIC]))["values"]


async def test_an_upgrade_without_the_probe_leaves_the_client_on_long_polling(
    server: LiveServer,
) -> None:
    base = f"{server.url}/socket.io/?EIO=4"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}&transport=polling") as opened:
            handshake = await opened.text()
        assert handshake.startswith("0"), handshake
        sid = json.loads(handshake[1:])["sid"]
        async with http.ws_connect(f"{base}&transport=websocket&sid={sid}") as ws:
            await ws.send_str("2notaprobe")  # not the PING "probe" the upgrade starts with
            closed = await ws.receive()
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        # The Engine.IO session is still there, on long-polling: it opens a Socket.IO session.
        async with http.post(f"{base}&transport=polling&sid={sid}", data="40") as posted:
            assert posted.status == 200
        async with http.get(f"{base}&transport=polling&sid={sid}") as polled:
            assert (await polled.text()).startswith("40")
        await gateway_of(server).server.close_connection(sid)


async def test_a_served_websocket_keeps_no_request_headers_no_ping_task_and_lean_queues(
    server: LiveServer, connect: Connect, token: Any
) -> None:
    # Memory per idle socket (bench/idle_sockets.py): what the connection keeps of its request
    # and its two queues. Guards the internals realtime/frames.py and websocket.py rely on.
    screen = await connect(server, token())
    await screen.call("subscribe_metrics", {"metrics": [METRIC], "departments": ["ED"]})
    sio = gateway_of(server).server
    (eio_sid,) = list(sio.eio.sockets)
    socket = sio.eio.sockets[eio_sid]
    protocol = gateway_of(server).server.frames._connections[eio_sid].protocol

    assert isinstance(socket.queue, LeanQueue)
    assert isinstance(protocol.queue, LeanQueue)  # uvicorn's queue of received events
    environ = sio.environ[eio_sid]
    assert "wsgi.input" not in environ
    assert [key for key in environ if key.startswith("HTTP_")] == []
    assert environ["asgi.scope"]["client"]  # what the gateway still reads
    assert protocol.request is None
    assert protocol.response is None
    # websockets' parser still holds the request in its suspended generator: emptied.
    held = protocol.conn.parser.gi_frame.f_locals.get("request")
    assert held is None or list(held.headers.raw_items()) == []

    # The next ping waits on a timer, not in a task of its own.
    assert [t for t in asyncio.all_tasks() if "_send_ping" in repr(t.get_coro())] == []

    # And the connection works as before, both ways.
    assert (await screen.call("subscribe_metrics", {"metrics": [METRIC]}))["ok"] is True


async def test_an_event_that_holds_bytes_still_leaves_as_a_binary_packet(
    server: LiveServer, connect: Connect, token: Any
) -> None:
    # Frames are encoded without python-socketio's walk for binary data (frames.py): bytes
    # are found by the JSON encoder instead, and such an event takes the stock path.
    screen = await connect(server, token(sub="screen"))
    sid = screen.client.get_sid()
    await gateway_of(server).server.emit("blob", {"raw": b"\x00\xff", "n": 1}, to=sid)
    assert await screen.next("blob") == {"raw": b"\x00\xff", "n": 1}
