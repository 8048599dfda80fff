"""Commit-to-screen latency, on the embedded default (SQLite) or a deployment (PostgreSQL).

A writer process inserts one patient per tick into one department with a plain driver, as the
hospital's own application would. The service runs as separate processes (`livedash serve`),
so neither the clients nor the writer share its event loop. N socket.io clients subscribe to
that department's `patients_total` and note when each `dashboard_update` arrives; the latency
of an update is its arrival minus the commit that produced its value.

    .venv/bin/python bench/latency.py --clients 100 --writes-per-second 50 --seconds 20
    .venv/bin/python bench/latency.py --backend postgres --instances 2 --clients 1000 \\
        --writes-per-second 200 --seconds 20

On SQLite, one server and every client in this process. On PostgreSQL: a throwaway cluster
(wal_level=logical), Redis, `--instances` servers and nginx in front (deploy/nginx.conf), all
on free loopback ports and all stopped at the end; the clients connect through nginx from
several loopback source addresses, so that its address hash spreads them over the instances,
and run in `--client-processes` processes.

Figures are printed, never asserted. The clients' own loop lag and CPU time are printed too,
so a saturated bench can be told apart from a slow server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing
import os
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import FrameType
from typing import Any

import socketio

import livedash
from livedash.auth.tokens import issue_token
from livedash.settings import Settings
from livedash.store.migrate import upgrade
from livedash.store.models import Role
from processes import WorkerProcesses

METRIC = "patients_total"
WATCHED = "ED"
DEPARTMENTS = (("ED", "Emergency"), ("CARD", "Cardiology"), ("ICU", "Intensive Care"))
ROOMS_PER_DEPARTMENT = 3
BEDS_PER_ROOM = 4
PATIENTS_PER_DEPARTMENT = 5
OPERATOR = "bench-operator"
"""A super_admin user: /health shows its details (role, sockets, feed) only to such a token."""

CONNECT_CONCURRENCY = 50
HEALTH_DEADLINE_SECONDS = 30.0
DRAIN_SECONDS = 5.0
STOP_SECONDS = 10.0
LAG_TICK_SECONDS = 0.01

# PostgreSQL only.
REPO = Path(__file__).resolve().parent.parent
DATABASE = "hospital"
FEED_SLOT = "bench"
CLIENT_ADDRESSES = 200  # loopback source addresses 127.0.0.2...: nginx pins each to an instance
# Default --client-processes: one per this many clients. An update reaches every client at
# once; one loop reading 1000 sockets stamps the last of them ~100 ms late (measured: p50
# loop lag 59 ms with 1000 clients in one process, 1 ms with 250).
CLIENTS_PER_PROCESS = 250
FEED_SAMPLE_SECONDS = 0.25

_SERVER = "from livedash.cli import main; main()"


# -- the database ----------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def seed_hospital(path: Path) -> int:
    """Add a small hospital (unless there is one); the watched department's id."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        connection.execute("BEGIN IMMEDIATE")
        for code, name in DEPARTMENTS:
            if connection.execute("SELECT 1 FROM departments WHERE code = ?", (code,)).fetchone():
                continue
            department = connection.execute(
                "INSERT INTO departments (code, name) VALUES (?, ?)", (code, name)
            ).lastrowid
            for number in range(1, ROOMS_PER_DEPARTMENT + 1):
                room = connection.execute(
                    "INSERT INTO rooms (department_id, number) VALUES (?, ?)",
                    (department, str(number)),
                ).lastrowid
                for bed in range(BEDS_PER_ROOM):
                    connection.execute(
                        "INSERT INTO beds (room_id, label, status) VALUES (?, ?, 'free')",
                        (room, chr(ord("A") + bed)),
                    )
            for index in range(PATIENTS_PER_DEPARTMENT):
                connection.execute(
                    "INSERT INTO patients (department_id, name, status, emergency, registered_at)"
                    " VALUES (?, ?, 'registered', 0, ?)",
                    (department, f"{code} patient {index}", _now()),
                )
        connection.execute("COMMIT")
        row = connection.execute("SELECT id FROM departments WHERE code = ?", (WATCHED,)).fetchone()
        return int(row[0])
    finally:
        connection.close()


