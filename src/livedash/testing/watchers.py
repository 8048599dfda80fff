"""Socket.io clients watching one value (`patients_total` of the watched department), noting
when each update arrives: in the bench's own process (`Watchers`), or spread over worker
processes (`WatcherProcesses`) when one event loop would stamp the last of them late.

The clients may subscribe to more metrics of the department than the watched one (`metrics`),
as a department's screen does, and take their updates batched (`batched`: `updates:
"batched"` in the handshake, one `dashboard_updates` per send of the service, each of its
updates a receipt as a `dashboard_update` would be, all with the batch's arrival). Only the
watched value is timed; every update frame and value is counted (`frames`, `values`).

The latency of an update is its arrival minus the commit that produced its value; a value
counts as shown once a client shows it or a later one (`freshness`), so commits coalesced into
one update still count.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import socketio

from livedash.testing.hospital import METRIC, WATCHED
from livedash.testing.processes import WorkerProcesses
from livedash.testing.servers import loopback_address
from livedash.testing.usage import LoopLag, run_queue_seconds

CONNECT_CONCURRENCY = 50
STOP_SECONDS = 10.0


def handshake_auth(token: str, batched: bool) -> dict[str, str]:
    """The handshake's `auth`: the token, and `updates: "batched"` when asked."""
    return {"token": token, "updates": "batched"} if batched else {"token": token}


@dataclass(slots=True)
class Receipt:
    client: int
    value: int
    received: float
    published: str
    """The update's `timestamp`: when the service published it."""


@dataclass
class Watchers:
    """N socket.io clients and every update of the watched value they received."""

    url: str
    tokens: list[str]
    receipts: list[Receipt] = field(default_factory=list)
    latest: list[int] = field(default_factory=list)
    sockets: list[socketio.AsyncClient] = field(default_factory=list)
    http_sessions: list[aiohttp.ClientSession] | None = None
    """An aiohttp session per client (to pick its source address); None: socket.io's own."""
    metrics: Sequence[str] = (METRIC,)
    """What each client subscribes to, of the watched department."""
    batched: bool = False
    """Ask for `dashboard_updates` in the handshake instead of `dashboard_update`."""
    frames: int = 0
    """`dashboard_update` and `dashboard_updates` events received (see `count_from_here`)."""
    values: int = 0
    """The updates in them (one per `dashboard_update`)."""

    def count_from_here(self) -> None:
        """Count frames and values from now on (from the connect until then)."""
        self.frames = self.values = 0

    async def connect_all(self) -> None:
        """Connect, authenticate and subscribe every client, a few at a time."""
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

        def record(data: dict[str, Any], received: float) -> None:
            if data.get("metric") == METRIC and data.get("department") == WATCHED:
                value = int(data["value"])
                self.receipts.append(Receipt(index, value, received, str(data["timestamp"])))
                self.latest[index] = max(self.latest[index], value)

        def on_update(data: dict[str, Any]) -> None:
            received = time.monotonic()  # the writer's clock (hospital.Writes)
            self.frames += 1
            self.values += 1
            record(data, received)

        def on_updates(data: dict[str, Any]) -> None:
            received = time.monotonic()
            updates = data.get("updates") or []
            self.frames += 1
            self.values += len(updates)
            for update in updates:
                record(update, received)

        def on_authenticated(data: Any) -> None:
            authenticated.set()

        def on_auth_error(data: Any) -> None:
            refused.append(data)
            authenticated.set()

        client.on("dashboard_update", on_update)
        client.on("dashboard_updates", on_updates)
        client.on("authenticated", on_authenticated)
        client.on("auth_error", on_auth_error)
        await client.connect(
            self.url,
            auth=handshake_auth(self.tokens[index], self.batched),
            transports=["websocket"],
            wait_timeout=10,
        )
        await asyncio.wait_for(authenticated.wait(), 10)
        if refused:
            raise RuntimeError(f"client {index} was refused: {refused[0]}")
        ack = await client.call(
            "subscribe_metrics",
            {"metrics": list(self.metrics), "departments": [WATCHED]},
            timeout=10,
        )
        if not isinstance(ack, dict) or ack.get("ok") is not True:
            raise RuntimeError(f"client {index} could not subscribe: {ack}")

    def connected(self) -> int:
        return sum(bool(socket.connected) for socket in self.sockets)

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


