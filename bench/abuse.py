"""Five attacks of the hostile test (security issue 12), replayed against a running service.

    .venv/bin/python bench/abuse.py                                   # all five, ~2 min
    .venv/bin/python bench/abuse.py --attack 5,8 --seconds 5
    PYTHONPATH=/work/baseline/src .venv/bin/python bench/abuse.py     # another source tree

By default the service is `python -m livedash serve` in a child process, on a temporary SQLite
database with a small hospital and a year of hourly roll-ups; `--url` (with `--db`) attacks
one that runs already. While each attack runs, the figures legitimate users would notice are
measured from outside the service: its memory (VmRSS), the delay of `--clients` socket.io
clients watching `patients_total` of ED (commit -> screen, and a `request_snapshot` round
trip), `/health`, and the commit time of a writer process that inserts a patient every 20 ms
with plain sqlite3, as the hospital's own application would. A calm phase before each attack
gives the figures to compare with. Nothing is asserted; nothing is restarted between attacks
unless the service died.

The attacks (the issue's numbers):
  1  a socket that never signs in announces a binary event with 9,999,999,999 attachments and
     streams them (`--abuse-sockets` sockets);
  3  chunked 200 MB JSON bodies to /api/auth/login (no Content-Length), and one 100 MB header;
  5  fake refresh tokens posted to /api/auth/refresh and /api/auth/logout (`--flood-tasks`);
  6  Engine.IO connections that answer pings but never connect to Socket.IO
     (`--idle-connections`), held past the authentication timeout;
  8  an admin asking for a year of daily history 111 times in ~6 s, then for the year 9999.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State

from livedash.auth.tokens import issue_token
from livedash.metrics.definitions import COUNT_SERIES, OCCUPANCY
from livedash.settings import Settings
from livedash.store.migrate import upgrade
from livedash.store.models import Role
from livedash.testing import usage
from livedash.testing.hospital import METRIC, WATCHED, add_users, seed_sqlite, sql_now, viewers
from livedash.testing.service import ServiceProcess, begin_bench, bench_settings
from livedash.testing.stats import duration, percentile, quantiles
from livedash.testing.usage import LoopLag
from livedash.testing.watchers import Watchers, freshness

ATTACKS = (1, 3, 5, 6, 8)
WRITE_INTERVAL_SECONDS = 0.02
WRITER_BUSY_TIMEOUT_SECONDS = 60.0
HISTORY_DAYS = 370  # roll-ups seeded: a year-long request finds a full year
RSS_SAMPLE_SECONDS = 0.25
HEALTH_SAMPLE_SECONDS = 1.0  # as one user: under a REST limit of 100/minute
SNAPSHOT_SAMPLE_SECONDS = 0.25  # round robin over the clients: each well under its rate limit
PROBE_TIMEOUT_SECONDS = 5.0
SETTLE_SECONDS = 2.0  # after an attack, for late updates and a writer that was held up
HEALTHY_DEADLINE_SECONDS = 30.0
STOP_SECONDS = 10.0
OPERATOR = "abuse-operator"
"""A super_admin user: /health shows its details (sockets, ...) only to such a token."""

# Attack 1.
EIO_PATH = "/socket.io/?EIO=4&transport=websocket"
ENDLESS_BINARY_EVENT = '459999999999-["authenticate",{"_placeholder":true,"num":0}]'
FRAME_BYTES = 65_000  # just under the Engine.IO limit (max_payload_bytes, 64 KiB)
REOPEN_SECONDS = 0.1  # before a socket the server closed is opened again
# Attack 3.
BODY_BYTES = 200_000_000
BODIES = 4
HEADER_BYTES = 100_000_000
CHUNK_BYTES = 1 << 20
ANSWER_DEADLINE_SECONDS = 60.0
# Attack 5.
FAKE_REFRESH = {"refresh_token": "abc.def"}
# Attack 6.
OPEN_CONCURRENCY = 100
IDLE_GRACE_SECONDS = 5.0  # held this long past the authentication timeout
# Attack 8.
HISTORY_REQUESTS = 111
HISTORY_WINDOW_SECONDS = 6.0
HISTORY_METRIC = "occupancy"  # the series with the most work per hour (weighted mean, peak)
HISTORY_ANSWER_SECONDS = 20.0  # waited for the last answers once every request is sent


# -- the service -----------------------------------------------------------------------------


class Service:
    """The service under attack: `python -m livedash serve` started here, or one at --url."""

    def __init__(
        self,
        url: str,
        pid: int | None,
        *,
        health_token: str,
        process: ServiceProcess | None = None,
    ) -> None:
        self.url = url
        self.health_headers = {"Authorization": f"Bearer {health_token}"}
        self.ws_url = "ws" + url.removeprefix("http") + EIO_PATH
        self._pid = pid
        self.process = process

    @classmethod
    def child(
        cls, db: Path, port: int | None, workdir: Path, secret: str, health_token: str
    ) -> Service:
        """A service this script starts (and stops); PYTHONPATH decides which code runs. Only
        its secret and log level are set: the rate limits are the service's defaults."""
        process = ServiceProcess(
            workdir, secret, db=db, port=port, isolated=True, health_token=health_token
        )
        return cls(process.url, None, health_token=health_token, process=process)

    @property
    def managed(self) -> bool:
        return self.process is not None

    @property
    def pid(self) -> int | None:
        if self.process is None:
            return self._pid
        return self.process.pid if self.process.lives else None

    def source(self) -> str:
        """Where the service's `livedash` package comes from, and that tree's commit."""
        if self.process is None:
            return "unknown (a service at --url)"
        package = self.process.package()
        return f"{package} ({_commit_of(package)})"

    async def start(self) -> float:
        """Start the child and wait for /health to answer 200; seconds taken."""
        if self.process is None:
            raise RuntimeError("a service at --url is not started here")
        started = time.monotonic()
        self.process.start()
        if not await self.wait_healthy():
            raise RuntimeError(f"the service did not start:\n{self.log_tail()}")
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def exit_code(self) -> int | None:
        """The child's exit status once it has ended (None: running, or not ours)."""
        return self.process.exit_code() if self.process is not None else None

    async def wait_healthy(self, seconds: float = HEALTHY_DEADLINE_SECONDS) -> bool:
        """True once /health answers 200; False if it does not in `seconds` or the child died."""
        deadline = time.monotonic() + seconds
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline and self.exit_code() is None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        f"{self.url}/health", headers=self.health_headers
                    ) as response:
                        if response.status == 200:
                            return True
                await asyncio.sleep(0.2)
        return False

    async def health(self) -> dict[str, Any]:
        """GET /health now, as the operator: its JSON, or {"status": what went wrong}."""
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"{self.url}/health", headers=self.health_headers) as response,
            ):
                body = await response.json(content_type=None)
            return body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            return {"status": type(error).__name__}

    def rss_kb(self) -> int | None:
        pid = self.pid
        return usage.rss_kb(pid) if pid is not None else None

    def log_tail(self, lines: int = 15) -> str:
        if self.process is None:
            return "(no log: a service at --url)"
        return self.process.log_tail(lines)


