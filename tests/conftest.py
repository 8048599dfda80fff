"""Shared fixtures: a migrated SQLite database, settings, real servers and clients, a hospital."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import socketio
from playwright.async_api import Browser
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.auth.tokens import issue_token
from livedash.metrics.clock import Clock
from livedash.settings import Settings
from livedash.store.engine import create_engine, libpq_dsn
from livedash.store.migrate import upgrade_async
from livedash.store.models import Role
from livedash.testing.recorder import Recorder
from livedash.testing.servers import PostgresServer, RedisServer, new_root
from tests.support.browser import Screens, Sign, chromium
from tests.support.cases import TEMPLATE_DATABASE
from tests.support.instances import Instance, ServeProcess
from tests.support.live import Connect, LiveServer, Serve
from tests.support.logs import use_test_logging
from tests.support.main_app import MainApp
from tests.support.writers import PostgresWriter, SqliteWriter, Users, Write, register_patient

BACKENDS = ["sqlite", "postgres"]
_DATABASE_NUMBERS = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    use_test_logging()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Tests marked `both_backends` run on SQLite (memory fan-out) and PostgreSQL (with Redis).
    if metafunc.definition.get_closest_marker("both_backends") and (
        "backend" in metafunc.fixturenames
    ):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test: "sqlite" unless marked `both_backends`."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster (wal_level=logical) for the session; a database per test."""
    root = new_root("livedash-pg-")
    server = PostgresServer(root).init().start()
    try:
        # Session fixtures may be set up inside a test's running loop: use a thread's own.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, _prepare_template(server)).result()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _prepare_template(server: PostgresServer) -> None:
    await server.create_database(TEMPLATE_DATABASE)
    await upgrade_async(server.url(TEMPLATE_DATABASE))


@pytest.fixture
async def own_postgres() -> AsyncIterator[PostgresServer]:
    """A PostgreSQL server of this test's own, which it may kill (never the session's)."""
    root = new_root("livedash-own-pg-")
    server = await asyncio.to_thread(lambda: PostgresServer(root).init().start())
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def main_app() -> Iterator[MainApp]:
    """The main application's health URL: `mode` "ok" (200), "error" (500) or "hang"."""
    app = MainApp()
    app.thread.start()
    yield app
    app.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own, so a test may kill it."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on this test's database, as the service opens one."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def database_path(database_url: str, backend: str) -> Path:
    """The migrated, empty SQLite database file of this test (SQLite tests only)."""
    if backend != "sqlite":
        raise RuntimeError("database_path is a SQLite file; this test runs on " + backend)
    return Path(str(make_url(database_url).database))


@pytest.fixture
async def database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A migrated, empty database of this test's backend."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hospital.db'}"
        await upgrade_async(url)
        yield url
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"t{next(_DATABASE_NUMBERS)}_{os.getpid()}"
    url = await server.create_database(name, template=TEMPLATE_DATABASE)
    yield url
    await server.drop_database(name)