# -- in several processes --------------------------------------------------------------------


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


async def _role_behind(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    """The role of the instance that nginx sends this session's source address to."""
    async with session.get(f"{url}/health", headers=headers) as response:
        body = await response.json()
    return str(body.get("role", "?"))


async def _serve_watchers(
    url: str,
    slots: list[tuple[int, str, str]],
    health_headers: dict[str, str],
    metrics: Sequence[str],
    batched: bool,
    pipe: Connection,
) -> None:
    sessions: dict[str, aiohttp.ClientSession] = {}
    for _, _, address in slots:
        if address not in sessions:
            connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0)
            sessions[address] = aiohttp.ClientSession(connector=connector)
    watchers = Watchers(
        url,
        [token for _, token, _ in slots],
        http_sessions=[sessions[address] for _, _, address in slots],
        metrics=metrics,
        batched=batched,
    )
    try:
        started = time.monotonic()
        await watchers.connect_all()
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
        watchers.count_from_here()
        cpu, waited = time.process_time(), run_queue_seconds()
        _, final_value, seconds = await _order(pipe, "drain")
        drain_seconds = await watchers.drain(final_value, seconds)
        cpu, waited = time.process_time() - cpu, run_queue_seconds() - waited
        frames, values = watchers.frames, watchers.values
        await lag.stop()
        # First a word, so that the parent stops its clocks before the receipts travel.
        pipe.send(("drained", drain_seconds))
        ids = [index for index, _, _ in slots]
        receipts = [(ids[r.client], r.value, r.received, r.published) for r in watchers.receipts]
        pipe.send(
            (
                "result",
                {
                    "receipts": receipts,
                    "latest": {ids[local]: value for local, value in enumerate(watchers.latest)},
                    "drain_seconds": drain_seconds,
                    "cpu_seconds": cpu,
                    "waited_seconds": waited,
                    "lag": lag.samples,
                    "frames": frames,
                    "values": values,
                },
            )
        )
        # Connected until told: the parent reads the servers' socket counts meanwhile.
        with contextlib.suppress(_Closed):
            await _order(pipe, "close")
    finally:
        gc.enable()
        await watchers.close()
        for session in sessions.values():
            await session.close()


def watcher_process(
    url: str,
    slots: list[tuple[int, str, str]],
    health_headers: dict[str, str],
    metrics: Sequence[str],
    batched: bool,
    pipe: Connection,
) -> None:
    """A worker process: connect `slots` (index, token, source address), subscribe each to
    `metrics` (`batched` or not), then follow orders."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_serve_watchers(url, slots, health_headers, metrics, batched, pipe))
    except _Closed:
        pass
    except Exception as error:
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(error).__name__}: {error}"))


@dataclass
class Collected:
    """Every process's receipts, merged."""

    receipts: list[Receipt]
    latest: list[int]


class WatcherProcesses:
    """The watchers spread over `processes` processes, client i in process i % processes, each
    from its own loopback address (`addresses` of them) through nginx.

    Orders: `connect()` (and learn the role behind each address), `start()` the measurement,
    `drain(final_value)`, `collect()` the receipts and each process's CPU time, loop lag and
    update frames and values received (`frames`, `values`: from `start()` to the drain's end).
    `metrics` and `batched` are `Watchers`'.
    """

    def __init__(
        self,
        url: str,
        tokens: list[str],
        processes: int,
        addresses: int,
        health_headers: dict[str, str],
        metrics: Sequence[str] = (METRIC,),
        batched: bool = False,
    ) -> None:
        self.count = len(tokens)
        self.address_of = [loopback_address(index, addresses) for index in range(len(tokens))]
        slots = list(zip(range(len(tokens)), tokens, self.address_of, strict=True))
        self._workers = WorkerProcesses(
            watcher_process,
            [
                (url, slots[number::processes], health_headers, tuple(metrics), batched)
                for number in range(processes)
            ],
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
        self.frames = 0
        self.values = 0

    def __enter__(self) -> WatcherProcesses:
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
            self.frames += result["frames"]
            self.values += result["values"]
        receipts.sort(key=lambda receipt: receipt.received)
        return Collected(receipts, latest)
