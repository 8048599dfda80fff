"""Connections: the per-instance cap, the heartbeat, and handing clients over on shutdown.

Every wait here is on an event: a client's, or the gateway's forgetting a socket (`Departures`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio

from livedash.cluster.runner import FeedRunner
from livedash.realtime.gateway import Gateway
from livedash.realtime.schemas import ErrorPayload
from livedash.settings import Settings
from livedash.store.migrate import upgrade_async
from livedash.testing.recorder import Recorder, update_of
from tests.support import probes
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import RawSocket, health
from tests.support.service import InProcessService
from tests.support.writers import Write, register_patient


def gateway_of(server: LiveServer) -> Gateway:
    """The gateway inside a live server's app."""
    return probes.gateway_of(server)


class Departures:
    """Lets a test await the gateway's forgetting sockets: woken after every disconnect."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()

    async def handled(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, condition: Callable[[], bool], *, within: float = 10.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(condition)


@pytest.fixture
def departures(monkeypatch: pytest.MonkeyPatch) -> Departures:
    """Watch the disconnect handler of every gateway created from now on."""
    watcher = Departures()
    handle = Gateway._on_disconnect

    async def watched(self: Gateway, sid: str, *args: Any) -> dict[str, Any] | None:
        try:
            return await handle(self, sid, *args)
        finally:
            await watcher.handled()

    monkeypatch.setattr(Gateway, "_on_disconnect", watched)
    return watcher


# -- the connection cap ------------------------------------------------------------------


@pytest.mark.both_backends
async def test_a_socket_over_the_cap_is_told_why_before_it_is_refused(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    departures: Departures,
) -> None:
    server = await serve(settings.model_copy(update={"max_connections": 2}))
    gateway = gateway_of(server)
    first = await connect(server, token())
    second = await connect(server, token())

    third = await connect(server, token(), wait_auth=False)
    error = ErrorPayload.model_validate(await third.next("error"))
    assert (error.code, error.event, error.details) == (
        "too_many_connections",
        "connect",
        {"limit": 2},
    )
    assert error.retry_after is not None
    assert 0 < error.retry_after <= 60
    async with asyncio.timeout(5):
        await third.disconnected.wait()
    assert [event for event, _ in third.events] == ["error"]  # no status, no data
    assert gateway.connected == 2
    assert (await health(server.url, token()))["sockets"] == 2
    for client in (first, second):
        assert (await client.call("request_snapshot", ["beds_free"]))["values"]

    await first.client.disconnect()
    await departures.until(lambda: gateway.connected == 1)
    fourth = await connect(server, token())  # waits for `authenticated`
    assert (await fourth.call("request_snapshot", ["beds_free"]))["values"]
    assert fourth.received("connection_status")[0]["status"] == "connected"
    assert (await health(server.url, token()))["sockets"] == 2


# -- the heartbeat -----------------------------------------------------------------------


async def test_a_client_that_stops_answering_pings_is_forgotten(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    token: Any,
    users: Any,
    departures: Departures,
) -> None:
    interval, timeout = 0.25, 0.5
    server = await serve(
        settings.model_copy(
            update={"ping_interval_seconds": interval, "ping_timeout_seconds": timeout}
        )
    )
    gateway = gateway_of(server)
    alive_token, silent_token = token(sub="alive"), token(sub="silent")
    await users.settled()
    async with (
        aiohttp.ClientSession() as http,
        RawSocket.open(http, server.url, alive_token) as alive,
    ):
        answering = asyncio.create_task(alive.receive())  # answers pings; nothing else comes
        try:
            async with RawSocket.open(http, server.url, silent_token):
                assert gateway.connected == 2
                stopped = time.monotonic()  # the silent one reads nothing from now on
                await departures.until(
                    lambda: gateway.connected == 1, within=interval + timeout + 5
                )
                gone_after = time.monotonic() - stopped
            assert gone_after < interval + timeout + 1.0, gone_after  # 1 s for a busy machine
            assert (await health(server.url, token()))["sockets"] == 1
            # The one forgotten is the silent one: the other is still served.
            assert alive.pings >= 2  # each answered ping is followed by the next
            assert not answering.done()
            await alive.ws.send_str("42" + json.dumps(["request_snapshot", ["beds_free"]]))
            async with asyncio.timeout(10):
                assert (await answering).startswith('42["metrics_snapshot"')
        finally:
            answering.cancel()


# -- draining ----------------------------------------------------------------------------


class Balancer:
    """A TCP load balancer with one backend at a time: `target` is where new connections go."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> Balancer:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        for task in (
            asyncio.create_task(pipe(reader, upstream_writer)),
            asyncio.create_task(pipe(upstream_reader, writer)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)


