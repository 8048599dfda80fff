"""Size limits on a live server: request bodies (chunked or not), request heads, 422 answers.

The uploads here go through a raw socket that reads the answer while it is still sending, so
a test sees how much of a body the server took before it refused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import socketio
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.auth.api_keys import create_api_key
from livedash.settings import Settings
from livedash.store.engine import create_engine
from livedash.testing.recorder import Recorder
from livedash.testing.servers import NginxServer
from livedash.web.auth_api import MAX_BODY_BYTES
from livedash.web.problems import PROBLEM_JSON, Problem
from livedash.web.request_limits import DEFAULT_MAX_BODY_BYTES, MAX_REQUEST_HEAD_BYTES
from tests.support.live import LiveServer, Serve
from tests.support.rest import problem_of
from tests.support.writers import Users

MiB = 1024 * 1024
UPLOAD_BYTES = 32 * MiB
# What the server may take past a limit before its refusal reaches the client: uvicorn's read
# buffer and the kernel's socket buffers (about 256 KiB measured on loopback).
SLACK_BYTES = 4 * MiB
ANSWER_SECONDS = 30.0  # a bound on a refusal that never comes, not a wait
MARKER = "zq-echo-probe-7c1f"


@dataclass
class Answer:
    """A response head and body, and how many body bytes the client had sent by then."""

    status: int
    headers: dict[str, str]
    body: bytes
    sent: int
    closed: bool


class _Connection:
    """A raw client socket whose reads still see what arrived after its writes failed.

    (An asyncio transport drops everything unread once a write fails, and a server that closes
    with a body still arriving resets the connection.)
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buffer = b""

    @classmethod
    async def open(cls, port: int) -> _Connection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small send buffer, so that what the client has sent is what the server side took.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def receive_more(self) -> bool:
        data = await self.loop.sock_recv(self.sock, 64 * 1024)
        self.buffer += data
        return bool(data)

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lower-case names) and body."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self.receive_more():
                raise ConnectionError("closed before an answer")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > 64 * 1024:
            return int(status_line.split()[1]), headers, b""
        while len(self.buffer) < length:
            if not await self.receive_more():
                raise ConnectionError("closed within an answer")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    async def closed(self) -> bool:
        """Whether the server closes the connection (within the bound), reading what is left."""
        try:
            async with asyncio.timeout(ANSWER_SECONDS):
                while await self.receive_more():
                    pass
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


async def chunked_upload(
    server: LiveServer | NginxServer,
    path: str,
    start: bytes,
    *,
    headers: dict[str, str] | None = None,
    total: int = UPLOAD_BYTES,
) -> Answer:
    """POST `start` and then filler, `total` bytes in all, without a Content-Length."""
    connection = await _Connection.open(server.port)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    sent = 0

    async def upload() -> None:
        nonlocal sent
        await connection.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        filler = b"x" * (64 * 1024)
        piece = start
        while sent < total:
            await connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            piece = filler
        await connection.send(b"0\r\n\r\n")

    uploading = asyncio.create_task(upload())
    try:
        async with asyncio.timeout(ANSWER_SECONDS):
            status, answer_headers, body = await connection.answer()
        sent_then = sent
        uploading.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await uploading
        closed = await connection.closed()
    finally:
        uploading.cancel()
        connection.close()
    return Answer(status, answer_headers, body, sent_then, closed)


def expect_refused(answer: Answer, limit: int) -> None:
    """A 413 as problem details, before the client had sent much past `limit`."""
    assert answer.status == 413, answer
    assert answer.headers["content-type"] == PROBLEM_JSON
    error = Problem.model_validate_json(answer.body)
    assert (error.code, error.status) == ("payload_too_large", 413)
    assert str(limit) in error.detail
    assert answer.sent < limit + SLACK_BYTES, answer.sent
    assert answer.closed


async def test_a_chunked_login_is_refused_while_it_arrives(server: LiveServer) -> None:
    start = json.dumps({"username": "ann", "password": ""}).encode()[:-2]  # an open string
    answer = await chunked_upload(server, "/api/auth/login", start)
    expect_refused(answer, MAX_BODY_BYTES)
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/health")).status_code == 200


