"""Commit-to-screen latency on the embedded default (SQLite).

A writer process inserts one patient per tick into one department with plain sqlite3, as the
hospital's own application would. The service runs as a separate process (`livedash serve`),
so neither the clients nor the writer share its event loop. N socket.io clients, all in this
process, subscribe to that department's `patients_total` and note when each `dashboard_update`
arrives; the latency of an update is its arrival minus the commit that produced its value.

    .venv/bin/python bench/latency.py --clients 100 --writes-per-second 50 --seconds 20

Figures are printed, never asserted. The bench process runs every client in one event loop;
its own loop lag and CPU time are printed too, so a saturated bench can be told apart from a
slow server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import secrets
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import FrameType
from typing import Any

import socketio

from livedash.auth.tokens import issue_token
from livedash.settings import Settings
from livedash.store.migrate import upgrade
from livedash.store.models import Role

METRIC = "patients_total"
WATCHED = "ED"
DEPARTMENTS = (("ED", "Emergency"), ("CARD", "Cardiology"), ("ICU", "Intensive Care"))
ROOMS_PER_DEPARTMENT = 3
BEDS_PER_ROOM = 4
PATIENTS_PER_DEPARTMENT = 5

CONNECT_CONCURRENCY = 50
HEALTH_DEADLINE_SECONDS = 30.0
DRAIN_SECONDS = 5.0
STOP_SECONDS = 10.0
LAG_TICK_SECONDS = 0.01

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
    """The writer process: once `go` is set, one patient per tick on a monotonic schedule."""
    # Ctrl-C is the parent's to handle: it sets `stop`, and the figures so far come back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    writes = Writes()
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            writes.start_value = writes.final_value = connection.execute(
                "SELECT COUNT(*) FROM patients WHERE department_id = ?", (department_id,)
            ).fetchone()[0]
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
                # In autocommit mode this one statement is its own transaction: once
                # execute() returns, the row and its change_log entry are committed.
                connection.execute(
                    "INSERT INTO patients (department_id, name, status, emergency, registered_at)"
                    " VALUES (?, ?, 'registered', 0, ?)",
                    (department_id, f"bench patient {n}", _now()),
                )
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
        finally:
            connection.close()
    except Exception as error:
        writes.error = f"{type(error).__name__}: {error}"
    results.send(asdict(writes))


class WriterProcess:
    """The writer in its own process: a thread here would share the clients' GIL, and the
    time it notes after a commit would then include waiting for the clients' event loop."""

    def __init__(self, db: Path, department_id: int, rate: float, warmup: float, seconds: float):
        context = multiprocessing.get_context("spawn")
        self._go = context.Event()
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=write_patients,
            args=(db, department_id, rate, warmup, seconds, self._go, self._stop, sender),
            name="bench-writer",
            daemon=True,
        )
        self._sender = sender

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


class ServerProcess:
    """`livedash serve` in a child process, stopped on exit whatever happened."""

    def __init__(self, db: Path, port: int, workdir: Path, secret: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "server.log"
        self._command = [sys.executable, "-c", _SERVER, "serve"]
        self._command += ["--db", str(db), "--port", str(port), "--host", "127.0.0.1"]
        self._env = {
            **os.environ,
            "LIVEDASH_JWT_SECRET": secret,
            "LIVEDASH_LOG_LEVEL": "warning",
            "LIVEDASH_JWT_SECRET_FILE": str(workdir / "unused-secret"),
            # Every bench client connects from 127.0.0.1 at once.
            "LIVEDASH_RATE_LIMIT_CONNECTIONS_PER_IP": "100000/minute",
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

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        # utime and stime: fields 14 and 15 of proc(5), counted after the ")".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
        client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
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


# -- figures ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of unsorted `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(int(fraction * len(ordered) + 0.999999) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def spread(values: Sequence[float]) -> str:
    """p50/p95/p99/max of seconds, in ms."""
    if not values:
        return "no samples"
    figures = [percentile(values, q) for q in (0.5, 0.95, 0.99)] + [max(values)]
    return "  ".join(
        f"{name} {value * 1000:8.1f}"
        for name, value in zip(("p50", "p95", "p99", "max"), figures, strict=True)
    )


def _published_at(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def report(run: Run, writer: Writes, clients: Clients, rate: float) -> Iterator[str]:
    measured = set(writer.measured)
    n = run.clients
    exact: dict[tuple[int, int], Receipt] = {}
    duplicates = 0
    for receipt in clients.receipts:
        key = (receipt.client, receipt.value)
        if key in exact:
            duplicates += 1
        elif receipt.value in measured:
            exact[key] = receipt
    received_values = {value for _, value in exact}
    expected = len(measured) * n
    missing = expected - len(exact)
    # A value no client received was never sent: the engine applied its commit together with
    # a later one in one batch and published only the latest count. Missing values that other
    # clients did receive were sent and not delivered: those are losses.
    never_sent = len(measured - received_values)
    lost = missing - never_sent * n

    # Freshness: commit of value v -> the client first showing a value >= v, so a commit whose
    # own update was coalesced counts at the arrival of the value that superseded it.
    by_client: dict[int, list[Receipt]] = {}
    for receipt in clients.receipts:
        by_client.setdefault(receipt.client, []).append(receipt)
    fresh: list[float] = []
    stale = 0
    pending = sorted(measured)
    for client in range(n):
        best = 0
        position = 0
        for receipt in sorted(by_client.get(client, []), key=lambda r: r.received):
            best = max(best, receipt.value)
            while position < len(pending) and pending[position] <= best:
                fresh.append(receipt.received - writer.commits[pending[position]])
                position += 1
        stale += len(pending) - position

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


# -- entry point -----------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Delay from a SQLite commit to socket.io clients receiving the update."
    )
    parser.add_argument("--clients", type=int, default=100, help="socket.io clients (100)")
    parser.add_argument(
        "--writes-per-second", type=float, default=50.0, help="patient inserts per second (50)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    parser.add_argument("--db", type=Path, help="SQLite file (default: in a temp dir); kept")
    parser.add_argument("--port", type=int, help="server port (default: a free one)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.writes_per_second <= 0 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--clients >= 1, --writes-per-second > 0, --seconds > 0, --warmup >= 0")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
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


if __name__ == "__main__":
    sys.exit(main())