def _commit_of(package: Path) -> str:
    """The commit of the checkout holding `package`, and whether the package has changed."""
    git = ["git", "--no-optional-locks", "-C", str(package)]  # reads only: no index refresh
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}, " + (
        f"{len(changes)} files of the package changed since" if changes else "no local changes"
    )


# -- the database ----------------------------------------------------------------------------


def _department_codes(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as connection:
        return [code for (code,) in connection.execute("SELECT code FROM departments")]


def seed_users(db: Path, clients: int, departments: Sequence[str]) -> None:
    """The users the tokens speak for: a viewer per client, two admins for attack 8 and the
    operator who reads /health."""
    admins = [(f"abuse-admin-{index}", Role.ADMIN, list(departments)) for index in (0, 1)]
    add_users(db, [*viewers(clients), *admins, (OPERATOR, Role.SUPER_ADMIN, [])])


def seed_rollups(db: Path, days: int) -> int:
    """`days` of hourly roll-ups for every series and scope, so that history requests read
    real rows; before the first start (the service adds its own counts to them)."""
    rng = random.Random(12)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None, timeout=10)) as connection:
        scopes = [0, *(id_ for (id_,) in connection.execute("SELECT id FROM departments"))]
        hour = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
        first = hour - timedelta(days=days)
        rows: list[tuple[str, int, str, int, float, float, float | None]] = []
        while first <= hour:
            stamp = first.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's DateTime on SQLite
            for scope in scopes:
                for series in COUNT_SERIES:
                    amount = rng.randint(0, 400_000) if series == "revenue" else rng.randint(0, 9)
                    rows.append((series, scope, stamp, amount, 0.0, 0.0, None))
                rate = rng.random()
                rows.append((OCCUPANCY, scope, stamp, 0, rate * 3600, 3600.0, min(rate + 0.1, 1)))
            first += timedelta(hours=1)
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT OR IGNORE INTO metric_rollups"
            " (series, department_id, hour_start, amount, weighted, seconds, peak)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.execute("COMMIT")
    return len(rows)


# -- the hospital's writer -------------------------------------------------------------------