def _utc_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def seed_hospital_postgres(dsn: str, users: int) -> int:
    """The same hospital and the tokens' users (`OPERATOR` too), on PostgreSQL; the watched
    department's id."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            for code, name in DEPARTMENTS:
                if await connection.fetchval("SELECT 1 FROM departments WHERE code = $1", code):
                    continue
                department = await connection.fetchval(
                    "INSERT INTO departments (code, name) VALUES ($1, $2) RETURNING id", code, name
                )
                for number in range(1, ROOMS_PER_DEPARTMENT + 1):
                    room = await connection.fetchval(
                        "INSERT INTO rooms (department_id, number) VALUES ($1, $2) RETURNING id",
                        department,
                        str(number),
                    )
                    await connection.executemany(
                        "INSERT INTO beds (room_id, label, status) VALUES ($1, $2, 'free')",
                        [(room, chr(ord("A") + bed)) for bed in range(BEDS_PER_ROOM)],
                    )
                await connection.executemany(
                    "INSERT INTO patients (department_id, name, status, emergency, registered_at)"
                    " VALUES ($1, $2, 'registered', false, $3)",
                    [
                        (department, f"{code} patient {index}", _utc_naive())
                        for index in range(PATIENTS_PER_DEPARTMENT)
                    ],
                )
            await connection.executemany(
                "INSERT INTO users (username, role, departments, active) VALUES ($1, $2, $3, true)",
                [
                    *((f"bench-{index}", "viewer", f'["{WATCHED}"]') for index in range(users)),
                    (OPERATOR, "super_admin", "[]"),
                ],
            )
        return int(await connection.fetchval("SELECT id FROM departments WHERE code = $1", WATCHED))
    finally:
        await connection.close()


@dataclass
class Writes:
    """What the writer did; sent back from its process as plain data."""

    start_value: int = 0
    commits: dict[int, float] = field(default_factory=dict)
    """patients_total of the watched department after a commit -> time.time() of it."""
    measured: list[int] = field(default_factory=list)
    """Values committed after the warm-up."""
    commit_seconds: list[float] = field(default_factory=list)
    measured_span: float = 0.0
    """Monotonic seconds from the first to the last measured commit."""
    final_value: int = 0
    error: str | None = None


def _write_on_schedule(
    insert: Callable[[int], None],
    start_value: int,
    rate: float,
    warmup: float,
    seconds: float,
    go: EventType,
    stop: EventType,
) -> Writes:
    """Once `go` is set, `insert(n)` (one committed patient) per tick on a monotonic schedule;
    the time of each commit is noted right after `insert` returns."""
    writes = Writes(start_value=start_value, final_value=start_value)
    go.wait()
    total = round(rate * (warmup + seconds))
    started = time.monotonic()
    measuring_from = started + warmup
    first = last = 0.0
    for n in range(1, total + 1):
        delay = started + n / rate - time.monotonic()
        if (delay > 0 and stop.wait(delay)) or stop.is_set():
            break
        before = time.perf_counter()
        insert(n)
        committed = time.time()
        last = time.monotonic()
        value = writes.start_value + n
        writes.commits[value] = committed
        writes.final_value = value
        if last >= measuring_from:
            first = first or last
            writes.measured.append(value)
            writes.commit_seconds.append(time.perf_counter() - before)
    writes.measured_span = last - first if first else 0.0
    return writes


def write_patients(
    path: Path,
    department_id: int,
    rate: float,
    warmup: float,
    seconds: float,
    go: EventType,
    stop: EventType,
    results: Connection,
) -> None:
    """The SQLite writer process: plain sqlite3."""
    # Ctrl-C is the parent's to handle: it sets `stop`, and the figures so far come back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    writes = Writes()
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            start_value = connection.execute(
                "SELECT COUNT(*) FROM patients WHERE department_id = ?", (department_id,)
            ).fetchone()[0]

            def insert(n: int) -> None:
                # In autocommit mode this one statement is its own transaction: once
                # execute() returns, the row and its change_log entry are committed.
                connection.execute(
                    "INSERT INTO patients (department_id, name, status, emergency, registered_at)"
                    " VALUES (?, ?, 'registered', 0, ?)",
                    (department_id, f"bench patient {n}", _now()),
                )

            writes = _write_on_schedule(insert, start_value, rate, warmup, seconds, go, stop)
        finally:
            connection.close()
    except Exception as error:
        writes.error = f"{type(error).__name__}: {error}"
    results.send(asdict(writes))


def write_patients_postgres(
    dsn: str,
    department_id: int,
    rate: float,
    warmup: float,
    seconds: float,
    go: EventType,
    stop: EventType,
    results: Connection,
) -> None:
    """The PostgreSQL writer process: one plain asyncpg connection, outside any transaction."""
    import asyncpg

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    writes = Writes()
    # The schedule is the SQLite writer's own (blocking waits): this loop runs one statement
    # at a time and nothing in between.
    loop = asyncio.new_event_loop()
    try:
        connection = loop.run_until_complete(asyncpg.connect(dsn))
        try:
            start_value = loop.run_until_complete(
                connection.fetchval(
                    "SELECT COUNT(*) FROM patients WHERE department_id = $1", department_id
                )
            )

            def insert(n: int) -> None:
                # Outside a transaction block the statement is its own transaction: once
                # execute() returns, PostgreSQL has committed it (synchronous_commit is on).
                loop.run_until_complete(
                    connection.execute(
                        "INSERT INTO patients (department_id, name, status, emergency,"
                        " registered_at) VALUES ($1, $2, 'registered', false, $3)",
                        department_id,
                        f"bench patient {n}",
                        _utc_naive(),
                    )
                )

            writes = _write_on_schedule(insert, start_value, rate, warmup, seconds, go, stop)
        finally:
            loop.run_until_complete(connection.close(timeout=5))
    except Exception as error:
        writes.error = f"{type(error).__name__}: {error}"
    finally:
        loop.close()
    results.send(asdict(writes))


class WriterProcess:
    """The writer in its own process: a thread here would share the clients' GIL, and the
    time it notes after a commit would then include waiting for the clients' event loop."""

    def __init__(
        self,
        db: Path | str,
        department_id: int,
        rate: float,
        warmup: float,
        seconds: float,
        target: Callable[..., None] = write_patients,
    ):
        context = multiprocessing.get_context("spawn")
        self._go = context.Event()
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=target,
            args=(db, department_id, rate, warmup, seconds, self._go, self._stop, sender),
            name="bench-writer",
            daemon=True,
        )
        self._sender = sender

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def __enter__(self) -> WriterProcess:
        self._process.start()
        self._sender.close()  # so that recv() sees EOF if the writer dies
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._go.set()  # a writer still waiting to start sees `stop` at once
        self._process.join(STOP_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    async def run(self) -> Writes:
        """Start writing; the figures once the writer is done."""
        self._go.set()
        try:
            sent = await asyncio.to_thread(self._receive)
        finally:
            self._stop.set()  # on Ctrl-C: the writer ends and sends what it has
        writes = Writes(**sent)
        if writes.error is not None:
            raise RuntimeError(f"the writer failed: {writes.error}")
        return writes

    def _receive(self) -> dict[str, Any]:
        try:
            sent: dict[str, Any] = self._results.recv()
        except EOFError:
            raise RuntimeError("the writer process died without a word") from None
        return sent


# -- the server process ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_seconds(stat: str, *, children: bool = False) -> float:
    """utime + stime (and, with `children`, the reaped children's) from /proc/PID/stat."""
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime and stime: fields 14 and 15 of proc(5), cutime and cstime 16 and 17, counted
    # after the ")".
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_queue_seconds(pid: int | str = "self") -> float:
    """Seconds the process's main thread (its event loop) was runnable but not running: it
    waited for a CPU that other processes held (/proc/PID/schedstat)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    return 0.0


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of process `root` and all its descendants, reaped ones included."""
    parents: dict[int, int] = {}
    stats: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            stats[int(entry.name)] = stat
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    # A child's time moves into its parent's cutime/cstime when it is reaped: counting both
    # for every process in the tree counts each second once, before and after.
    return sum(_cpu_seconds(stats[pid], children=True) for pid in tree if pid in stats)


class ServerProcess:
    """`livedash serve` in a child process, stopped on exit whatever happened."""

    def __init__(
        self,
        db: Path | None,
        port: int,
        workdir: Path,
        secret: str,
        *,
        env: dict[str, str] | None = None,
        name: str = "server",
        health_token: str | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.health_headers = {"Authorization": f"Bearer {health_token}"} if health_token else {}
        """What `GET /health` sends to get the details: a super_admin's (`OPERATOR`) token."""
        self.log_path = workdir / f"{name}.log"
        self._command = [sys.executable, "-c", _SERVER, "serve"]
        if db is not None:
            self._command += ["--db", str(db)]
        self._command += ["--port", str(port), "--host", "127.0.0.1"]
        inherited = dict(os.environ)
        if env is not None:  # a deployment's settings are all given: none from the caller
            inherited = {k: v for k, v in inherited.items() if not k.startswith("LIVEDASH_")}
        self._env = {
            **inherited,
            "LIVEDASH_JWT_SECRET": secret,
            "LIVEDASH_LOG_LEVEL": "warning",
            "LIVEDASH_JWT_SECRET_FILE": str(workdir / "unused-secret"),
            # Every bench client connects from 127.0.0.1 at once.
            "LIVEDASH_RATE_LIMIT_CONNECTIONS_PER_IP": "100000/minute",
            **(env or {}),
        }
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server is not running")
        return self._process.pid

    def __enter__(self) -> ServerProcess:
        with self.log_path.open("wb") as log:
            # cwd: the temp dir, so no stray .env of the caller's reaches the server.
            self._process = subprocess.Popen(
                self._command,
                cwd=self._workdir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def wait_healthy(self) -> float:
        """Seconds until GET /health answered 200; raises if the server died or never did."""
        started = time.monotonic()
        deadline = started + HEALTH_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError("the server exited during start-up")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/health", timeout=1) as response,
            ):
                if response.status == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"/health did not answer 200 in {HEALTH_DEADLINE_SECONDS:g} s")

    def health(self) -> dict[str, Any]:
        """GET /health as JSON, whatever its status (blocking)."""
        request = urllib.request.Request(f"{self.url}/health", headers=self.health_headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        return body

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        return _cpu_seconds(Path(f"/proc/{self.pid}/stat").read_text())

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no server log)"


# -- the clients -----------------------------------------------------------------------------


@dataclass(slots=True)
class Receipt:
    client: int
    value: int
    received: float
    published: str


@dataclass
class Clients:
    """N socket.io clients and every matching update they received."""

    url: str
    tokens: list[str]
    receipts: list[Receipt] = field(default_factory=list)
    latest: list[int] = field(default_factory=list)
    sockets: list[socketio.AsyncClient] = field(default_factory=list)
    http_sessions: list[Any] | None = None
    """An aiohttp session per client (to pick its source address); None: socket.io's own."""

    async def connect_all(self) -> None:
        self.latest = [0] * len(self.tokens)
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(index: int) -> None:
            async with gate:
                await self._connect(index)

        await asyncio.gather(*(one(index) for index in range(len(self.tokens))))

    async def _connect(self, index: int) -> None:
        # handle_sigint=False: engine.io's own handler would cancel every task on Ctrl-C,
        # cleanup included, and stop the loop.
        options: dict[str, Any] = {}
        if self.http_sessions is not None:
            options["http_session"] = self.http_sessions[index]
        client = socketio.AsyncClient(reconnection=False, handle_sigint=False, **options)
        self.sockets.append(client)
        authenticated = asyncio.Event()
        refused: list[Any] = []

        def on_update(data: dict[str, Any]) -> None:
            if data.get("metric") == METRIC and data.get("department") == WATCHED:
                received = time.time()
                value = int(data["value"])
                self.receipts.append(Receipt(index, value, received, str(data["timestamp"])))
                self.latest[index] = max(self.latest[index], value)

        def on_authenticated(data: Any) -> None:
            authenticated.set()

        def on_auth_error(data: Any) -> None:
            refused.append(data)
            authenticated.set()

        client.on("dashboard_update", on_update)
        client.on("authenticated", on_authenticated)
        client.on("auth_error", on_auth_error)
        await client.connect(
            self.url, auth={"token": self.tokens[index]}, transports=["websocket"], wait_timeout=10
        )
        await asyncio.wait_for(authenticated.wait(), 10)
        if refused:
            raise RuntimeError(f"client {index} was refused: {refused[0]}")
        ack = await client.call(
            "subscribe_metrics", {"metrics": [METRIC], "departments": [WATCHED]}, timeout=10
        )
        if not isinstance(ack, dict) or ack.get("ok") is not True:
            raise RuntimeError(f"client {index} could not subscribe: {ack}")

    async def drain(self, final_value: int, seconds: float) -> float:
        """Wait until every client saw `final_value` (or `seconds` passed); the time taken."""
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if all(value >= final_value for value in self.latest):
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def close(self) -> None:
        async def one(client: socketio.AsyncClient) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 5)

        await asyncio.gather(*(one(client) for client in self.sockets))


