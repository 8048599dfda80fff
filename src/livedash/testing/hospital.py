"""The benches' hospital: its rows and users, and its own programs writing, each in a process.

A small hospital (three departments of rooms, beds and patients) is written with plain sqlite3
or asyncpg, as the hospital's application would, never through livedash. Users are rows of
`users`, as its administrators would add them. Two writers stand for the hospital at work:
`WriterProcess` inserts one patient per tick into the watched department on a fixed schedule
and notes when each commit returned (the latency bench's clock), and `SimulatorProcess` runs
`livedash.simulator` for realistic activity of every kind. Each runs in a process of its own:
a thread would share the bench's GIL, and the time it notes after a commit would include
waiting for the bench's clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from livedash.store.models import Role

METRIC = "patients_total"
"""What the benches' clients watch..."""
WATCHED = "ED"
"""...of this department, into which the writer inserts."""
DEPARTMENTS = (("ED", "Emergency"), ("CARD", "Cardiology"), ("ICU", "Intensive Care"))
ROOMS_PER_DEPARTMENT = 3
BEDS_PER_ROOM = 4
PATIENTS_PER_DEPARTMENT = 5
OPERATOR = "bench-operator"
"""A super_admin user: /health shows its details (role, sockets, feed) only to such a token."""
STOP_SECONDS = 10.0
RETRY_SECONDS = 1.0

User = tuple[str, Role, Sequence[str]]
"""(username, role, departments)."""


def sql_now() -> str:
    """Now, as the hospital's application writes timestamps into SQLite."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _utc_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def viewers(count: int, prefix: str = "bench") -> list[User]:
    """`count` viewers of the watched department: `{prefix}-0`, `{prefix}-1`, ..."""
    return [(f"{prefix}-{index}", Role.VIEWER, [WATCHED]) for index in range(count)]


def migrated_hospital(path: Path) -> tuple[str, int]:
    """Migrate the SQLite file at `path` (made if missing) and add the small hospital: its
    database URL, and the watched department's id. What each bench serves from."""
    from livedash.store.migrate import upgrade

    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url, seed_sqlite(path)


def seed_sqlite(path: Path) -> int:
    """Add the small hospital (unless there is one); the watched department's id."""
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
                    (department, f"{code} patient {index}", sql_now()),
                )
        connection.execute("COMMIT")
        row = connection.execute("SELECT id FROM departments WHERE code = ?", (WATCHED,)).fetchone()
        return int(row[0])
    finally:
        connection.close()


async def seed_postgres(dsn: str) -> int:
    """The same hospital on PostgreSQL; the watched department's id."""
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
        return int(await connection.fetchval("SELECT id FROM departments WHERE code = $1", WATCHED))
    finally:
        await connection.close()


_ADD_USER = (
    "INSERT INTO users (username, role, departments, active) VALUES ({}, {}, {}, {}) "
    "ON CONFLICT (username) DO NOTHING"
)


def add_users(database: Path | str, users: Iterable[User]) -> None:
    """Add active `users` (a SQLite file, or a PostgreSQL DSN); existing names are kept."""
    rows = [(name, role.value, json.dumps(list(departments))) for name, role, departments in users]
    if isinstance(database, Path):
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as db, db:
            db.executemany(_ADD_USER.format("?", "?", "?", "1"), rows)
        return

    async def write() -> None:
        connection = await asyncpg.connect(database)
        try:
            await connection.executemany(_ADD_USER.format("$1", "$2", "$3", "true"), rows)
        finally:
            await connection.close()

    asyncio.run(write())


# -- a patient per tick ----------------------------------------------------------------------


@dataclass
class Writes:
    """What the writer did; sent back from its process as plain data."""

    start_value: int = 0
    commits: dict[int, float] = field(default_factory=dict)
    """patients_total of the watched department after a commit -> time.monotonic() of it:
    CLOCK_MONOTONIC, which the clients read too (time.time() is slewed, and a Node process
    cannot follow it to the microsecond)."""
    commits_wall: dict[int, float] = field(default_factory=dict)
    """The same commits by time.time(), against the service's own timestamps."""
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
        last = time.monotonic()
        wall = time.time()
        value = writes.start_value + n
        writes.commits[value] = last
        writes.commits_wall[value] = wall
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
                    (department_id, f"bench patient {n}", sql_now()),
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
    """The patient writer in its own process: `db` a SQLite file, or a PostgreSQL DSN."""

    def __init__(
        self, db: Path | str, department_id: int, rate: float, warmup: float, seconds: float
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._go = context.Event()
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        target = write_patients if isinstance(db, Path) else write_patients_postgres
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


# -- the simulator ---------------------------------------------------------------------------


def simulate(
    url: str, seed: int, speed: float, zone: str, stop: EventType, results: Connection
) -> None:
    """The hospital simulator in its own process, until `stop`; started again if it fails."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from livedash.simulator import HospitalSimulator

    kinds: Counter[str] = Counter()
    restarts = 0

    async def run() -> None:
        nonlocal restarts
        halt = asyncio.Event()

        async def watch() -> None:
            await asyncio.to_thread(stop.wait)
            halt.set()

        watcher = asyncio.create_task(watch())
        attempt = 0
        while not halt.is_set():
            try:
                async with HospitalSimulator(
                    url, seed=seed + attempt, zone=ZoneInfo(zone)
                ) as simulator:
                    await simulator.run(
                        speed=speed, stop=halt, on_event=lambda kind: kinds.update([kind])
                    )
            except Exception:
                # The simulator survives failed steps; a failure outside one (its start-up
                # load while PostgreSQL is down) ends run(): start again.
                restarts += 1
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(halt.wait(), RETRY_SECONDS)
        await watcher

    try:
        asyncio.run(run())
    finally:
        results.send({"kinds": dict(kinds), "restarts": restarts})


class SimulatorProcess:
    """`livedash.simulator` writing to `url` in its own process; `stop()` returns its figures:
    events by kind, restarts after a failure and seconds run."""

    def __init__(self, url: str, seed: int, speed: float, zone: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=simulate,
            args=(url, seed, speed, zone, self._stop, sender),
            name="bench-simulator",
            daemon=True,
        )
        self._sender = sender
        self.figures: dict[str, Any] = {}
        self.started = 0.0

    def __enter__(self) -> SimulatorProcess:
        self.started = time.time()
        self._process.start()
        self._sender.close()
        return self

    def stop(self) -> dict[str, Any]:
        if not self.figures and self._process.is_alive():
            self._stop.set()
            if self._results.poll(30):
                self.figures = self._results.recv()
            self._process.join(STOP_SECONDS)
            self.figures["seconds"] = time.time() - self.started
        return self.figures

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._process.join(STOP_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