async def test_a_declared_length_over_the_limit_is_refused_unread(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        login = await client.post("/api/auth/login", content=b"{" + b" " * MAX_BODY_BYTES + b"}")
        other = await client.post("/health", content=b"x" * (DEFAULT_MAX_BODY_BYTES + 1))
        fits = await client.post(
            "/api/auth/login", json={"username": "nobody", "password": "x" * 1000}
        )
    for response, limit in ((login, MAX_BODY_BYTES), (other, DEFAULT_MAX_BODY_BYTES)):
        assert response.status_code == 413, response.text
        assert response.headers["connection"] == "close"
        assert str(limit) in problem_of(response, 413, "payload_too_large").detail
        assert response.headers["x-content-type-options"] == "nosniff"  # inside SecurityHeaders
    assert fits.status_code == 401


async def test_a_chunked_engineio_post_is_refused_while_it_arrives(
    server: LiveServer, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        opened = await client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert opened.status_code == 200
    sid = json.loads(opened.text[1:])["sid"]
    answer = await chunked_upload(
        server, f"/socket.io/?EIO=4&transport=polling&sid={sid}", b"42" + b'["x","'
    )
    expect_refused(answer, settings.max_payload_bytes)


async def test_long_polling_within_the_limit_still_works(
    serve: Serve, settings: Settings, token: Callable[..., str], users: Users
) -> None:
    # A polling client's disconnect waits out its last long-poll: short pings end it sooner.
    quick = {"ping_interval_seconds": 1.0, "ping_timeout_seconds": 1.0}
    server = await serve(settings.model_copy(update=quick))
    await users.settled()
    client = socketio.AsyncClient(reconnection=False)
    recorder = Recorder(client)
    try:
        await client.connect(server.url, auth={"token": token()}, transports=["polling"])
        await recorder.next("authenticated")
        # A request as large as a client may send, in one polling POST.
        metrics = ["patients_total"] * (server.settings.max_list_length)
        answer = await recorder.call("subscribe_metrics", {"metrics": metrics})
        assert answer["ok"] is True, answer
        assert client.transport() == "polling"
    finally:
        await client.disconnect()


@pytest.fixture
async def api_key(database_url: str) -> str:
    engine: AsyncEngine = create_engine(database_url, writer=True)
    try:
        return await create_api_key(engine, "main-app")
    finally:
        await engine.dispose()


async def test_a_chunked_ingest_is_refused_while_it_arrives(
    server: LiveServer, settings: Settings, api_key: str
) -> None:
    start = b'{"operations": [{"table": "beds", "op": "update", "row": {"id": 1, "label": "'
    answer = await chunked_upload(
        server, "/api/ingest", start, headers={"Authorization": f"Bearer {api_key}"}
    )
    expect_refused(answer, settings.max_payload_bytes)


async def test_an_answer_before_the_body_is_read_closes_the_connection(
    server: LiveServer,
) -> None:
    # Refused for its missing key before the body is read: the rest is not read either.
    answer = await chunked_upload(server, "/api/ingest", b"{")
    assert answer.status == 401
    assert answer.headers["connection"] == "close"
    assert answer.sent < SLACK_BYTES, answer.sent
    assert answer.closed


async def test_validation_errors_do_not_repeat_what_was_sent(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        wrong_types = await client.post(
            "/api/auth/login",
            json={"username": [MARKER], "password": {MARKER: MARKER}, MARKER: MARKER},
        )
        too_long = await client.post(
            "/api/auth/login", json={"username": MARKER * 20, "password": MARKER}
        )
        many = await client.post(
            "/api/auth/login",
            json={"username": "ann", "password": "x", **{f"{MARKER}{i}": 0 for i in range(100)}},
        )
        not_json = await client.post(
            "/api/auth/refresh",
            content=f'{{"refresh_token": "{MARKER}"',
            headers={"Content-Type": "application/json"},
        )
    for response in (wrong_types, too_long, many, not_json):
        assert response.status_code == 422, response.text
        assert MARKER not in response.text
        assert len(response.content) < 1024
        problem_of(response, 422, "invalid_payload")
    assert "body.username" in wrong_types.json()["detail"]
    assert "body.username" in too_long.json()["detail"]
    assert "and 95 more" in many.json()["detail"]


async def _send_head(server: LiveServer, padding: int) -> tuple[bool, bytes]:
    """Send a GET with a header of `padding` bytes; whether it was closed, and what came back."""
    connection = await _Connection.open(server.port)
    try:
        with contextlib.suppress(ConnectionError):
            await connection.send(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Padding: "
            )
            await connection.send(b"a" * padding + b"\r\n\r\n")
        return await connection.closed(), connection.buffer
    finally:
        connection.close()


@pytest.mark.parametrize("size", [100_000, MiB])
async def test_an_oversized_request_head_is_refused(server: LiveServer, size: int) -> None:
    closed, answer = await _send_head(server, size)
    # Refused (431, or 400 from the parser) and closed, or closed outright; never served.
    assert closed
    assert answer == b"" or answer.split()[1] in (b"400", b"431"), answer[:100]


async def test_a_head_just_over_the_limit_is_a_431_problem(server: LiveServer) -> None:
    _, answer = await _send_head(server, MAX_REQUEST_HEAD_BYTES)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"431", answer[:100]
    assert f"content-type: {PROBLEM_JSON}".encode() in head.lower()
    refusal = Problem.model_validate_json(body)
    assert (refusal.status, refusal.code) == (431, "headers_too_large")
    assert str(MAX_REQUEST_HEAD_BYTES) in refusal.detail
    assert refusal.instance is None  # the path may be what made the head too large


async def test_a_head_within_the_limit_is_served(server: LiveServer) -> None:
    _, answer = await _send_head(server, MAX_REQUEST_HEAD_BYTES // 2)
    assert answer.split()[1] == b"200", answer[:100]


async def test_an_oversized_websocket_handshake_is_refused(server: LiveServer) -> None:
    # Lines short enough for the WebSocket library's own limits, too many for ours.
    padding = "".join(f"X-Padding-{n}: {'a' * 4000}\r\n" for n in range(8))
    handshake = (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{padding}\r\n"
    )
    connection = await _Connection.open(server.port)
    try:
        await connection.send(handshake.encode("latin-1"))
        async with asyncio.timeout(ANSWER_SECONDS):
            while b"\r\n" not in connection.buffer and await connection.receive_more():
                pass
    finally:
        connection.close()
    # Refused before the upgrade (403 is what a server answers a WebSocket closed that early).
    assert connection.buffer.split()[1] in (b"400", b"403", b"431"), connection.buffer[:100]


async def test_nginx_refuses_floods_and_oversized_bodies_before_an_instance_does(
    server: LiveServer, tmp_path: Path
) -> None:
    nginx = NginxServer(tmp_path / "nginx", [server.port]).start()
    try:
        oversized = await chunked_upload(nginx, "/api/ingest", b"[", total=4 * MiB)
        assert oversized.status == 413
        assert b"nginx" in oversized.body  # nginx's own page: the instance never saw it
        assert oversized.sent < 64 * 1024 + SLACK_BYTES

        async with httpx.AsyncClient(base_url=nginx.url) as client:
            answers = [
                await client.post("/api/auth/refresh", json={"refresh_token": "made.up"})
                for _ in range(60)
            ]
    finally:
        nginx.stop()
    # A burst of 30 beyond the steady 2 a second reaches the instance (which refuses the
    # made-up token); the rest is refused by nginx, well before livedash's own 120 a minute.
    refused_by_nginx = [a for a in answers if a.status_code == 429 and b"nginx" in a.content]
    assert {a.status_code for a in answers} == {401, 429}
    assert len(refused_by_nginx) >= 20
    assert all(a.status_code == 401 for a in answers[:31])