class LoopLag:
    """How late a 10 ms timer fires on the bench's own loop: high means the bench is busy."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK_SECONDS)
            self.samples.append(max(time.monotonic() - before - LAG_TICK_SECONDS, 0.0))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    clients: int
    connect_seconds: float = 0.0
    health_seconds: float = 0.0
    drain_seconds: float = 0.0
    rss_idle_kb: int = 0
    rss_connected_kb: int = 0
    rss_end_kb: int = 0
    server_cpu_seconds: float = 0.0
    bench_cpu_seconds: float = 0.0
    window_seconds: float = 0.0
    lag: list[float] = field(default_factory=list)
    load_before: float = 0.0
    load_after: float = 0.0


async def measure(
    server: ServerProcess, writer: WriterProcess, tokens: list[str], run: Run
) -> tuple[Clients, Writes]:
    clients = Clients(server.url, tokens)
    try:
        started = time.monotonic()
        await clients.connect_all()
        run.connect_seconds = time.monotonic() - started
        await asyncio.sleep(0.5)  # let the server settle after the connect storm
        run.rss_connected_kb = server.rss_kb()

        # A full collection over the growing receipts would pause the clients for a good part
        # of a second, and would be measured as server latency.
        gc.collect()
        gc.freeze()
        gc.disable()
        lag = LoopLag()
        lag.start()
        run.load_before = os.getloadavg()[0]
        cpu_server, cpu_bench, wall = server.cpu_seconds(), time.process_time(), time.monotonic()
        writes = await writer.run()
        run.drain_seconds = await clients.drain(writes.final_value, DRAIN_SECONDS)
        run.server_cpu_seconds = server.cpu_seconds() - cpu_server
        run.bench_cpu_seconds = time.process_time() - cpu_bench
        run.window_seconds = time.monotonic() - wall
        run.load_after = os.getloadavg()[0]
        await lag.stop()
        run.lag = lag.samples
        run.rss_end_kb = server.rss_kb()
    finally:
        gc.enable()
        await clients.close()
    return clients, writes


# -- clients in several processes (PostgreSQL) -----------------------------------------------


def client_address(index: int, addresses: int) -> str:
    """The loopback source address of client `index`: 127.0.0.2, 127.0.0.3, ..."""
    number = index % addresses
    return f"127.0.{number // 250}.{2 + number % 250}"


async def _role_behind(session: Any, url: str, headers: dict[str, str]) -> str:
    """The role of the instance that nginx sends this session's source address to."""
    async with session.get(f"{url}/health", headers=headers) as response:
        body = await response.json()
    return str(body.get("role", "?"))