@pytest.fixture
def settings(
    database_url: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    production: dict[str, Any] = {}
    if backend == "postgres":
        redis: RedisServer = request.getfixturevalue("redis_server")
        production = {
            "redis_url": redis.url,
            "feed_slot": "slot_" + make_url(database_url).database,  # type: ignore[operator]
        }
    # No alert rules unless a test gives some: the defaults depend on the time of day
    # (revenue by 14:00), and a test must not.
    no_rules = tmp_path / "no-alert-rules.yaml"
    no_rules.write_text("rules: []\n")
    return Settings(
        database_url=database_url,
        **production,
        alert_rules_file=no_rules,
        jwt_secret="test-secret-" + "x" * 64,
        jwt_secret_file=tmp_path / "unused-secret",
        timezone="Europe/Berlin",
        auth_timeout_seconds=5.0,
        feed_fallback_poll_seconds=30.0,
        report_dir=tmp_path / "reports",
        report_settle_seconds=0.0,  # scheduled runs at their time (tests/test_reports_schedules)
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def serve(settings: Settings, users: Users) -> AsyncIterator[Serve]:
    """Start a live server (with `settings`, or others); every one started is stopped.

    Each request and WebSocket waits for the `users` rows `token` could not write at once
    (while the service held SQLite's write lock): a user exists before signing in.
    """
    started: list[LiveServer] = []

    async def start(custom: Settings | None = None, clock: Clock | None = None) -> LiveServer:
        server = await LiveServer(custom or settings, clock, before_each=users.settled).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def serve_process(
    settings: Settings, token: Callable[..., str], tmp_path: Path
) -> AsyncIterator[ServeProcess]:
    """Start `livedash serve` in a process of its own (with `settings`, and `env` on top), as
    an operator would, to be stopped and started again on its port; each is stopped."""
    started: list[Instance] = []
    # One operator for all, made before the first starts: its `users` row is no change to
    # the feed the instances read.
    operator = token()

    async def start(env: Mapping[str, str] | None = None) -> Instance:
        service = Instance(
            settings,
            tmp_path / f"service-{len(started)}.log",
            operator,
            env={"LIVEDASH_REPORT_DIR": str(settings.report_dir), **(env or {})},
        )
        started.append(service)
        return await service.start()

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def two_instances(
    serve_process: ServeProcess, redis_server: RedisServer, hospital: dict[str, int]
) -> list[Instance]:
    """Two `livedash serve` processes sharing the test's database and Redis: the first to
    start leads, the second waits for the leader lock."""
    return [await serve_process(), await serve_process()]


@pytest.fixture
async def server(serve: Serve) -> LiveServer:
    return await serve()


@pytest.fixture
def users(backend: str, database_url: str, request: pytest.FixtureRequest) -> Iterator[Users]:
    """The test database's `users` table, written the way an outsider would."""
    table = Users(
        request.getfixturevalue("database_path") if backend == "sqlite" else libpq_dsn(database_url)
    )
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
        server: LiveServer,
        token: str | None = None,
        *,
        wait_auth: bool = True,
        handshake: Mapping[str, Any] | None = None,
    ) -> Recorder:
        """`handshake`: more of the handshake's `auth` (as `{"updates": "batched"}`)."""
        await users.settled()
        client = socketio.AsyncClient(reconnection=False)
        recorder = Recorder(client)
        clients.append(client)
        auth = {"token": token} if token is not None else None
        if handshake is not None:
            auth = {**(auth or {}), **handshake}
        await client.connect(server.url, auth=auth, transports=["websocket"], wait_timeout=10)
        if token is not None and wait_auth:
            await recorder.next("authenticated")
        return recorder

    yield open_client
    for client in clients:
        with contextlib.suppress(Exception):
            await client.disconnect()


@pytest.fixture
async def writer(
    backend: str, database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Write]:
    """Write as a program that knows nothing of livedash: sqlite3, or asyncpg on PostgreSQL."""
    write: SqliteWriter | PostgresWriter
    if backend == "sqlite":
        write = SqliteWriter(request.getfixturevalue("database_path"))
    else:
        write = PostgresWriter(libpq_dsn(database_url))
    yield write
    await write.close()


@pytest.fixture
async def sqlite_writer(database_path: Path) -> AsyncIterator[Write]:
    """Write through a plain sqlite3 connection (tests of SQLite itself)."""
    write = SqliteWriter(database_path)
    yield write
    await write.close()


@pytest.fixture
async def hospital(writer: Write) -> dict[str, int]:
    """Two departments with two rooms of two beds each, one patient in each department."""
    ids: dict[str, int] = {}
    for code, name in (("ED", "Emergency"), ("CARD", "Cardiology")):
        department = await writer(
            "INSERT INTO departments (code, name) VALUES (?, ?)", (code, name)
        )
        ids[code] = department
        for number in ("1", "2"):
            room = await writer(
                "INSERT INTO rooms (department_id, number) VALUES (?, ?)", (department, number)
            )
            for label in ("A", "B"):
                bed = await writer(
                    "INSERT INTO beds (room_id, label, status) VALUES (?, ?, 'free')",
                    (room, label),
                )
                ids[f"{code}-{number}{label}"] = bed
        await register_patient(writer, department, f"first patient of {code}")
    return ids


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium; function-scoped: playwright is bound to the event loop that started
    it, and the live server fixtures run on each test's own loop."""
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def screens(browser: Browser) -> AsyncIterator[Screens]:
    """Open pages; any script error or CSP violation fails the test."""
    opened = Screens(browser)
    yield opened
    await opened.close()


@pytest.fixture
def sign(token: Callable[..., str], users: Users) -> Sign:
    """`token()`, once its user's row is written (a busy service may hold the write lock)."""

    async def make(*args: Any, **kw: Any) -> str:
        signed = token(*args, **kw)
        await users.settled()
        return signed

    return make
