"""Shared fixtures: a migrated SQLite database, settings, real servers and clients, a hospital."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import socketio
import uvicorn

from livedash.app import create_app
from livedash.auth.tokens import issue_token
from livedash.metrics.clock import Clock
from livedash.settings import Settings
from livedash.store.migrate import upgrade
from livedash.store.models import Role
from tests.recorder import Recorder

Write = Callable[..., Awaitable[int]]
"""The `sqlite_writer` fixture: `await write(sql, parameters)`."""
Serve = Callable[..., Awaitable["LiveServer"]]
"""The `serve` fixture: `await serve(settings?, clock?)` starts a server."""
Connect = Callable[..., Awaitable[Recorder]]
"""The `connect` fixture: `await connect(server, token?)` opens a recorded client."""


@pytest.fixture
def database_path(tmp_path: Path) -> Path:
    """A migrated, empty SQLite database file."""
    path = tmp_path / "hospital.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def database_url(database_path: Path) -> str:
    return f"sqlite+aiosqlite:///{database_path}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        jwt_secret="test-secret-" + "x" * 64,
        jwt_secret_file=tmp_path / "unused-secret",
        timezone="Europe/Berlin",
        auth_timeout_seconds=5.0,
        feed_fallback_poll_seconds=30.0,
        _env_file=None,  # type: ignore[call-arg]
    )


class _Server(uvicorn.Server):
    """uvicorn with an event for "accepting connections", so tests await instead of polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class LiveServer:
    """A running service on a free loopback port."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.app = create_app(settings, clock=clock)
        # IPPROTO_TCP, so asyncio switches Nagle off on accepted sockets as uvicorn does.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on")
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> LiveServer:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        ready = asyncio.create_task(self._server.ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            ready.cancel()
            self._task.result()
            raise RuntimeError("the server stopped during start-up")
        return self

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._task = None
        self._socket.close()


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Serve]:
    """Start a live server (with `settings`, or others); every one started is stopped."""
    started: list[LiveServer] = []

    async def start(custom: Settings | None = None, clock: Clock | None = None) -> LiveServer:
        server = await LiveServer(custom or settings, clock).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def server(serve: Serve) -> LiveServer:
    return await serve()


class Users:
    """Writes `users` rows with plain sqlite3, as the hospital's administrators would."""

    def __init__(self, database_path: Path) -> None:
        self._path = database_path
        self._worker = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future[None]] = []

    def save(self, username: str, role: Role, departments: Iterable[str]) -> None:
        """Create or update `username` as an active user with `role` and `departments`."""
        row = (username, role.value, json.dumps(sorted(set(departments))))
        try:
            self._write(row, timeout=0)
        except sqlite3.OperationalError:
            # A service under test holds the write lock, and releasing it needs the event loop
            # this synchronous call is blocking: finish the write in a thread instead.
            self._pending.append(self._worker.submit(self._write, row, 10.0))

    async def settled(self) -> None:
        """Wait for writes that had to wait for the lock."""
        pending, self._pending = self._pending, []
        for write in pending:
            await asyncio.wrap_future(write)

    def close(self) -> None:
        self._worker.shutdown(wait=True)

    def _write(self, row: tuple[str, str, str], timeout: float) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None, timeout=timeout)
        try:
            connection.execute(
                "INSERT INTO users (username, role, departments, active) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (username) DO UPDATE SET role = excluded.role, "
                "departments = excluded.departments, active = 1",
                row,
            )
        finally:
            connection.close()


@pytest.fixture
def users(database_path: Path) -> Iterator[Users]:
    """The test database's `users` table, written the way an outsider would."""
    table = Users(database_path)
    yield table
    table.close()


@pytest.fixture
def token(settings: Settings, users: Users) -> Callable[..., str]:
    """Sign a token with the test settings, for an active user with that role and departments.

    `user=False` signs for a subject that has no row in `users`.
    """

    def make(
        role: Role = Role.SUPER_ADMIN,
        departments: tuple[str, ...] = (),
        *,
        user: bool = True,
        **kw: Any,
    ) -> str:
        subject = kw.pop("sub", f"test-{role.value}")
        if user:
            users.save(subject, role, departments)
        return issue_token(settings, subject, role, departments, **kw)

    return make


@pytest.fixture
async def connect(users: Users) -> AsyncIterator[Connect]:
    """Connect real socket.io clients; each is disconnected afterwards."""
    clients: list[socketio.AsyncClient] = []

    async def open_client(
        server: LiveServer, token: str | None = None, *, wait_auth: bool = True
    ) -> Recorder:
        await users.settled()
        client = socketio.AsyncClient(reconnection=False)
        recorder = Recorder(client)
        clients.append(client)
        auth = {"token": token} if token is not None else None
        await client.connect(server.url, auth=auth, transports=["websocket"], wait_timeout=10)
        if token is not None and wait_auth:
            await recorder.next("authenticated")
        return recorder

    yield open_client
    for client in clients:
        with contextlib.suppress(Exception):
            await client.disconnect()


@pytest.fixture
def sqlite_writer(database_path: Path) -> Iterator[Write]:
    """Write through a plain sqlite3 connection that knows nothing of livedash.

    The write runs in a worker thread, as it would in the hospital's own process: blocking
    the test's event loop would also stall the service under test while it holds a lock.
    """
    connection = sqlite3.connect(
        database_path, isolation_level=None, timeout=10, check_same_thread=False
    )

    def write_now(sql: str, parameters: tuple[Any, ...]) -> int:
        return int(connection.execute(sql, parameters).lastrowid or 0)

    async def write(sql: str, parameters: tuple[Any, ...] = ()) -> int:
        return await asyncio.to_thread(write_now, sql, parameters)

    yield write
    connection.close()


async def register_patient(
    write: Write, department_id: int, name: str, *, emergency: bool = False
) -> int:
    """Register a waiting patient the way the hospital's application would."""
    return await write(
        "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
        "VALUES (?, ?, 'registered', ?, ?)",
        (department_id, name, int(emergency), sql_now()),
    )


def sql_now() -> str:
    """Now, as the hospital's application writes timestamps into SQLite."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@pytest.fixture
async def hospital(sqlite_writer: Callable[..., Awaitable[int]]) -> dict[str, int]:
    """Two departments with two rooms of two beds each, one patient in each department."""
    ids: dict[str, int] = {}
    for code, name in (("ED", "Emergency"), ("CARD", "Cardiology")):
        department = await sqlite_writer(
            "INSERT INTO departments (code, name) VALUES (?, ?)", (code, name)
        )
        ids[code] = department
        for number in ("1", "2"):
            room = await sqlite_writer(
                "INSERT INTO rooms (department_id, number) VALUES (?, ?)", (department, number)
            )
            for label in ("A", "B"):
                bed = await sqlite_writer(
                    "INSERT INTO beds (room_id, label, status) VALUES (?, ?, 'free')",
                    (room, label),
                )
                ids[f"{code}-{number}{label}"] = bed
        await register_patient(sqlite_writer, department, f"first patient of {code}")
    return ids