class _Closed(Exception):
    """The parent said "close" (or went away) before the run was over."""


async def _order(pipe: Connection, expected: str) -> tuple[Any, ...]:
    try:
        message: tuple[Any, ...] = await asyncio.to_thread(pipe.recv)
    except EOFError:
        raise _Closed from None
    if message[0] != expected:
        raise _Closed
    return message


async def _serve_clients(
    url: str, slots: list[tuple[int, str, str]], health_headers: dict[str, str], pipe: Connection
) -> None:
    import aiohttp

    sessions: dict[str, aiohttp.ClientSession] = {}
    for _, _, address in slots:
        if address not in sessions:
            connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0)
            sessions[address] = aiohttp.ClientSession(connector=connector)
    clients = Clients(
        url,
        [token for _, token, _ in slots],
        http_sessions=[sessions[address] for _, _, address in slots],
    )
    try:
        started = time.monotonic()
        await clients.connect_all()
        connect_seconds = time.monotonic() - started
        roles = {
            address: await _role_behind(session, url, health_headers)
            for address, session in sessions.items()
        }
        pipe.send(("connected", connect_seconds, roles))
        await _order(pipe, "start")
        gc.collect()
        gc.freeze()
        gc.disable()
        lag = LoopLag()
        lag.start()
        cpu, waited = time.process_time(), run_queue_seconds()
        _, final_value, seconds = await _order(pipe, "drain")
        drain_seconds = await clients.drain(final_value, seconds)
        cpu, waited = time.process_time() - cpu, run_queue_seconds() - waited
        await lag.stop()
        # First a word, so that the parent stops its clocks before the receipts travel.
        pipe.send(("drained", drain_seconds))
        ids = [index for index, _, _ in slots]
        pipe.send(
            (
                "result",
                {
                    "receipts": [
                        (ids[r.client], r.value, r.received, r.published) for r in clients.receipts
                    ],
                    "latest": {ids[local]: value for local, value in enumerate(clients.latest)},
                    "drain_seconds": drain_seconds,
                    "cpu_seconds": cpu,
                    "waited_seconds": waited,
                    "lag": lag.samples,
                },
            )
        )
        # Connected until told: the parent reads the servers' socket counts meanwhile.
        with contextlib.suppress(_Closed):
            await _order(pipe, "close")
    finally:
        gc.enable()
        await clients.close()
        for session in sessions.values():
            await session.close()


def client_process(
    url: str, slots: list[tuple[int, str, str]], health_headers: dict[str, str], pipe: Connection
) -> None:
    """A client process: connect `slots` (index, token, source address), then follow orders."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_serve_clients(url, slots, health_headers, pipe))
    except _Closed:
        pass
    except Exception as error:
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(error).__name__}: {error}"))


@dataclass
class Collected:
    """Every client process's receipts, as `report` reads them."""

    receipts: list[Receipt]
    latest: list[int]


class ClientProcesses:
    """The clients spread over `processes` processes; client i in process i % processes."""

    def __init__(
        self,
        url: str,
        tokens: list[str],
        processes: int,
        addresses: int,
        health_headers: dict[str, str],
    ) -> None:
        self.count = len(tokens)
        self.address_of = [client_address(index, addresses) for index in range(len(tokens))]
        slots = list(zip(range(len(tokens)), tokens, self.address_of, strict=True))
        self._workers = WorkerProcesses(
            client_process,
            [(url, slots[number::processes], health_headers) for number in range(processes)],
            "bench-clients",
            STOP_SECONDS,
            label="client process",
        )
        self.roles: dict[str, str] = {}
        self.connect_seconds = 0.0
        self.cpu_seconds: list[float] = []
        self.waited_seconds: list[float] = []
        self.lag: list[list[float]] = []
        self.drain_seconds = 0.0

    def __enter__(self) -> ClientProcesses:
        self._workers.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._workers.__exit__(*exc_info)

    async def connect(self) -> None:
        """Wait until every process has connected, authenticated and subscribed its clients."""
        started = time.monotonic()
        answers = await self._workers.receive_all("connected")
        self.connect_seconds = time.monotonic() - started
        for _, _, roles in answers:
            self.roles.update(roles)

    def start(self) -> None:
        self._workers.send_all(("start",))

    async def drain(self, final_value: int, seconds: float) -> None:
        """Wait until every client saw `final_value` (or `seconds` passed)."""
        self._workers.send_all(("drain", final_value, seconds))
        await self._workers.receive_all("drained")

    async def collect(self) -> Collected:
        """Every process's receipts and figures (after `drain`)."""
        answers = await self._workers.receive_all("result")
        receipts: list[Receipt] = []
        latest = [0] * self.count
        for _, result in answers:
            receipts.extend(Receipt(*receipt) for receipt in result["receipts"])
            for index, value in result["latest"].items():
                latest[index] = value
            self.cpu_seconds.append(result["cpu_seconds"])
            self.waited_seconds.append(result["waited_seconds"])
            self.lag.append(result["lag"])
            self.drain_seconds = max(self.drain_seconds, result["drain_seconds"])
        receipts.sort(key=lambda receipt: receipt.received)
        return Collected(receipts, latest)


# -- a deployment (PostgreSQL) ---------------------------------------------------------------