def write_patients(db: str, department_id: int, stop: EventType, out: Connection) -> None:
    """The writer process: a patient into the department every 20 ms with plain sqlite3, each
    INSERT its own transaction; sends (value, started, committed, seconds) in batches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it sets `stop`
    connection = sqlite3.connect(db, isolation_level=None, timeout=WRITER_BUSY_TIMEOUT_SECONDS)
    value = connection.execute(
        "SELECT COUNT(*) FROM patients WHERE department_id = ?", (department_id,)
    ).fetchone()[0]
    batch: list[tuple[int, float, float, float]] = []
    sent = tick = time.monotonic()
    try:
        while not stop.is_set():
            started, before = time.time(), time.perf_counter()
            try:
                connection.execute(
                    "INSERT INTO patients (department_id, name, status, emergency, registered_at)"
                    " VALUES (?, ?, 'registered', 0, ?)",
                    (department_id, f"abuse bench patient {value + 1}", sql_now()),
                )
                value += 1
                batch.append((value, started, time.time(), time.perf_counter() - before))
            except sqlite3.OperationalError:  # still locked after the busy timeout
                batch.append((-1, started, time.time(), time.perf_counter() - before))
            if time.monotonic() - sent >= 0.2:
                out.send(batch)
                batch, sent = [], time.monotonic()
            tick = max(tick + WRITE_INTERVAL_SECONDS, time.monotonic())
            stop.wait(max(tick - time.monotonic(), 0.0))
    finally:
        out.send(batch)
        out.close()
        connection.close()


@dataclass(frozen=True, slots=True)
class Commit:
    value: int  # patients in the department after it; -1: it failed (database locked)
    started: float
    committed: float
    seconds: float


class Writer:
    """The writer in its own process (a thread would wait for this process's GIL, and its
    commit times would include the bench's own work); a thread here collects its commits."""

    def __init__(self, db: Path, department_id: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._pipe, theirs = context.Pipe(duplex=False)
        self._process = context.Process(
            target=write_patients,
            args=(str(db), department_id, self._stop, theirs),
            name="abuse-writer",
            daemon=True,
        )
        self._theirs = theirs
        self.commits: list[Commit] = []
        self.committed_at: dict[int, float] = {}
        self._collector = threading.Thread(target=self._collect, name="writer-pipe", daemon=True)

    def __enter__(self) -> Writer:
        self._process.start()
        self._theirs.close()
        self._collector.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._process.join(STOP_SECONDS + WRITER_BUSY_TIMEOUT_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._collector.join(STOP_SECONDS)

    def _collect(self) -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                for row in self._pipe.recv():
                    commit = Commit(*row)
                    if commit.value > 0:
                        self.committed_at[commit.value] = commit.committed
                    self.commits.append(commit)

    async def first_commit(self, seconds: float = HEALTHY_DEADLINE_SECONDS) -> None:
        """Wait until the writer (a fresh interpreter) has committed once."""
        deadline = time.monotonic() + seconds
        while not self.commits:
            if time.monotonic() > deadline or not self._process.is_alive():
                raise RuntimeError("the writer process never committed")
            await asyncio.sleep(0.05)

    def started_between(self, start: float, end: float) -> list[Commit]:
        return [c for c in list(self.commits) if start <= c.started < end]


# -- the legitimate clients, and what they see -----------------------------------------------


class Legit:
    """`--clients` viewers watching patients_total of ED (latency.py's clients)."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self._url = url
        self._tokens = tokens
        self.clients = Watchers(url, tokens)
        self._next = 0

    async def connect(self) -> None:
        self.clients = Watchers(self._url, self._tokens)
        await self.clients.connect_all()

    def connected(self) -> int:
        return self.clients.connected()

    async def reconnect(self) -> None:
        await self.clients.close()
        await self.connect()

    async def snapshot_seconds(self) -> float:
        """One `request_snapshot` round trip, by the next client in turn."""
        sockets = self.clients.sockets
        client = sockets[self._next % len(sockets)]
        self._next += 1
        selection = {"metrics": [METRIC], "departments": [WATCHED]}
        started = time.monotonic()
        answer = await client.call("request_snapshot", selection, timeout=PROBE_TIMEOUT_SECONDS)
        if not isinstance(answer, dict) or "values" not in answer:
            raise RuntimeError(f"request_snapshot answered {str(answer)[:80]}")
        return time.monotonic() - started


@dataclass
class Phase:
    """What one phase (calm, or an attack) looked like from outside the service."""

    name: str
    start: float = 0.0
    end: float = 0.0
    rss_kb: list[int] = field(default_factory=list)
    health_seconds: list[float] = field(default_factory=list)
    health_failed: Counter[str] = field(default_factory=Counter)
    sockets: list[int] = field(default_factory=list)
    snapshot_seconds: list[float] = field(default_factory=list)
    snapshot_failed: Counter[str] = field(default_factory=Counter)
    lag: list[float] = field(default_factory=list)
    # Once the attack is over (late updates and held-up commits arrive after the phase):
    commit_seconds: list[float] = field(default_factory=list)
    failed_commits: int = 0
    latency: list[float] = field(default_factory=list)
    stale: int = 0

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Observer:
    """Samples the service's RSS, /health, snapshot round trips and the bench's loop lag."""

    def __init__(self, service: Service, legit: Legit, writer: Writer) -> None:
        self._service = service
        self._legit = legit
        self._writer = writer

    @contextlib.asynccontextmanager
    async def phase(self, name: str) -> AsyncIterator[Phase]:
        phase = Phase(name, start=time.time())
        lag = LoopLag()
        lag.start()
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            samplers = [
                asyncio.create_task(self._every(RSS_SAMPLE_SECONDS, self._rss, phase)),
                asyncio.create_task(
                    self._every(HEALTH_SAMPLE_SECONDS, lambda p: self._health(session, p), phase)
                ),
                asyncio.create_task(self._every(SNAPSHOT_SAMPLE_SECONDS, self._snapshot, phase)),
            ]
            try:
                yield phase
            finally:
                phase.end = time.time()
                for sampler in samplers:
                    sampler.cancel()
                await asyncio.gather(*samplers, return_exceptions=True)
                await lag.stop()
                phase.lag = lag.samples

    async def calm(self, seconds: float) -> Phase:
        async with self.phase("calm") as phase:
            await asyncio.sleep(seconds)
        return phase

    @staticmethod
    async def _every(
        seconds: float, sample: Callable[[Phase], Awaitable[None]], phase: Phase
    ) -> None:
        while True:
            await sample(phase)
            await asyncio.sleep(seconds)

    async def _rss(self, phase: Phase) -> None:
        rss = self._service.rss_kb()
        if rss is not None:
            phase.rss_kb.append(rss)

    async def _health(self, session: aiohttp.ClientSession, phase: Phase) -> None:
        started = time.monotonic()
        try:
            async with session.get(
                f"{self._service.url}/health", headers=self._service.health_headers
            ) as response:
                body = await response.json(content_type=None)
            phase.health_seconds.append(time.monotonic() - started)
            if response.status != 200:
                phase.health_failed[str(response.status)] += 1
            if isinstance(body, dict) and isinstance(body.get("sockets"), int):
                phase.sockets.append(body["sockets"])
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            phase.health_failed[type(error).__name__] += 1

    async def _snapshot(self, phase: Phase) -> None:
        try:
            phase.snapshot_seconds.append(await self._legit.snapshot_seconds())
        except Exception as error:  # a timeout, a refusal or a dropped socket alike
            phase.snapshot_failed[type(error).__name__] += 1

    def settle(self, phase: Phase) -> None:
        """The writer's commits started in the phase, and how late the clients showed them."""
        commits = self._writer.started_between(phase.start, phase.end)
        phase.commit_seconds = [c.seconds for c in commits]
        phase.failed_commits = sum(c.value < 0 for c in commits)
        measured = {c.value for c in commits if c.value > 0}
        clients = self._legit.clients
        phase.latency, phase.stale = freshness(
            clients.receipts, measured, dict(self._writer.committed_at), range(len(clients.tokens))
        )


# -- raw Engine.IO sockets (attacks 1 and 6) -------------------------------------------------


class EngineIOSocket:
    """A raw Engine.IO websocket: it answers the server's pings and notes what it is told."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.told: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str) -> EngineIOSocket:
        ws = await connect(
            url,
            compression=None,
            proxy=None,
            ping_interval=None,  # Engine.IO pings in its own packets
            max_size=None,
            open_timeout=10,
            close_timeout=2,
        )
        opening = await asyncio.wait_for(ws.recv(), 10)
        if not isinstance(opening, str) or not opening.startswith("0"):
            await ws.close()
            raise RuntimeError(f"not an Engine.IO open packet: {str(opening)[:80]}")
        return cls(ws)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                if message == "2":
                    await self.ws.send("3")
                elif isinstance(message, str):
                    self.told.append(message)

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN

    def close_reason(self) -> str:
        code = self.ws.close_code
        if code is None or code == 1006:  # 1006: no close frame came
            return "dropped without a close frame"
        return f"closed by the server: {code} {self.ws.close_reason or ''}".rstrip()

    async def close(self) -> None:
        with contextlib.suppress(WebSocketException, OSError, TimeoutError):
            await asyncio.wait_for(self.ws.close(), 5)
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def auth_timeout_seconds(url: str) -> float:
    """The service's authentication timeout, from a Socket.IO connection's first status."""
    socket = await EngineIOSocket.open(url)
    try:
        await socket.ws.send("40")
        for _ in range(100):
            for message in socket.told:
                if message.startswith('42["connection_status"'):
                    return float(json.loads(message[2:])[1]["auth_timeout_seconds"])
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no connection_status; the server said {socket.told}")
    finally:
        await socket.close()


# -- the attacks -----------------------------------------------------------------------------


@dataclass
class Attack:
    """What an attack needs: the service, the tokens' settings, the options."""

    service: Service
    settings: Settings
    departments: list[str]
    args: argparse.Namespace


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key} x{count}" for key, count in counter.most_common()) or "none"


@dataclass
class AbuseSocket:
    """One attack-1 socket: the frames it got in, how long it lasted, how it ended."""

    frames: int = 0
    seconds: float = 0.0
    end: str = "open at the end"
    told: list[str] = field(default_factory=list)


async def attack_unbounded_memory(attack: Attack, seconds: float) -> list[str]:
    """1: before signing in, announce a binary event with 9,999,999,999 attachments and
    stream 65 KB frames into it, on several sockets; reopened whenever the server closes one."""
    frame = os.urandom(FRAME_BYTES)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    cap_kb = attack.args.max_rss_mb * 1024
    capped = asyncio.Event()
    ended: list[AbuseSocket] = []

    async def watch_rss() -> None:
        while not capped.is_set():
            if (attack.service.rss_kb() or 0) >= cap_kb:
                capped.set()
            await asyncio.sleep(0.1)

    async def one_socket() -> None:
        record, started = AbuseSocket(), loop.time()
        socket: EngineIOSocket | None = None
        try:
            socket = await EngineIOSocket.open(attack.service.ws_url)
            record.told = socket.told
            await socket.ws.send("40")
            await socket.ws.send(ENDLESS_BINARY_EVENT)
            while loop.time() < deadline and not capped.is_set():
                await socket.ws.send(frame)
                record.frames += 1
                await asyncio.sleep(0)  # fair to the clients measured in this loop
            if capped.is_set():
                record.end = "stopped at the RSS cap"
        except ConnectionClosed:
            record.end = socket.close_reason() if socket is not None else "closed"
        except (OSError, WebSocketException, RuntimeError, TimeoutError) as error:
            record.end = f"{type(error).__name__}: {error}"[:120]
        finally:
            if socket is not None:
                await socket.close()
        record.seconds = loop.time() - started
        ended.append(record)

    async def keep_sending() -> None:
        while loop.time() < deadline - 0.5 and not capped.is_set():
            await one_socket()
            await asyncio.sleep(REOPEN_SECONDS)

    watcher = asyncio.create_task(watch_rss())
    try:
        await asyncio.gather(*(keep_sending() for _ in range(attack.args.abuse_sockets)))
    finally:
        watcher.cancel()
    frames = [record.frames for record in ended]
    # What the server said besides the handshake: its refusals, a disconnect ("41"), ...
    said = Counter(
        message[:60]
        for record in ended
        for message in record.told
        if not message.startswith(("40{", '42["connection_status"'))
    )
    capped_at = f"; stopped at the RSS cap ({attack.args.max_rss_mb:,} MB)"
    return [
        f"{len(ended)} sockets ({attack.args.abuse_sockets} at a time) sent {sum(frames):,} "
        f"frames of {FRAME_BYTES:,} bytes = {sum(frames) * FRAME_BYTES / 1e6:,.0f} MB"
        + (capped_at if capped.is_set() else ""),
        f"frames accepted per socket: min {min(frames, default=0):,}, max "
        f"{max(frames, default=0):,}; longest open "
        f"{max((record.seconds for record in ended), default=0):.1f} s",
        f"ends: {_counts(Counter(record.end for record in ended))}",
        f"server said: {_counts(said)}",
    ]


@dataclass
class Answer:
    """How the server answered one oversized request."""

    status: str = "no answer"
    response_bytes: int = 0
    sent_at_answer: int | None = None
    """Request bytes handed to the socket when the answer began (kernel buffers included)."""
    sent: int = 0
    seconds: float = 0.0
    connection_error: str | None = None
    """How the connection ended, when not cleanly (the server reset it, ...)."""

    def line(self, what: str) -> str:
        at = "-" if self.sent_at_answer is None else f"{self.sent_at_answer / 1e6:,.1f} MB"
        error = (
            f"; the connection ended in {self.connection_error}" if self.connection_error else ""
        )
        return (
            f"{what}: {self.status}, {self.response_bytes:,} bytes back after {self.seconds:.1f} s;"
            f" sent {at} before the answer began, {self.sent / 1e6:,.1f} MB in all{error}"
        )


async def _chunked_json(size: int, answer: Answer) -> AsyncIterator[bytes]:
    """A `size`-byte JSON sign-in, yielded in 1 MiB pieces and counted as they are taken."""
    head, tail = b'{"username": "abuse", "password": "', b'"}'
    chunk = b"a" * CHUNK_BYTES
    yield head
    answer.sent += len(head)
    remaining = size - len(head) - len(tail)
    while remaining > 0:
        piece = chunk if remaining >= CHUNK_BYTES else chunk[:remaining]
        yield piece
        answer.sent += len(piece)
        remaining -= len(piece)
    yield tail
    answer.sent += len(tail)


async def _post_chunked(session: aiohttp.ClientSession, url: str, deadline: float) -> Answer:
    answer = Answer()
    started = time.monotonic()
    try:
        async with asyncio.timeout_at(deadline):
            async with session.post(
                url,
                data=_chunked_json(BODY_BYTES, answer),
                headers={"Content-Type": "application/json"},
            ) as response:
                answer.sent_at_answer = answer.sent
                answer.status = str(response.status)
                # Counted, not kept: an answer can be as large as the body.
                async for data in response.content.iter_chunked(CHUNK_BYTES):
                    answer.response_bytes += len(data)
    except TimeoutError:
        answer.status = "no answer in time"
    except aiohttp.ClientError as error:
        answer.status = type(error).__name__
    answer.seconds = time.monotonic() - started
    return answer


async def _big_header(url: str, deadline: float) -> Answer:
    """One POST whose header is HEADER_BYTES long, written 1 MiB at a time over a raw socket."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    answer = Answer()
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, int(port))

    async def read_answer() -> None:
        first = await reader.readline()
        answer.sent_at_answer = answer.sent
        parts = first.decode(errors="replace").split()
        answer.status = parts[1] if len(parts) > 1 else f"closed without an answer ({first!r:.40})"
        answer.response_bytes = len(first)
        with contextlib.suppress(TimeoutError, OSError):
            while data := await asyncio.wait_for(reader.read(1 << 16), 1.0):
                answer.response_bytes += len(data)

    reading = asyncio.create_task(read_answer())
    try:
        async with asyncio.timeout_at(deadline):
            head = (
                f"POST /api/auth/login HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Content-Type: application/json\r\nContent-Length: 2\r\nX-Padding: "
            ).encode()
            writer.write(head)
            answer.sent = len(head)
            chunk = b"a" * CHUNK_BYTES
            while answer.sent < HEADER_BYTES and not reading.done():
                writer.write(chunk)
                await writer.drain()
                answer.sent += len(chunk)
            if not reading.done():
                writer.write(b"\r\n\r\n{}")
                await writer.drain()
            await reading
    except TimeoutError:
        if answer.sent_at_answer is None:
            answer.status = "no answer in time"
    except OSError as error:
        answer.connection_error = type(error).__name__
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(reading, 2)
    finally:
        reading.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    answer.seconds = time.monotonic() - started
    return answer


async def attack_chunked_bodies(attack: Attack, seconds: float) -> list[str]:
    """3: BODIES chunked 200 MB JSON bodies to the sign-in at once (no Content-Length to
    check), and one request with a 100 MB header; each given until ANSWER_DEADLINE_SECONDS
    to be answered, and the attack lasts at least `seconds`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + max(seconds, ANSWER_DEADLINE_SECONDS)
    url = f"{attack.service.url}/api/auth/login"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        header = asyncio.create_task(_big_header(attack.service.url, deadline))
        bodies = await asyncio.gather(
            *(_post_chunked(session, url, deadline) for _ in range(BODIES))
        )
        await header
    await asyncio.sleep(max(started + seconds - loop.time(), 0))
    lines = [
        f"{BODIES} chunked bodies of {BODY_BYTES / 1e6:,.0f} MB at once, and a header of "
        f"{HEADER_BYTES / 1e6:,.0f} MB; each given {max(seconds, ANSWER_DEADLINE_SECONDS):g} s"
    ]
    lines += [answer.line(f"body {n}") for n, answer in enumerate(bodies, 1)]
    lines.append(header.result().line("header"))
    return lines


async def attack_refresh_flood(attack: Attack, seconds: float) -> list[str]:
    """5: `--flood-tasks` tasks posting a fake refresh token to /refresh and /logout in turn."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    seen: Counter[str] = Counter()

    async def flood(session: aiohttp.ClientSession) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while True:
                    for path in ("refresh", "logout"):
                        try:
                            async with session.post(
                                f"{attack.service.url}/api/auth/{path}", json=FAKE_REFRESH
                            ) as response:
                                await response.read()
                            seen[f"{path} {response.status}"] += 1
                        except aiohttp.ClientError as error:
                            seen[f"{path} {type(error).__name__}"] += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(flood(session) for _ in range(attack.args.flood_tasks)))
    total = sum(seen.values())
    limited = sum(count for key, count in seen.items() if key.endswith(" 429"))
    return [
        f"{attack.args.flood_tasks} tasks, {total:,} requests ({total / seconds:,.0f}/s), "
        f"429s {limited:,}/{total:,}",
        f"answers: {_counts(seen)}",
    ]


async def attack_idle_connections(attack: Attack, seconds: float) -> list[str]:
    """6: Engine.IO connections that answer pings but never send `40` (Socket.IO connect);
    held until the authentication timeout is long past."""
    timeout = await auth_timeout_seconds(attack.service.ws_url)
    wanted = attack.args.idle_connections
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    sockets: list[EngineIOSocket] = []
    failed: Counter[str] = Counter()

    async def open_one() -> None:
        async with gate:
            try:
                sockets.append(await EngineIOSocket.open(attack.service.ws_url))
            except (OSError, WebSocketException, RuntimeError, TimeoutError) as error:
                failed[type(error).__name__] += 1

    async def close_one(socket: EngineIOSocket) -> None:
        async with gate:
            await socket.close()

    started = time.monotonic()
    try:
        await asyncio.gather(*(open_one() for _ in range(wanted)))
        opened_in = time.monotonic() - started
        hold = max(seconds - opened_in, timeout + IDLE_GRACE_SECONDS)
        await asyncio.sleep(hold)
        still_open = sum(socket.is_open for socket in sockets)
        closes = Counter(socket.close_reason() for socket in sockets if not socket.is_open)
        health = await attack.service.health()
        rss = attack.service.rss_kb()
    finally:
        await asyncio.gather(*(close_one(socket) for socket in sockets))
    return [
        f"{len(sockets):,}/{wanted:,} opened in {opened_in:.1f} s (failed: {_counts(failed)})",
        f"after {hold:.0f} s (authentication timeout {timeout:g} s + {IDLE_GRACE_SECONDS:g} s): "
        f"{still_open:,} still open; closed: {_counts(closes)}",
        f"then: /health sockets {health.get('sockets', '?')}"
        + (f", transports {health['transports']}" if "transports" in health else "")
        + f" (status {health.get('status')}), RSS {_mb(rss)}",
    ]


async def _admin_socket(attack: Attack, user: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    authenticated = asyncio.Event()
    client.on("authenticated", lambda data: authenticated.set())
    token = issue_token(attack.settings, user, Role.ADMIN, attack.departments)
    await client.connect(
        attack.service.url, auth={"token": token}, transports=["websocket"], wait_timeout=10
    )
    await asyncio.wait_for(authenticated.wait(), 10)
    return client


def _answer_code(answer: Any) -> str:
    if isinstance(answer, dict) and "points" in answer:
        return "historical_data"
    if isinstance(answer, dict):
        return str(answer.get("code", answer))[:40]
    return repr(answer)[:40]


async def attack_history(attack: Attack, seconds: float) -> list[str]:
    """8: an admin asks for a year of daily history HISTORY_REQUESTS times, evenly over
    HISTORY_WINDOW_SECONDS; then another admin asks for the year 9999."""
    loop = asyncio.get_running_loop()
    now = datetime.now(UTC).replace(microsecond=0)
    request = {
        "metric": HISTORY_METRIC,
        "department": WATCHED,
        "from": (now - timedelta(days=365)).isoformat(),
        "to": now.isoformat(),
        "granularity": "day",
    }
    answers: Counter[str] = Counter()
    answer_seconds: list[float] = []
    events: Counter[str] = Counter()
    all_answered = asyncio.Event()

    def answered(sent: float) -> Callable[..., None]:
        def note(*data: Any) -> None:
            answer_seconds.append(loop.time() - sent)
            answers[_answer_code(data[0] if data else None)] += 1
            if sum(answers.values()) == HISTORY_REQUESTS:
                all_answered.set()

        return note

    started = loop.time()
    client = await _admin_socket(attack, "abuse-admin-0")
    client.on("historical_data", lambda data: events.update(["historical_data"]))
    client.on("error", lambda data: events.update([f"error {_answer_code(data)}"]))
    try:
        pace = HISTORY_WINDOW_SECONDS / HISTORY_REQUESTS
        for index in range(HISTORY_REQUESTS):
            await asyncio.sleep(max(started + index * pace - loop.time(), 0))
            await client.emit("request_historical", request, callback=answered(loop.time()))
        sent_in = loop.time() - started
        with contextlib.suppress(TimeoutError):
            wait = max(seconds - (loop.time() - started), 0) + HISTORY_ANSWER_SECONDS
            await asyncio.wait_for(all_answered.wait(), wait)
        await asyncio.sleep(max(seconds - (loop.time() - started), 0))
    finally:
        await client.disconnect()
    far = await _year_9999(attack)
    unanswered = HISTORY_REQUESTS - sum(answers.values())
    return [
        f"{HISTORY_REQUESTS} requests ({HISTORY_METRIC}, {WATCHED}, 365 days by day) sent in "
        f"{sent_in:.1f} s; answers: {_counts(answers)}"
        + (f"; {unanswered} unanswered" if unanswered else ""),
        f"answer time p50 {duration(percentile(answer_seconds, 0.5))}, "
        f"max {duration(max(answer_seconds, default=0.0))}; events: {_counts(events)}",
        f"year 9999 (another admin): {far}",
    ]


async def _year_9999(attack: Attack) -> str:
    request = {
        "metric": HISTORY_METRIC,
        "department": WATCHED,
        "from": "9999-01-01T00:00:00Z",
        "to": "9999-12-31T23:59:59Z",
        "granularity": "day",
    }
    try:
        client = await _admin_socket(attack, "abuse-admin-1")
    except (socketio.exceptions.SocketIOError, TimeoutError, OSError) as error:
        return f"could not connect: {type(error).__name__}"
    started = time.monotonic()
    try:
        answer = await client.call("request_historical", request, timeout=30)
    except TimeoutError:
        return "no answer in 30 s"
    finally:
        await client.disconnect()
    took = duration(time.monotonic() - started)
    if not isinstance(answer, dict):
        return f"{answer!r:.80} after {took}"
    code = _answer_code(answer)
    detail = (
        f"{len(answer['points'])} points" if code == "historical_data" else answer.get("message")
    )
    return f"{code} ({detail!s:.80}) after {took}"


@dataclass(frozen=True)
class Plan:
    title: str
    run: Callable[[Attack, float], Awaitable[list[str]]]


PLANS = {
    1: Plan("unbounded memory before sign-in", attack_unbounded_memory),
    3: Plan("chunked bodies and a huge header", attack_chunked_bodies),
    5: Plan("fake refresh-token flood", attack_refresh_flood),
    6: Plan("Engine.IO connections that never connect", attack_idle_connections),
    8: Plan("expensive history requests", attack_history),
}


# -- the report ------------------------------------------------------------------------------


def _mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:,.0f} MB"


def _failures(counter: Counter[str]) -> str:
    return f"; failed {_counts(counter)}" if counter else ""


def _latency(phase: Phase) -> str:
    never = f"; {phase.stale:,} never shown" if phase.stale else ""
    return quantiles(phase.latency, 0.5, 0.95, 1.0) + never


def _commits(phase: Phase) -> str:
    scheduled = phase.seconds / WRITE_INTERVAL_SECONDS
    failed = f", {phase.failed_commits} failed (locked)" if phase.failed_commits else ""
    return (
        f"{quantiles(phase.commit_seconds, 0.95, 1.0)}  "
        f"({len(phase.commit_seconds)}/{scheduled:.0f}{failed})"
    )


def rows(calm: Phase, during: Phase) -> Iterator[tuple[str, str, str]]:
    """(figure, before, during) for the figures every attack shares."""
    yield (
        "server RSS",
        _mb(calm.rss_kb[-1] if calm.rss_kb else None),
        f"max {_mb(max(during.rss_kb, default=None))}"
        + (f", at the end {_mb(during.rss_kb[-1])}" if during.rss_kb else ""),
    )
    yield (
        "update latency",
        _latency(calm),
        _latency(during),
    )
    yield (
        "snapshot round trip",
        quantiles(calm.snapshot_seconds, 0.5, 1.0) + _failures(calm.snapshot_failed),
        quantiles(during.snapshot_seconds, 0.5, 1.0) + _failures(during.snapshot_failed),
    )
    yield "writer commit", _commits(calm), _commits(during)
    yield (
        "/health",
        quantiles(calm.health_seconds, 0.5, 1.0) + _failures(calm.health_failed),
        quantiles(during.health_seconds, 0.5, 1.0) + _failures(during.health_failed),
    )
    yield (
        "/health sockets",
        str(calm.sockets[-1]) if calm.sockets else "?",
        f"max {max(during.sockets)}" if during.sockets else "?",
    )
    yield (
        "bench loop lag",
        quantiles(calm.lag, 0.95, 1.0),
        quantiles(during.lag, 0.95, 1.0),
    )


def block(
    number: int, calm: Phase, during: Phase, alive: str, rss_after: int | None, outcome: list[str]
) -> Iterator[str]:
    yield (
        f"attack {number}  {PLANS[number].title} "
        f"(calm {calm.seconds:.1f} s, attack {during.seconds:.1f} s)"
    )
    yield f"  {'':<22}{'before':<36}during"
    for name, before, while_attacked in rows(calm, during):
        yield f"  {name:<22}{before:<36}{while_attacked}"
    yield f"  {'alive after':<22}{alive}; RSS {_mb(rss_after)}"
    for line in outcome:
        yield f"  {'outcome':<22}{line}"


# -- the run ---------------------------------------------------------------------------------


async def alive_after(service: Service) -> tuple[bool, str]:
    """Whether the service outlived the attack: running, and /health 200 within 30 s."""
    started = time.monotonic()
    if await service.wait_healthy():
        return True, f"yes (/health 200 after {duration(time.monotonic() - started)})"
    code = service.exit_code()
    if code is not None:
        return False, f"NO: the server exited with status {code}"
    return False, f"NO: /health did not answer 200 in {HEALTHY_DEADLINE_SECONDS:g} s"


async def run(args: argparse.Namespace, attack: Attack, tokens: list[str], writer: Writer) -> None:
    """Each attack in turn, after a calm phase; the service is restarted only if it died."""
    service = attack.service
    if service.managed:
        print(
            f"server:     started in {await service.start():.1f} s, pid {service.pid} at "
            f"{service.url}",
            flush=True,
        )
    legit = Legit(service.url, tokens)
    await legit.connect()
    await writer.first_commit()
    observer = Observer(service, legit, writer)
    try:
        for number in args.attack:
            if legit.connected() < args.clients:
                print(
                    f"({args.clients - legit.connected()} clients were disconnected: "
                    "reconnecting them all)",
                    flush=True,
                )
                await legit.reconnect()
            calm = await observer.calm(args.calm)
            async with observer.phase("attack") as during:
                try:
                    outcome = await PLANS[number].run(attack, args.seconds)
                except Exception as error:  # the figures of the others are still worth having
                    traceback.print_exc()
                    outcome = [f"the attack itself failed: {type(error).__name__}: {error}"]
            alive, verdict = await alive_after(service)
            await asyncio.sleep(SETTLE_SECONDS)
            rss_after = service.rss_kb()
            observer.settle(calm)
            observer.settle(during)
            print("\n".join(block(number, calm, during, verdict, rss_after, outcome)), flush=True)
            print(flush=True)
            if alive:
                continue
            if not service.managed:
                print("the service at --url is down: stopping here", flush=True)
                return
            print(f"server log (last lines):\n{service.log_tail()}", flush=True)
            await asyncio.to_thread(service.stop)
            print(f"service restarted in {await service.start():.1f} s", flush=True)
            await legit.reconnect()
    finally:
        await legit.clients.close()


# -- entry point -----------------------------------------------------------------------------


def raise_open_files(connections: int) -> str:
    """Raise this process's soft RLIMIT_NOFILE (the server inherits it) for the connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * connections + 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return f"{soft} -> {wanted} (hard {hard})"
    return f"{soft} (hard {hard})"


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Replay the hostile test's attacks (security issue 12) and print what "
        "legitimate users and the hospital's writer would notice."
    )
    parser.add_argument(
        "--attack", default=",".join(map(str, ATTACKS)), help="which, in order (1,3,5,6,8)"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="each attack's length (8)")
    parser.add_argument("--calm", type=float, default=3.0, help="calm seconds before each (3)")
    parser.add_argument("--clients", type=int, default=20, help="legitimate clients (20)")
    parser.add_argument("--abuse-sockets", type=int, default=3, help="attack 1: sockets (3)")
    parser.add_argument("--flood-tasks", type=int, default=24, help="attack 5: tasks (24)")
    parser.add_argument(
        "--idle-connections", type=int, default=2000, help="attack 6: connections (2000)"
    )
    parser.add_argument(
        "--max-rss-mb",
        type=int,
        default=3072,
        help="attack 1 stops sending once the server's RSS reaches this (3072)",
    )
    parser.add_argument("--url", help="a running service (default: start one here)")
    parser.add_argument(
        "--db", type=Path, help="its SQLite file (required with --url; else a temp file, kept)"
    )
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, for its RSS")
    parser.add_argument("--port", type=int, help="the started service's port (a free one)")
    args = parser.parse_args(argv)
    try:
        args.attack = [int(n) for n in args.attack.split(",") if n.strip()]
    except ValueError:
        parser.error("--attack: numbers separated by commas, e.g. 1,5")
    if not args.attack or set(args.attack) - set(ATTACKS):
        parser.error(f"--attack: some of {','.join(map(str, ATTACKS))}")
    if args.seconds <= 0 or args.calm <= 0 or args.clients < 1:
        parser.error("--seconds > 0, --calm > 0, --clients >= 1")
    if args.url is not None:
        if args.db is None:
            parser.error("--url needs --db (the writer and the users go there)")
        if args.port is not None:
            parser.error("--port is for a service started here")
        if not os.environ.get("LIVEDASH_JWT_SECRET"):
            parser.error("--url needs LIVEDASH_JWT_SECRET, the service's, to sign tokens")
    elif args.pid is not None:
        parser.error("--pid goes with --url")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    begin_bench()
    open_files = raise_open_files(args.idle_connections)
    with tempfile.TemporaryDirectory(prefix="livedash-abuse-") as temp:
        workdir = Path(temp)
        db: Path = (args.db or workdir / "hospital.db").absolute()
        url = f"sqlite+aiosqlite:///{db}"
        rollups = "as found"
        if args.url is None:
            upgrade(url)
            settings = bench_settings(url, workdir)
            secret = settings.signing_key()
            operator = issue_token(settings, OPERATOR, Role.SUPER_ADMIN)
            service = Service.child(db, args.port, workdir, secret, operator)
        else:
            settings = Settings(database_url=url, _env_file=None)  # its secret: from the env
            operator = issue_token(settings, OPERATOR, Role.SUPER_ADMIN)
            service = Service(args.url.rstrip("/"), args.pid, health_token=operator)
        department_id = seed_sqlite(db)
        if args.url is None:
            rollups = f"{seed_rollups(db, HISTORY_DAYS):,} hourly roll-ups ({HISTORY_DAYS} days)"
        departments = _department_codes(db)
        seed_users(db, args.clients, departments)
        tokens = [
            issue_token(settings, f"bench-{index}", Role.VIEWER, [WATCHED])
            for index in range(args.clients)
        ]
        print(f"service:    livedash from {service.source()}", flush=True)
        print(
            f"database:   SQLite at {db}: departments {', '.join(departments)}; {rollups}",
            flush=True,
        )
        print(
            f"watching:   {args.clients} socket.io clients on {METRIC}/{WATCHED}; a writer "
            f"process inserts into {WATCHED} every {WRITE_INTERVAL_SECONDS * 1000:g} ms "
            f"(sqlite3, busy timeout {WRITER_BUSY_TIMEOUT_SECONDS:g} s)",
            flush=True,
        )
        print(
            f"machine:    {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
            f"open files {open_files}",
            flush=True,
        )
        attack = Attack(service, settings, departments, args)
        try:
            with Writer(db, department_id) as writer:
                asyncio.run(run(args, attack, tokens, writer))
        except KeyboardInterrupt:
            print("interrupted; the server was stopped", file=sys.stderr)
            return 130
        finally:
            service.stop()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
