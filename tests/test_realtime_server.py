"""Below the events: binary packets, malformed packets and idle connections, spoken raw.

These clients do what no Socket.IO library would: attach binary data that the API never
uses, send packets that do not decode, or open Engine.IO connections and never a session.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from livedash.realtime.schemas import ErrorPayload
from livedash.realtime.server import PacketStats
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.recorder import update_of
from livedash.testing.servers import NginxServer
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import RawSocket, gateway_of, health
from tests.support.writers import Write, register_patient

ACCEPTED = '42["connection_status"'
FRAME = b"\0" * 65_000  # under the WebSocket and Engine.IO size limits: only the count is wrong


def _gateway_packets(server: LiveServer) -> PacketStats:
    return gateway_of(server).packets


async def _scrape(server: LiveServer, kind: str) -> float:
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    line = f'livedash_refused_packets_total{{kind="{kind}"}}'
    return float(next(row for row in text.splitlines() if row.startswith(line)).split()[-1])


@pytest.mark.parametrize("signed_in", [False, True], ids=["before sign-in", "signed in"])
async def test_a_binary_packet_closes_its_connection_before_anything_is_buffered(
    signed_in: bool,
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    users: Any,
    writer: Write,
) -> None:
    bystander = await connect(server, token(sub="bystander"))
    await bystander.call("subscribe_metrics", ["patients_total"])
    await users.settled()
    event = "subscribe_metrics" if signed_in else "authenticate"
    async with aiohttp.ClientSession() as http:
        opening = RawSocket.open(http, server.url, token()) if signed_in else None
        async with opening or RawSocket.transport(http, server.url) as raw:
            if not signed_in:
                await raw.ws.send_str("40")
                assert (await raw.receive()).startswith("40")
            # A binary event announcing far more attachments than will ever come.
            placeholder = json.dumps([event, {"_placeholder": True, "num": 0}])
            await raw.ws.send_str(f"459999999999-{placeholder}")
            closing = asyncio.create_task(raw.closed())
            sent = 0
            while not closing.done() and sent < 1000:
                try:
                    await raw.ws.send_bytes(FRAME)
                except ConnectionError:
                    break
                sent += 1
                await asyncio.sleep(0)  # lets the read side see the server's close
            async with asyncio.timeout(10):
                await closing
    assert _gateway_packets(server).binary >= 1
    assert await _scrape(server, "binary") >= 1
    # Everyone else is served as before.
    await register_patient(writer, hospital["ED"], "after the binary flood")
    await bystander.next("dashboard_update", update_of("patients_total", "ED", 2))


async def test_a_connection_that_never_opens_a_session_is_counted_and_closed(
    hospital: dict[str, int], serve: Serve, settings: Settings, connect: Connect, token: Any
) -> None:
    server = await serve(
        settings.model_copy(
            update={"rate_limit_connections_per_ip": "2/minute", "auth_timeout_seconds": 0.5}
        )
    )
    async with aiohttp.ClientSession() as http:
        async with RawSocket.transport(http, server.url) as idle:
            async with asyncio.timeout(10):
                closing = await idle.closed()
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert _gateway_packets(server).idle_closed == 1
        assert await _scrape(server, "no_session") == 1
        async with RawSocket.transport(http, server.url):
            # Two connections from this address this minute: a third, even a real client
            # with a token, is refused with the reason.
            refused = await connect(server, token(), wait_auth=False)
            error = ErrorPayload.model_validate(await refused.next("error"))
            assert (error.code, error.details["per"]) == ("rate_limited", "address")


async def test_the_sign_in_timeout_closes_the_connection_not_only_the_session(
    hospital: dict[str, int], serve: Serve, settings: Settings
) -> None:
    server = await serve(settings.model_copy(update={"auth_timeout_seconds": 0.5}))
    async with aiohttp.ClientSession() as http, RawSocket.transport(http, server.url) as raw:
        await raw.ws.send_str("40")
        assert (await raw.receive()).startswith("40")
        got: list[str] = []
        async with asyncio.timeout(10):
            while not (message := await raw.receive()).startswith("41"):
                got.append(message)
            closing = await raw.closed()
    assert any(message.startswith('42["auth_error"') for message in got)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_malformed_packets_are_counted_not_logged(
    hospital: dict[str, int],
    server: LiveServer,
    token: Any,
    users: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await users.settled()
    caplog.set_level(logging.DEBUG)
    malformed = ["42[]", "42", '42{"not": "a list"}', "4x", "49", '42["x"'] * 50
    async with aiohttp.ClientSession() as http, RawSocket.open(http, server.url, token()) as raw:
        for packet in malformed:
            await raw.ws.send_str(packet)
        # Answered after every packet before it was handled: the socket still works.
        await raw.ws.send_str("421" + json.dumps(["request_snapshot", ["beds_free"]]))
        while not (await raw.receive()).startswith("431"):
            pass
    assert _gateway_packets(server).malformed >= 250
    assert await _scrape(server, "malformed") >= 250
    # Nothing per packet at a level production logs (warnings and up), no traceback at all.
    loud = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert not loud, loud[0].getMessage()
    assert not [record for record in caplog.records if record.exc_info]


async def test_health_tells_the_public_only_whether_the_instance_serves(
    hospital: dict[str, int], server: LiveServer, token: Any, users: Any
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        public = await http.get("/health")
        viewer = token(Role.VIEWER)
        await users.settled()
        refused = await http.get("/health", headers={"Authorization": f"Bearer {viewer}"})
        forged = await http.get("/health", headers={"Authorization": "Bearer not-a-token"})
    assert (public.status_code, public.json()) == (200, {"status": "ok"})
    assert refused.status_code == 403
    assert forged.status_code == 401
    details = await health(server.url, token())
    assert details["status"] == "ok"
    assert {"role", "feed_position", "last_change_at", "sockets", "transports"} <= details.keys()


async def test_behind_nginx_connections_count_against_the_real_client_address(
    hospital: dict[str, int], serve: Serve, settings: Settings, tmp_path: Path
) -> None:
    server = await serve(settings.model_copy(update={"rate_limit_connections_per_ip": "2/minute"}))
    nginx = NginxServer(tmp_path / "nginx", [server.port]).start()
    try:

        async def connect_from(source: str, claimed: str) -> str:
            """The first event answering a connect from `source`, which claims to be
            `claimed` in its own X-Forwarded-For: `connection_status`, or a refusal."""
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            headers = {"X-Forwarded-For": claimed}
            async with (
                aiohttp.ClientSession(connector=connector, headers=headers) as http,
                RawSocket.transport(http, nginx.url) as raw,
            ):
                await raw.ws.send_str("40")
                while not (answer := await raw.receive()).startswith("42"):
                    pass
                return answer

        # A client cannot pass for others by what it claims: nginx appends the address it
        # saw, and only that one (from the trusted proxy) is believed.
        for claimed in ("10.0.0.1", "10.0.0.2"):
            assert (await connect_from("127.0.0.2", claimed)).startswith(ACCEPTED)
        refused = await connect_from("127.0.0.2", "10.0.0.3")
        assert '"code":"rate_limited"' in refused
        assert '"per":"address"' in refused
        # Another client behind the same nginx is not locked out with it.
        assert (await connect_from("127.0.0.3", "10.0.0.1")).startswith(ACCEPTED)
    finally:
        nginx.stop()