@dataclass
class Instance:
    """One `livedash serve` of a deployment, and its figures."""

    server: ServerProcess
    number: int
    role: str = "?"
    sockets: int = 0
    sockets_end: int = 0
    role_end: str = "?"
    rss_idle_kb: int = 0
    rss_connected_kb: int = 0
    rss_end_kb: int = 0
    cpu_seconds: float = 0.0
    waited_seconds: float = 0.0
    """Runnable but not running: the event loop waited for a CPU."""

    @property
    def name(self) -> str:
        return f"instance {self.number} ({self.role})"


@dataclass(slots=True)
class FeedSample:
    """The leader's /health at one moment of the measured writes."""

    lag_bytes: int | None
    change_age: float | None
    """time.time() at the answer minus last_change_at (the last applied change's commit)."""
    wal_status: str | None
    error: str | None = None


@dataclass
class Cluster:
    instances: list[Instance]
    processes: int
    addresses: int
    client_roles: list[str] = field(default_factory=list)
    feed: list[FeedSample] = field(default_factory=list)
    other_pids: dict[str, int] = field(default_factory=dict)
    other_cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: list[float] = field(default_factory=list)
    client_waited: list[float] = field(default_factory=list)
    client_lag: list[list[float]] = field(default_factory=list)


def wait_for_leader(instances: list[Instance]) -> float:
    """Block until exactly one instance reports itself leader; the seconds it took."""
    started = time.monotonic()
    while True:
        roles = [str(instance.server.health().get("role", "?")) for instance in instances]
        if roles.count("leader") == 1:
            for instance, role in zip(instances, roles, strict=True):
                instance.role = role
            return time.monotonic() - started
        if time.monotonic() - started > HEALTH_DEADLINE_SECONDS:
            raise RuntimeError(f"no single leader in {HEALTH_DEADLINE_SECONDS:g} s: {roles}")
        time.sleep(0.1)