async def test_draining_hands_clients_over_to_another_instance(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    token: Any,
    users: Any,
    tmp_path: Path,
) -> None:
    draining = await serve()
    other_database = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    await upgrade_async(other_database)
    other = await serve(
        settings.model_copy(update={"database_url": other_database, "check_users": False})
    )
    signed = token()
    await users.settled()
    client = socketio.AsyncClient(reconnection_delay=0.05, randomization_factor=0)
    screen = Recorder(client)
    async with Balancer(draining.port) as balancer:
        try:
            await client.connect(balancer.url, auth={"token": signed}, transports=["websocket"])
            await screen.next("authenticated")
            assert gateway_of(draining).connected == 1

            balancer.target = other.port  # the balancer no longer sends anyone to `draining`
            await gateway_of(draining).drain()
            status = await screen.next("connection_status", lambda s: s["status"] == "draining")
            assert status["authenticated"] is True
            assert gateway_of(draining).connected == 0
            # The client reconnects on its own (a transport close, not "io server disconnect")
            # and reaches the other instance, with its token.
            async with asyncio.timeout(10):
                await screen.disconnected.wait()
            reconnected = await screen.next("authenticated")
            assert reconnected["sub"] == "test-super_admin"
            assert gateway_of(other).connected == 1
        finally:
            await client.disconnect()


@pytest.mark.both_backends
async def test_a_draining_instance_tells_its_clients_and_refuses_new_ones(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    gateway = gateway_of(server)
    anonymous = await connect(server)
    watcher = await connect(server, token())
    await watcher.call("subscribe_metrics", ["patients_total"])
    await gateway.drain()
    for client, authenticated in ((anonymous, False), (watcher, True)):
        status = await client.next("connection_status", lambda s: s["status"] == "draining")
        assert status["authenticated"] is authenticated
        async with asyncio.timeout(5):
            await client.disconnected.wait()
    assert gateway.connected == 0
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get("/health")
    assert answer.status_code == 503  # a load balancer's check sends new clients elsewhere
    assert answer.json() == {"status": "draining"}
    assert (await health(server.url, token()))["sockets"] == 0

    # Whoever still reaches it is told so, and refused.
    late = await connect(server, token(), wait_auth=False)
    error = ErrorPayload.model_validate(await late.next("error"))
    assert (error.code, error.event, error.retry_after) == ("draining", "connect", None)
    async with asyncio.timeout(5):
        await late.disconnected.wait()
    assert [event for event, _ in late.events] == ["error"]  # no status, no data
    assert gateway.connected == 0
    await gateway.drain()  # again: nothing left to do


@pytest.mark.both_backends
async def test_the_app_drains_before_its_feed_stops(
    hospital: dict[str, int],
    serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lifespan's exit stack unwinds last-in first: the drain is pushed after the runner."""
    calls: list[str] = []
    drain, stop = Gateway.drain, FeedRunner.stop

    async def drained(self: Gateway) -> None:
        calls.append("drain")
        await drain(self)

    async def stopped(self: FeedRunner, database_lost: bool = False) -> None:
        calls.append("stop")
        await stop(self, database_lost)

    monkeypatch.setattr(Gateway, "drain", drained)
    monkeypatch.setattr(FeedRunner, "stop", stopped)
    server = await serve()
    await server.stop()
    assert calls == ["drain", "stop"]


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[InProcessService]:
    """`livedash serve`'s own uvicorn server (the one that drains first), in this process."""
    running = InProcessService(
        # Only the stop stores the feed position.
        settings.model_copy(update={"feed_confirm_interval_seconds": 3600.0})
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def stored_position(database_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(database_path)) as connection:
        row = connection.execute(
            "SELECT position FROM feed_positions WHERE consumer = 'metrics'"
        ).fetchone()
    return int(row[0]) if row else 0


async def test_stopping_hands_clients_over_then_stores_the_feed_position(
    hospital: dict[str, int],
    service: InProcessService,
    connect: Connect,
    token: Any,
    writer: Write,
    database_path: Path,
) -> None:
    signed = token()  # saving its user is a change too: before the position is read
    client = await connect(service, signed)
    await client.call("subscribe_metrics", ["patients_total"])
    await register_patient(writer, hospital["ED"], "just before the stop")
    await client.next("dashboard_update", update_of("patients_total", "ED", 2))
    applied = (await health(service.url, signed))["feed_position"]
    assert stored_position(database_path) < applied  # not stored yet: only the stop does

    started = time.monotonic()
    await service.stop()
    assert time.monotonic() - started < service.server.config.timeout_graceful_shutdown
    status = await client.next("connection_status", lambda s: s["status"] == "draining")
    assert status["authenticated"] is True
    async with asyncio.timeout(5):
        await client.disconnected.wait()
    assert stored_position(database_path) == applied