def _naive_utc_timestamp(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


async def sample_feed(
    server: ServerProcess, samples: list[FeedSample], measuring_from: float
) -> None:
    """The leader's slot lag and the age of its last applied change, every few hundred ms."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            await asyncio.sleep(FEED_SAMPLE_SECONDS)
            try:
                async with session.get(
                    f"{server.url}/health", headers=server.health_headers
                ) as response:
                    body = await response.json()
                answered = time.time()
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                if time.monotonic() >= measuring_from:
                    samples.append(FeedSample(None, None, None, f"{type(error).__name__}"))
                continue
            if time.monotonic() < measuring_from:
                continue
            slot = body.get("slot") or {}
            last = body.get("last_change_at")
            samples.append(
                FeedSample(
                    lag_bytes=slot.get("lag_bytes"),
                    change_age=answered - _naive_utc_timestamp(last) if last else None,
                    wal_status=slot.get("wal_status"),
                    error=None if body.get("role") == "leader" else f"role {body.get('role')}",
                )
            )


def _cpu_of_others(cluster: Cluster) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for name, pid in cluster.other_pids.items():
        with contextlib.suppress(OSError, ValueError):
            seconds[name] = tree_cpu_seconds(pid)
    return seconds


async def measure_cluster(
    cluster: Cluster,
    url: str,
    writer: WriterProcess,
    tokens: list[str],
    run: Run,
    warmup: float,
) -> tuple[Collected, Writes]:
    instances = cluster.instances
    leader = next(instance for instance in instances if instance.role == "leader")
    with ClientProcesses(
        url, tokens, cluster.processes, cluster.addresses, leader.server.health_headers
    ) as clients:
        await clients.connect()
        run.connect_seconds = clients.connect_seconds
        cluster.client_roles = [clients.roles.get(a, "?") for a in clients.address_of]
        await asyncio.sleep(0.5)  # let the servers settle after the connect storm
        for instance in instances:
            instance.rss_connected_kb = instance.server.rss_kb()
            instance.sockets = int((await asyncio.to_thread(instance.server.health))["sockets"])
        held = sum(instance.sockets for instance in instances)
        print(
            "sockets (/health):  "
            + ", ".join(f"{instance.name} {instance.sockets}" for instance in instances)
            + f"; {held} of {len(tokens)} clients"
            + (" -- MISMATCH" if held != len(tokens) else "")
            + (" -- NOT SPREAD" if any(i.sockets == 0 for i in instances) else ""),
            flush=True,
        )
        clients.start()
        run.load_before = os.getloadavg()[0]
        cpu_servers = [instance.server.cpu_seconds() for instance in instances]
        waits = [run_queue_seconds(instance.server.pid) for instance in instances]
        cpu_others = _cpu_of_others(cluster)
        wall = time.monotonic()
        sampler = asyncio.create_task(
            sample_feed(leader.server, cluster.feed, time.monotonic() + warmup)
        )
        try:
            writes = await writer.run()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await clients.drain(writes.final_value, DRAIN_SECONDS)
        for instance, before, waited in zip(instances, cpu_servers, waits, strict=True):
            instance.cpu_seconds = instance.server.cpu_seconds() - before
            instance.waited_seconds = run_queue_seconds(instance.server.pid) - waited
        cluster.other_cpu = {
            name: seconds - cpu_others.get(name, seconds)
            for name, seconds in _cpu_of_others(cluster).items()
        }
        run.window_seconds = time.monotonic() - wall
        run.load_after = os.getloadavg()[0]
        for instance in instances:  # before the client processes disconnect
            instance.rss_end_kb = instance.server.rss_kb()
            body = await asyncio.to_thread(instance.server.health)
            instance.sockets_end = int(body.get("sockets", -1))
            instance.role_end = str(body.get("role", "?"))
        collected = await clients.collect()
        run.drain_seconds = clients.drain_seconds
        cluster.client_cpu = clients.cpu_seconds
        cluster.client_waited = clients.waited_seconds
        cluster.client_lag = clients.lag
        run.bench_cpu_seconds = sum(clients.cpu_seconds)
        run.lag = [sample for samples in clients.lag for sample in samples]
    return collected, writes


# -- figures ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of unsorted `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(int(fraction * len(ordered) + 0.999999) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def spread(values: Sequence[float], scale: float = 1000, digits: int = 1) -> str:
    """p50/p95/p99/max of seconds, in ms (or of anything, times `scale`)."""
    if not values:
        return "no samples"
    figures = [percentile(values, q) for q in (0.5, 0.95, 0.99)] + [max(values)]
    return "  ".join(
        f"{name} {value * scale:8.{digits}f}"
        for name, value in zip(("p50", "p95", "p99", "max"), figures, strict=True)
    )


def _published_at(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def exact_receipts(
    receipts: Sequence[Receipt], measured: set[int]
) -> tuple[dict[tuple[int, int], Receipt], int]:
    """The first receipt of each (client, measured value), and how many came twice."""
    exact: dict[tuple[int, int], Receipt] = {}
    duplicates = 0
    for receipt in receipts:
        key = (receipt.client, receipt.value)
        if key in exact:
            duplicates += 1
        elif receipt.value in measured:
            exact[key] = receipt
    return exact, duplicates


def freshness(
    receipts: Sequence[Receipt],
    measured: set[int],
    commits: dict[int, float],
    clients: Sequence[int],
) -> tuple[list[float], int]:
    """Commit of value v -> the client first showing a value >= v, for each of `clients`, and
    how many (client, value) never got there. A commit whose own update was coalesced counts
    at the arrival of the value that superseded it."""
    by_client: dict[int, list[Receipt]] = {}
    for receipt in receipts:
        by_client.setdefault(receipt.client, []).append(receipt)
    fresh: list[float] = []
    stale = 0
    pending = sorted(measured)
    for client in clients:
        best = 0
        position = 0
        for receipt in sorted(by_client.get(client, []), key=lambda r: r.received):
            best = max(best, receipt.value)
            while position < len(pending) and pending[position] <= best:
                fresh.append(receipt.received - commits[pending[position]])
                position += 1
        stale += len(pending) - position
    return fresh, stale


def delivery(run: Run, writer: Writes, clients: Clients | Collected, rate: float) -> Iterator[str]:
    """What reached the clients, and when: the same lines on every backend."""
    measured = set(writer.measured)
    n = run.clients
    exact, duplicates = exact_receipts(clients.receipts, measured)
    received_values = {value for _, value in exact}
    expected = len(measured) * n
    missing = expected - len(exact)
    # A value no client received was never sent: the engine applied its commit together with
    # a later one in one batch and published only the latest count. Missing values that other
    # clients did receive were sent and not delivered: those are losses.
    never_sent = len(measured - received_values)
    lost = missing - never_sent * n

    fresh, stale = freshness(clients.receipts, measured, writer.commits, range(n))

    latencies = [r.received - writer.commits[r.value] for r in exact.values()]
    to_publish = {
        r.value: _published_at(r.published) - writer.commits[r.value] for r in exact.values()
    }
    publish_to_client = [r.received - _published_at(r.published) for r in exact.values()]
    arrivals: dict[int, list[float]] = {}
    for r in exact.values():
        arrivals.setdefault(r.value, []).append(r.received - writer.commits[r.value])
    first_client = [min(times) for times in arrivals.values()]
    last_client = [max(times) for times in arrivals.values()]
    behind = sum(1 for value in clients.latest if value < writer.final_value)

    yield (
        f"clients:            {n}, connected, authenticated and subscribed in "
        f"{run.connect_seconds:.2f} s (server healthy after {run.health_seconds:.2f} s)"
    )
    achieved = (len(measured) - 1) / writer.measured_span if writer.measured_span else 0.0
    yield (
        f"writes:             {len(measured)} measured, {achieved:.2f}/s achieved "
        f"(target {rate:g}/s); commit {spread(writer.commit_seconds)} ms"
    )
    yield (
        f"updates:            expected {expected}, received {len(exact)}, missing {missing}"
        + (f", duplicates {duplicates}" if duplicates else "")
    )
    if missing:
        yield (
            f"  of the missing:   {never_sent} values x {n} clients were never sent (coalesced "
            f"with a later commit in one feed batch);"
        )
        yield (
            f"                    {lost} were sent to some clients but not to others: LOST"
            if lost
            else "                    none was lost in delivery"
        )
    yield (
        f"  after drain:      {behind} of {n} clients never reached the final value "
        f"{writer.final_value} (waited {run.drain_seconds:.2f} s after the last write)"
        + (" -- LOSS or backlog" if behind else "")
    )
    yield "latency (ms)        commit -> client receives that update, per (client, update)"
    yield f"                    {spread(latencies)}"
    yield "freshness (ms)      commit -> client shows that value or a later one"
    yield f"                    {spread(fresh)}" + (f"  ({stale} never)" if stale else "")
    yield "  split (ms)        commit -> server publishes (per value, server clock)"
    yield f"                    {spread(list(to_publish.values()))}"
    yield "                    server publishes -> client receives (per client update)"
    yield f"                    {spread(publish_to_client)}"
    yield "  fan-out (ms)      commit -> first client to receive an update"
    yield f"                    {spread(first_client)}"
    yield "                    commit -> last client to receive it"
    yield f"                    {spread(last_client)}"


def report(run: Run, writer: Writes, clients: Clients, rate: float) -> Iterator[str]:
    yield from delivery(run, writer, clients, rate)
    n = run.clients
    per_client = (run.rss_connected_kb - run.rss_idle_kb) / n if n else 0.0
    yield (
        f"server RSS:         {run.rss_idle_kb} KB idle, {run.rss_connected_kb} KB with "
        f"{n} clients ({per_client:.1f} KB per client), {run.rss_end_kb} KB at the end"
    )
    window = run.window_seconds or 1.0
    yield (
        f"CPU (of one core):  server {100 * run.server_cpu_seconds / window:.0f}%, "
        f"bench clients {100 * run.bench_cpu_seconds / window:.0f}% "
        f"over {window:.1f} s"
    )
    yield f"bench loop lag (ms) {spread(run.lag)}"
    yield (
        f"load average:       {run.load_before:.2f} before, {run.load_after:.2f} after "
        f"(1 min; this machine has {os.cpu_count()} CPUs)"
    )


def report_cluster(
    run: Run, cluster: Cluster, writer: Writes, clients: Collected, rate: float
) -> Iterator[str]:
    yield from delivery(run, writer, clients, rate)
    measured = set(writer.measured)
    yield "  by role (ms)      clients behind the leader / behind a follower (Redis fan-out)"
    for role in ("leader", "follower"):
        members = {index for index, r in enumerate(cluster.client_roles) if r == role}
        if not members:
            yield f"                    {role}: no clients"
            continue
        mine = [receipt for receipt in clients.receipts if receipt.client in members]
        exact, _ = exact_receipts(mine, measured)
        latencies = [r.received - writer.commits[r.value] for r in exact.values()]
        fresh, stale = freshness(mine, measured, writer.commits, sorted(members))
        yield f"                    {role}, {len(members)} clients: latency, then freshness"
        yield f"                    {spread(latencies)}"
        yield f"                    {spread(fresh)}" + (f"  ({stale} never)" if stale else "")

    samples = [sample for sample in cluster.feed if sample.error is None]
    failed = len(cluster.feed) - len(samples)
    statuses = sorted({str(sample.wal_status) for sample in samples})
    yield (
        f"feed lag (leader):  {len(samples)} samples of its /health, one every "
        f"{FEED_SAMPLE_SECONDS:g} s of the measured writes"
        + (f" ({failed} failed or not from a leader)" if failed else "")
    )
    lag_bytes = [float(s.lag_bytes) for s in samples if s.lag_bytes is not None]
    yield (
        f"  slot lag (bytes)  {spread(lag_bytes, scale=1, digits=0)}  "
        f"(wal_status {', '.join(statuses) or '-'})"
    )
    ages = [s.change_age for s in samples if s.change_age is not None]
    yield f"  now - last_change_at (ms) {spread(ages)}"

    for instance in cluster.instances:
        n = instance.sockets
        per_client = (instance.rss_connected_kb - instance.rss_idle_kb) / n if n else 0.0
        yield (
            f"RSS {instance.name + ':':21} {instance.rss_idle_kb} KB idle, "
            f"{instance.rss_connected_kb} KB with {n} clients ({per_client:.1f} KB per client), "
            f"{instance.rss_end_kb} KB at the end"
        )
    changed = [
        f"{i.name} is {i.role_end} with {i.sockets_end} sockets"
        for i in cluster.instances
        if i.role_end != i.role or i.sockets_end != i.sockets
    ]
    if changed:
        yield "after the run:      " + "; ".join(changed) + " -- CHANGED"
    window = run.window_seconds or 1.0

    def share(seconds: float) -> str:
        return f"{100 * seconds / window:.0f}%"

    yield (
        "CPU (of one core):  "
        + ", ".join(f"{i.name} {share(i.cpu_seconds)}" for i in cluster.instances)
        + f" over {window:.1f} s"
    )
    yield (
        "                    "
        + ", ".join(f"{name} {share(seconds)}" for name, seconds in cluster.other_cpu.items())
        + f"; bench clients {share(run.bench_cpu_seconds)} in {cluster.processes} process"
        + ("es (" if cluster.processes > 1 else " (")
        + ", ".join(share(seconds) for seconds in cluster.client_cpu)
        + ")"
    )
    yield (
        "CPU wait:           "
        + ", ".join(f"{i.name} {share(i.waited_seconds)}" for i in cluster.instances)
        + "; client processes "
        + ", ".join(share(seconds) for seconds in cluster.client_waited)
    )
    yield (
        "                    (of the window, each event loop was runnable but waited for a CPU "
        "that other processes held)"
    )
    yield f"bench loop lag (ms) {spread(run.lag)}  (all client processes)"
    if len(cluster.client_lag) > 1:
        for number, lag in enumerate(cluster.client_lag):
            yield f"  process {number}       {spread(lag)}"
    saturated = [
        number
        for number, (cpu, lag) in enumerate(
            zip(cluster.client_cpu, cluster.client_lag, strict=True)
        )
        if cpu / window > 0.9 or percentile(lag, 0.99) > 0.05
    ]
    if saturated:
        yield (
            f"                    client process {', '.join(map(str, saturated))} near saturation "
            "(>90% of a core or p99 loop lag > 50 ms): the tail includes the bench's own delay"
        )
    yield (
        f"load average:       {run.load_before:.2f} before, {run.load_after:.2f} after "
        f"(1 min; this machine has {os.cpu_count()} CPUs)"
    )


# -- entry point -----------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Delay from a database commit to socket.io clients receiving the update."
    )
    parser.add_argument("--clients", type=int, default=100, help="socket.io clients (100)")
    parser.add_argument(
        "--writes-per-second", type=float, default=50.0, help="patient inserts per second (50)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite: one server, embedded (default); postgres: PostgreSQL, Redis, "
        "--instances servers behind nginx, all throwaway",
    )
    parser.add_argument("--db", type=Path, help="SQLite file (default: in a temp dir); kept")
    parser.add_argument("--port", type=int, help="server port, SQLite (default: a free one)")
    parser.add_argument(
        "--instances", type=int, help="postgres: `livedash serve` processes behind nginx (2)"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        help=f"postgres: processes the clients run in (default: one per {CLIENTS_PER_PROCESS} "
        "clients)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.writes_per_second <= 0 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--clients >= 1, --writes-per-second > 0, --seconds > 0, --warmup >= 0")
    if args.backend == "sqlite":
        if args.instances is not None or args.client_processes is not None:
            parser.error("--instances and --client-processes are for --backend postgres")
    else:
        if args.db is not None or args.port is not None:
            parser.error("--db and --port are for --backend sqlite")
        args.instances = 2 if args.instances is None else args.instances
        if args.instances < 1:
            parser.error("--instances >= 1")
        if args.client_processes is None:
            wanted = math.ceil(args.clients / CLIENTS_PER_PROCESS)
            args.client_processes = max(1, min(wanted, args.clients))
        if not 1 <= args.client_processes <= args.clients:
            parser.error("1 <= --client-processes <= --clients")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    if args.backend == "postgres":
        return main_postgres(args)
    with tempfile.TemporaryDirectory(prefix="livedash-bench-") as temp:
        workdir = Path(temp)
        db: Path = (args.db or workdir / "hospital.db").absolute()
        url = f"sqlite+aiosqlite:///{db}"
        upgrade(url)
        department_id = seed_hospital(db)
        secret = secrets.token_urlsafe(32)
        settings = Settings(
            database_url=url,
            jwt_secret=secret,
            jwt_secret_file=workdir / "unused-secret",
            _env_file=None,
        )
        with sqlite3.connect(db) as connection:  # the users the tokens speak for
            connection.executemany(
                "INSERT INTO users (username, role, departments, active) VALUES (?, ?, ?, 1)",
                [(f"bench-{index}", "viewer", f'["{WATCHED}"]') for index in range(args.clients)],
            )
        tokens = [
            issue_token(settings, f"bench-{index}", Role.VIEWER, [WATCHED])
            for index in range(args.clients)
        ]
        run = Run(args.clients)
        server = ServerProcess(db, args.port or free_port(), workdir, secret)
        print(
            f"database:           SQLite (WAL) at {db}; writer inserts into {WATCHED}, "
            f"clients watch {METRIC}/{WATCHED}",
            flush=True,
        )
        try:
            with (
                WriterProcess(
                    db, department_id, args.writes_per_second, args.warmup, args.seconds
                ) as writer,
                server,
            ):
                run.health_seconds = server.wait_healthy()
                print(f"server:             pid {server.pid} at {server.url}", flush=True)
                run.rss_idle_kb = server.rss_kb()
                clients, writes = asyncio.run(measure(server, writer, tokens, run))
        except KeyboardInterrupt:
            print("interrupted; the server was stopped", file=sys.stderr)
            return 130
        except Exception:
            print(f"server log (last lines):\n{server.log_tail()}", file=sys.stderr)
            raise
        for line in report(run, writes, clients, args.writes_per_second):
            print(line)
    return 0


def main_postgres(args: argparse.Namespace) -> int:
    """PostgreSQL, Redis, `--instances` servers and nginx, all throwaway; clients via nginx."""
    # The test suite's throwaway servers: on free ports, in their own directories.
    sys.path.insert(0, str(REPO))
    from tests.servers import new_root

    root = new_root("livedash-bench-pg-")
    instances: list[Instance] = []
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, root, True)  # last, once every server has stopped
            try:
                run, cluster, collected, writes = run_postgres(args, stack, root, instances)
            except Exception:
                for instance in instances:
                    print(
                        f"instance {instance.number} log (last lines):\n"
                        f"{instance.server.log_tail()}",
                        file=sys.stderr,
                    )
                raise
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        return 130
    for line in report_cluster(run, cluster, writes, collected, args.writes_per_second):
        print(line)
    return 0


def run_postgres(
    args: argparse.Namespace, stack: contextlib.ExitStack, root: Path, instances: list[Instance]
) -> tuple[Run, Cluster, Collected, Writes]:
    """Start everything (each stopped by `stack`), then measure; `instances` is filled in."""
    from tests.servers import NginxServer, PostgresServer, RedisServer

    postgres = PostgresServer(root / "postgres").init()
    stack.callback(postgres.stop)
    postgres.start()
    asyncio.run(postgres.create_database(DATABASE))
    url, dsn = postgres.url(DATABASE), postgres.dsn(DATABASE)
    upgrade(url)
    department_id = asyncio.run(seed_hospital_postgres(dsn, args.clients))
    redis = RedisServer(root / "redis")
    stack.callback(redis.stop)
    redis.start()

    secret = secrets.token_urlsafe(32)
    workdir = root / "instances"
    workdir.mkdir()
    settings = Settings(
        database_url=url,
        jwt_secret=secret,
        jwt_secret_file=workdir / "unused-secret",
        _env_file=None,
    )
    tokens = [
        issue_token(settings, f"bench-{index}", Role.VIEWER, [WATCHED])
        for index in range(args.clients)
    ]
    operator = issue_token(settings, OPERATOR, Role.SUPER_ADMIN)
    environment = {
        "LIVEDASH_DATABASE_URL": url,
        "LIVEDASH_REDIS_URL": redis.url,
        "LIVEDASH_FEED_SLOT": FEED_SLOT,
    }
    instances += [
        Instance(
            ServerProcess(
                None,
                free_port(),
                workdir,
                secret,
                env=environment,
                name=f"instance-{number}",
                health_token=operator,
            ),
            number,
        )
        for number in range(1, args.instances + 1)
    ]
    processes = args.client_processes
    addresses = min(args.clients, CLIENT_ADDRESSES)
    cluster = Cluster(instances, processes, addresses)
    run = Run(args.clients)
    major = postgres_version(postgres)
    print(f"service:            livedash from {Path(livedash.__file__).parent}", flush=True)
    print(
        f"database:           PostgreSQL {major} (throwaway, wal_level=logical, "
        f"fsync=off) at 127.0.0.1:{postgres.port}, slot {FEED_SLOT!r}; Redis at "
        f"127.0.0.1:{redis.port}; writer (asyncpg) inserts into {WATCHED}, clients "
        f"watch {METRIC}/{WATCHED}",
        flush=True,
    )
    writer = stack.enter_context(
        WriterProcess(
            dsn,
            department_id,
            args.writes_per_second,
            args.warmup,
            args.seconds,
            target=write_patients_postgres,
        )
    )
    started = time.monotonic()
    for instance in instances:
        stack.enter_context(instance.server)
    for instance in instances:
        instance.server.wait_healthy()
    run.health_seconds = time.monotonic() - started
    elected = wait_for_leader(instances)
    for instance in instances:
        instance.rss_idle_kb = instance.server.rss_kb()
    nginx = NginxServer(root / "nginx", upstreams=[i.server.port for i in instances])
    stack.callback(nginx.stop)
    nginx.start()
    assert postgres.process is not None
    assert redis.process is not None
    assert nginx.process is not None
    cluster.other_pids = {
        "postgres": postgres.process.pid,
        "redis": redis.process.pid,
        "nginx": nginx.process.pid,
        "writer": writer.pid or 0,
    }
    print(
        "instances:          "
        + ", ".join(
            f"{i.number}: pid {i.server.pid} at {i.server.url} ({i.role})" for i in instances
        )
        + f"; one leader {elected:.2f} s after all were healthy",
        flush=True,
    )
    print(
        f"through nginx:      {nginx.url} (deploy/nginx.conf, hash $remote_addr); "
        f"clients from {addresses} loopback addresses in {processes} client process"
        + ("es" if processes > 1 else "")
        + (
            f" ({math.ceil(args.clients / processes)} clients per event loop at most, "
            "so that the bench's own loop does not saturate)"
            if processes > 1
            else ""
        ),
        flush=True,
    )
    collected, writes = asyncio.run(
        measure_cluster(cluster, nginx.url, writer, tokens, run, args.warmup)
    )
    return run, cluster, collected, writes


def postgres_version(server: Any) -> str:
    """The server's major version, from its data directory."""
    with contextlib.suppress(OSError):
        return str((server.data / "PG_VERSION").read_text().strip())
    return "?"


if __name__ == "__main__":
    sys.exit(main())
