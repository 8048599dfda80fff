"""Soak: a deployment under the hospital simulator, with random crashes, checked against SQL.

    .venv/bin/python bench/soak.py --minutes 10 --clients 50 --instances 2 --seed 1

Everything throwaway, on free loopback ports, as `bench/latency.py --backend postgres` starts
it (its helpers and the test suite's servers): PostgreSQL with `wal_level=logical`, Redis,
`--instances` `livedash serve` processes and nginx in front (deploy/nginx.conf). The hospital
simulator writes continuously. `--clients` socket.io clients connect through nginx from many
loopback source addresses (so that nginx's address hash spreads them over the instances),
subscribe to every metric of every department and the hospital, and behave as the documented
client (docs/api.md, Recovery): each keeps a screen (the highest version per metric and
department, from updates and snapshots alike; a version-0 value replaces what is held),
remembers the last stream position, and re-subscribes with `since` on every (re)connection.
`--client offset` instead drops an update whose offset is not above the one held in the same
epoch and lets a `recovered: false` snapshot replace everything (the rules before
2026-11-24, which lost updates: kept to show it).

Faults at random (seeded) times, one server fault at a time: kill -9 Redis, kill -9 the whole
PostgreSQL server, or kill -9 one instance (the leader or not), each restarted after a few
seconds (same port, same data directory); meanwhile random clients are dropped and come back
later. At the end the simulator stops, the service is left to settle, and every client's screen
is compared with the SQL recompute of every metric (tests/oracle.py).

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import math
import multiprocessing
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import socketio

import livedash
from latency import (
    CLIENT_ADDRESSES,
    OPERATOR,
    REPO,
    STOP_SECONDS,
    Instance,
    ServerProcess,
    client_address,
    free_port,
    percentile,
    postgres_version,
    wait_for_leader,
)
from livedash.auth.tokens import issue_token
from livedash.metrics.definitions import METRIC_NAMES, METRICS, Tier
from livedash.settings import Settings
from livedash.store.migrate import upgrade
from livedash.store.models import Role
from processes import WorkerProcesses

DATABASE = "hospital"
FEED_SLOT = "soak"
ZONE = "UTC"
CLIENTS_PER_PROCESS = 100

HEALTH_SAMPLE_SECONDS = 0.25
FIRST_FAULT_AFTER = (10.0, 20.0)
FAULT_GAP_SECONDS = (15.0, 35.0)  # from the service healthy again to the next server fault
OUTAGE_SECONDS = (1.0, 8.0)  # how long a killed server stays down
HEALTHY_DEADLINE_SECONDS = 120.0
SETTLE_SECONDS = 20.0  # the simulator writes on at least this long after the last fault healed
DROP_GAP_SECONDS = (2.0, 8.0)
DROPPED_AT_ONCE = (1, 3)
DROP_SECONDS = (0.5, 20.0)
QUIET_SECONDS = 5.0  # no update of a hospital metric for this long: quiescent
QUIESCENCE_DEADLINE_SECONDS = 120.0
CONNECT_CONCURRENCY = 10
RETRY_SECONDS = 1.0
SUBSCRIBE_TIMEOUT_SECONDS = 30.0
SERVER_FAULTS = ("redis", "postgres", "instance")


# -- the clients -----------------------------------------------------------------------------


def _moment(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass
class Link:
    """One socket.io connection of a client, from its `connect` to its `disconnect`."""

    number: int
    subscribe_sent: float | None = None
    ack: tuple[str, int] | None = None
    ack_at: float | None = None
    subscribing: list[tuple[str, int]] = field(default_factory=list)
    """Positions received between sending the subscription and its answer."""
    highest: dict[str, int] = field(default_factory=dict)
    """Epoch -> the highest offset received on this connection."""
    new_epochs: set[str] = field(default_factory=set)
    """Epochs this client first saw on this connection, after its subscription was answered."""


class SoakClient:
    """A dashboard that follows docs/api.md's Recovery section, and records what it got."""

    def __init__(
        self,
        index: int,
        token: str,
        url: str,
        session: Any,
        oracle: set[str],
        *,
        trace: bool = False,
        drop_not_above: bool = False,
    ) -> None:
        self.index = index
        self.drop_not_above = drop_not_above
        """The old offset rules (--client offset); False: docs/api.md, by version alone."""
        self.trace: list[tuple[Any, ...]] | None = [] if trace else None
        """With --trace: every event, as (time, connection, kind, ...)."""
        self.token = token
        self.url = url
        self.oracle = oracle
        self._session = session
        self.sio = self._new_socket()
        self.screen: dict[tuple[str, str | None], tuple[int, Any]] = {}
        self.position: tuple[str, int] | None = None
        self.links: list[Link] = []
        self.link: Link | None = None
        self.seen: dict[str, array[int]] = {}
        """Epoch -> for each offset, the connection that first received it (0: never)."""
        self.epoch_order: list[str] = []
        self.duplicates: list[tuple[str, int, int, int]] = []
        self.received_at = array("d")
        self.produced_at = array("d")
        """For each update, snapshot and answer received: when, and when its content was made."""
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.last_oracle_update = 0.0
        self.dropping = False
        self.drops: list[list[float]] = []
        """[dropped at, reconnect ordered at, subscription answered at (0: not yet)]."""
        self.answered = asyncio.Event()
        """Set once a subscription was answered."""
        self._undrop = asyncio.Event()
        self._connecting = asyncio.Lock()
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _new_socket(self) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_attempts=0,
            reconnection_delay=0.5,
            reconnection_delay_max=5,
            randomization_factor=0.5,
            handle_sigint=False,
            http_session=self._session,
        )
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on("authenticated", self._on_authenticated)
        sio.on("auth_error", self._on_auth_error)
        sio.on("error", self._on_error)
        sio.on("connection_status", self._on_status)
        sio.on("dashboard_update", self._on_update)
        sio.on("metrics_snapshot", self._on_snapshot)
        return sio

    async def _renew(self) -> None:
        """A new socket.io client, as a page reload would (the state kept): python-socketio
        never reconnects on its own again once shutdown() aborted a reconnection."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.shutdown(), 5)
        self.link = None
        self.sio = self._new_socket()

    # -- connection ------------------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        self._spawn(self._keep())
        await self.connect()

    async def connect(self) -> None:
        """Connect through nginx, retrying until connected (or dropped on purpose)."""
        async with self._connecting:
            while not self.sio.connected and not self.dropping and not self._closing:
                try:
                    await self.sio.connect(
                        self.url,
                        auth={"token": self.token},
                        transports=["websocket"],
                        wait_timeout=10,
                    )
                except Exception as error:
                    self.counts[f"connect_failures ({type(error).__name__})"] += 1
                    await asyncio.sleep(RETRY_SECONDS * random.uniform(0.5, 1.5))

    async def _keep(self) -> None:
        """python-socketio reconnects after a lost transport, not after the server ended the
        session (e.g. the authentication timed out while the database was down): do it then.
        A subscription unanswered for SUBSCRIBE_TIMEOUT_SECONDS: start again on a new client."""
        down_since: float | None = None
        while not self._closing:
            await asyncio.sleep(RETRY_SECONDS)
            link = self.link
            sent = link.subscribe_sent if link is not None else None
            if (
                self.sio.connected
                and link is not None
                and link.ack_at is None
                and sent is not None
                and time.time() - sent > SUBSCRIBE_TIMEOUT_SECONDS
                and not self.dropping
            ):
                self.counts["subscription_unanswered"] += 1
                self._note("subscription_unanswered")
                async with self._connecting:
                    await self._renew()
                await self.connect()
                continue
            task = getattr(self.sio, "_reconnect_task", None)
            reconnecting = task is not None and not task.done()
            if self.sio.connected or self.dropping or reconnecting or self._connecting.locked():
                down_since = None
                continue
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > 2 * RETRY_SECONDS:
                self.counts["manual_reconnects"] += 1
                await self.connect()

    def _note(self, kind: str, *fields: Any) -> None:
        if self.trace is not None:
            number = self.link.number if self.link is not None else 0
            self.trace.append((time.time(), number, kind, *fields))

    def _on_connect(self) -> None:
        self.link = Link(len(self.links) + 1)
        self.links.append(self.link)
        self._note("connect")

    def _on_disconnect(self, reason: Any = None) -> None:
        self._note("disconnect", str(reason))
        self.link = None
        self.counts[f"disconnect {reason}"] += 1

    async def _on_authenticated(self, data: Any) -> None:
        self._spawn(self._subscribe(self.link))

    def _on_auth_error(self, data: Any) -> None:
        self.counts["auth_error"] += 1
        self._spawn(self._authenticate_later(self.link))

    def _on_error(self, data: Any) -> None:
        event = data.get("event") if isinstance(data, dict) else None
        self.counts[f"error {event}: {data.get('code') if isinstance(data, dict) else data}"] += 1
        if event == "authenticate":
            self._spawn(self._authenticate_later(self.link))

    def _on_status(self, data: Any) -> None:
        self.statuses[str(data.get("status"))] += 1
        self._note("status", data.get("status"), data.get("degraded"))

    async def _authenticate_later(self, link: Link | None) -> None:
        await asyncio.sleep(RETRY_SECONDS)
        if link is not None and link is self.link and self.sio.connected:
            with contextlib.suppress(Exception):
                await self.sio.emit("authenticate", {"token": self.token})

    async def _subscribe(self, link: Link | None) -> None:
        if link is None or link is not self.link:
            return
        payload: dict[str, Any] = {"metrics": list(METRIC_NAMES)}
        if self.position is not None:
            payload["since"] = {"epoch": self.position[0], "offset": self.position[1]}
        link.subscribe_sent = time.time()
        link.subscribing = []
        self._note("subscribe", payload.get("since"))
        try:
            await self.sio.emit(
                "subscribe_metrics", payload, callback=lambda answer: self._on_ack(link, answer)
            )
        except Exception:
            self.counts["subscribe_send_failed"] += 1

    def _on_ack(self, link: Link, answer: Any) -> None:
        now = time.time()
        if link is not self.link:
            return
        self._note(
            "answer",
            answer
            if not isinstance(answer, dict)
            else {k: v for k, v in answer.items() if k not in ("metrics", "departments")},
        )
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            self.counts["subscribe_refused"] += 1
            self._spawn(self._subscribe_later(link))
            return
        position = answer.get("position")
        recovered = answer.get("recovered")
        link.ack_at = now
        if position is not None:
            link.ack = (str(position["epoch"]), int(position["offset"]))
            self._remember(link.ack)
        if recovered is True:
            self.counts["recovered_replayed"] += 1
            if link.ack is not None:
                epoch, top = link.ack
                self.counts["replayed_updates"] += sum(
                    1 for e, o in link.subscribing if e == epoch and o <= top
                )
                overtaking = sum(1 for e, o in link.subscribing if e == epoch and o > top)
                self.counts["live_before_answer"] += overtaking
                self.counts["replays_overtaken"] += 1 if overtaking else 0
        elif recovered is False:
            self.counts["recovered_snapshot"] += 1
        else:
            self.counts["first_subscriptions"] += 1
        link.subscribing = []
        self.answered.set()
        assert link.subscribe_sent is not None
        self._produced(now, link.subscribe_sent)
        if self.drops and self.drops[-1][2] == 0.0 and not self.dropping:
            self.drops[-1][2] = now

    async def _subscribe_later(self, link: Link) -> None:
        await asyncio.sleep(RETRY_SECONDS)
        await self._subscribe(link)

    async def drop(self, seconds: float) -> None:
        """Disconnect now; reconnect (with `since`) after `seconds` or when told."""
        if self.dropping or self._closing:
            self.counts["drops_skipped"] += 1
            return
        self.dropping = True
        dropped = time.time()
        self._note("drop", seconds)
        async with self._connecting:
            await self._renew()  # disconnects, or stops reconnecting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._undrop.wait(), seconds)
        self._undrop.clear()
        self.dropping = False
        self.drops.append([dropped, time.time(), 0.0])
        await self.connect()

    def end_drop(self) -> None:
        if self.dropping:
            self._undrop.set()

    async def close(self) -> None:
        self._closing = True
        self._undrop.set()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.shutdown(), 5)

    # -- what arrives ----------------------------------------------------------------------

    def _produced(self, received: float, produced: float) -> None:
        self.received_at.append(received)
        self.produced_at.append(produced)

    def _remember(self, position: tuple[str, int]) -> None:
        held = self.position
        if held is None or held[0] != position[0] or position[1] > held[1]:
            self.position = position

    def _mark_seen(self, epoch: str, offset: int, link: Link | None) -> None:
        marks = self.seen.get(epoch)
        if marks is None:
            marks = self.seen[epoch] = array("I")
            self.epoch_order.append(epoch)
            if link is not None and link.ack is not None:
                link.new_epochs.add(epoch)
        if offset >= len(marks):
            marks.extend([0] * (offset + 1 - len(marks) + 1024))
        number = link.number if link is not None else 0
        if marks[offset]:
            self.duplicates.append((epoch, offset, marks[offset], number))
        else:
            marks[offset] = number or 2**31

    def _on_update(self, data: Any) -> None:
        now = time.time()
        self.counts["updates"] += 1
        link = self.link
        key = (data["metric"], data["department"])
        self._note("update", data.get("position"), key[0], key[1], data["version"], data["value"])
        if key[0] in self.oracle:
            self.last_oracle_update = now
        position = data.get("position")
        if position is not None:
            epoch, offset = str(position["epoch"]), int(position["offset"])
            self._mark_seen(epoch, offset, link)
            if link is not None:
                link.highest[epoch] = max(link.highest.get(epoch, 0), offset)
                if link.ack is None:
                    link.subscribing.append((epoch, offset))
            held = self.position
            if held is not None and held[0] == epoch and offset <= held[1]:
                if link is not None and link.subscribe_sent is not None and link.ack_at is None:
                    # Before the answer: a replayed update that a live one (above the
                    # answer's position) overtook.
                    self.counts["not_above_before_answer"] += 1
                if self.drop_not_above:
                    # The old rule: not above the last offset held in the epoch.
                    self.counts["dropped_not_above"] += 1
                    return
            self._remember((epoch, offset))
        else:
            self.counts["updates_without_position"] += 1
        self._keep_newest([data])
        self._produced(now, _moment(data["timestamp"]))

    def _keep_newest(self, values: list[dict[str, Any]]) -> None:
        """docs/api.md, Recovery 5 and 6: the highest version; version 0 replaces."""
        for value in values:
            key = (value["metric"], value["department"])
            shown = self.screen.get(key)
            if shown is None or value["version"] == 0 or value["version"] > shown[0]:
                self.screen[key] = (int(value["version"]), value["value"])

    def _on_snapshot(self, data: Any) -> None:
        now = time.time()
        link = self.link
        recovered = data.get("recovered")
        if link is not None and link.subscribe_sent is not None and link.ack is None:
            kind = "snapshot_subscription"
        else:
            kind = "snapshot_unsolicited"  # a resync after the service was healthy again
        self.counts[kind] += 1
        self._note(
            kind,
            data.get("position"),
            recovered,
            data.get("server_time"),
            [(v["metric"], v["department"], v["version"], v["value"]) for v in data["values"]],
        )
        if self.drop_not_above and (recovered is False or kind == "snapshot_subscription"):
            self.screen = {
                (value["metric"], value["department"]): (int(value["version"]), value["value"])
                for value in data["values"]
            }
        else:
            self._keep_newest(data["values"])
        position = data.get("position")
        if position is not None:
            self._remember((str(position["epoch"]), int(position["offset"])))
        self._produced(now, _moment(data["server_time"]))

    # -- the end ---------------------------------------------------------------------------

    def gaps(self) -> int:
        """Offsets a live connection should have received and this client never did.

        Every update the service sends is in one of this client's subscriptions (all metrics,
        every department and the hospital), so on one connection, after its subscription's
        answer at P, the offsets of P's epoch run P+1, P+2, ... with no hole; an epoch that
        began during the connection runs from 1."""
        missing = 0
        for link in self.links:
            for epoch, highest in link.highest.items():
                if link.ack is not None and link.ack[0] == epoch:
                    start = link.ack[1] + 1
                elif epoch in link.new_epochs:
                    start = 1
                else:
                    continue
                marks = self.seen[epoch]
                missing += sum(1 for offset in range(start, highest + 1) if not marks[offset])
        return missing

    def duplicate_kinds(self) -> tuple[int, int]:
        """(inside the acknowledgement window, outside it).

        Inside: both copies on one connection, at or below the position its subscription was
        answered with, in that epoch (docs/api.md, Recovery 5: a replayed update may also
        arrive live around the answer)."""
        inside = outside = 0
        by_number = {link.number: link for link in self.links}
        for epoch, offset, first, second in self.duplicates:
            link = by_number.get(second)
            if (
                first == second
                and link is not None
                and link.ack is not None
                and link.ack[0] == epoch
                and offset <= link.ack[1]
            ):
                inside += 1
            else:
                outside += 1
        return inside, outside

    def recovery(self, faults: list[tuple[float, float | None]]) -> list[float | str | None]:
        """For each (fault at, healthy at): seconds from the fault until this client received,
        after the service was healthy again, something made after the fault. "dropped" if it
        was dropped on purpose meanwhile; None if that never happened."""
        answers: list[float | str | None] = []
        for fault_at, healthy_at in faults:
            if healthy_at is None:
                answers.append(None)
                continue
            start = bisect.bisect_left(self.received_at, healthy_at)
            found: float | None = None
            for position in range(start, len(self.received_at)):
                if self.produced_at[position] >= fault_at:
                    found = self.received_at[position]
                    break
            until = found if found is not None else math.inf
            dropped = any(d0 <= until and (d2 or math.inf) >= fault_at for d0, _, d2 in self.drops)
            if self.dropping and until == math.inf:
                dropped = True
            answers.append("dropped" if dropped else (None if found is None else found - fault_at))
        return answers

    def state(self) -> str:
        """Where this client stands: subscribed, waiting for an answer, or not connected."""
        link = self.link
        if not self.sio.connected or link is None:
            return "not connected"
        if link.subscribe_sent is None:
            return "connected, not authenticated"
        if link.ack_at is None:
            return (
                f"waiting {time.time() - link.subscribe_sent:.0f} s for its subscription's answer"
            )
        return "subscribed"

    def result(self, faults: list[tuple[float, float | None]]) -> dict[str, Any]:
        inside, outside = self.duplicate_kinds()
        return {
            "index": self.index,
            "screen": {f"{m}|{d if d is not None else ''}": v for (m, d), v in self.screen.items()},
            "counts": dict(self.counts),
            "statuses": dict(self.statuses),
            "connections": len(self.links),
            "duplicates_inside": inside,
            "duplicates_outside": outside,
            "duplicate_samples": self.duplicates[:5],
            "gaps": self.gaps(),
            "recovery": self.recovery(faults),
            "drops": [d for d in self.drops if d[2]],
            "position": self.position,
            "state": self.state(),
            "last_received": self.received_at[-1] if self.received_at else 0.0,
        }


async def _serve_clients(
    url: str,
    slots: list[tuple[int, str, str]],
    pipe: Connection,
    trace: str | None,
    drop_not_above: bool,
) -> None:
    import aiohttp

    oracle = set(ORACLE_METRICS)
    sessions: dict[str, aiohttp.ClientSession] = {}
    for _, _, address in slots:
        if address not in sessions:
            connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0)
            sessions[address] = aiohttp.ClientSession(connector=connector)
    clients = {
        index: SoakClient(
            index,
            token,
            url,
            sessions[address],
            oracle,
            trace=trace is not None,
            drop_not_above=drop_not_above,
        )
        for index, token, address in slots
    }
    tasks: set[asyncio.Task[None]] = set()
    try:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def start(client: SoakClient) -> None:
            async with gate:
                await client.start()

        await asyncio.gather(*(start(client) for client in clients.values()))
        await asyncio.wait_for(
            asyncio.gather(*(client.answered.wait() for client in clients.values())), 60
        )
        pipe.send(("connected",))
        while True:
            try:
                message: tuple[Any, ...] = await asyncio.to_thread(pipe.recv)
            except EOFError:
                break
            order = message[0]
            if order == "drop":
                task = asyncio.create_task(clients[message[1]].drop(message[2]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif order == "reconnect_all":
                for client in clients.values():
                    client.end_drop()
            elif order == "status":
                pipe.send(
                    (
                        "status",
                        {
                            "subscribed": sum(
                                1
                                for c in clients.values()
                                if c.sio.connected and c.link is not None and c.link.ack_at
                            ),
                            "last_oracle_update": max(
                                c.last_oracle_update for c in clients.values()
                            ),
                            "updates": sum(c.counts["updates"] for c in clients.values()),
                        },
                    )
                )
            elif order == "finish":
                if trace is not None:
                    await asyncio.to_thread(write_traces, Path(trace), list(clients.values()))
                pipe.send(("finished", [client.result(message[1]) for client in clients.values()]))
            elif order == "close":
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(client.close() for client in clients.values()))
        for session in sessions.values():
            await session.close()


def write_traces(directory: Path, clients: list[SoakClient]) -> None:
    import json

    directory.mkdir(parents=True, exist_ok=True)
    for client in clients:
        with (directory / f"client-{client.index}.jsonl").open("w") as out:
            for event in client.trace or []:
                out.write(json.dumps(event, default=str) + "\n")


def client_process(
    url: str,
    slots: list[tuple[int, str, str]],
    trace: str | None,
    drop_not_above: bool,
    pipe: Connection,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_serve_clients(url, slots, pipe, trace, drop_not_above))
    except Exception as error:
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(error).__name__}: {error}"))


class ClientProcesses:
    """The clients, spread over processes; client i in process i % processes."""

    def __init__(
        self,
        url: str,
        tokens: list[str],
        processes: int,
        trace: Path | None = None,
        *,
        drop_not_above: bool = False,
    ) -> None:
        addresses = min(len(tokens), CLIENT_ADDRESSES)
        self.address_of = [client_address(index, addresses) for index in range(len(tokens))]
        self.processes = processes
        slots = list(zip(range(len(tokens)), tokens, self.address_of, strict=True))
        traced = str(trace) if trace is not None else None
        self._workers = WorkerProcesses(
            client_process,
            [(url, slots[n::processes], traced, drop_not_above) for n in range(processes)],
            "soak-clients",
            STOP_SECONDS + 5,
            label="client process",
        )
        self._lock = asyncio.Lock()

    def __enter__(self) -> ClientProcesses:
        self._workers.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._workers.__exit__(*exc_info)

    async def connected(self) -> None:
        await self._workers.receive_all("connected")

    def send(self, index: int, *message: Any) -> None:
        self._workers.send(index % self.processes, message)

    def send_all(self, *message: Any) -> None:
        self._workers.send_all(message)

    async def status(self) -> dict[str, float]:
        async with self._lock:
            self.send_all("status")
            answers = await self._workers.receive_all("status")
        return {
            "subscribed": sum(a[1]["subscribed"] for a in answers),
            "last_oracle_update": max(a[1]["last_oracle_update"] for a in answers),
            "updates": sum(a[1]["updates"] for a in answers),
        }

    async def finish(self, faults: list[tuple[float, float | None]]) -> list[dict[str, Any]]:
        async with self._lock:
            self.send_all("finish", faults)
            answers = await self._workers.receive_all("finished")
        results = [result for answer in answers for result in answer[1]]
        return sorted(results, key=lambda result: result["index"])


# -- the simulator ---------------------------------------------------------------------------


def simulate(url: str, seed: int, speed: float, stop: EventType, results: Connection) -> None:
    """The hospital simulator in its own process, until `stop`; restarted if it fails."""
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
                    url, seed=seed + attempt, zone=ZoneInfo(ZONE)
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
    def __init__(self, url: str, seed: int, speed: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=simulate, args=(url, seed, speed, self._stop, sender), name="soak-simulator"
        )
        self._process.daemon = True
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


# -- servers that crash ----------------------------------------------------------------------


class CrashableServer(ServerProcess):
    """latency.py's `livedash serve` process, which can also be killed -9 and started again
    on the same port (its log of each life kept apart)."""

    lives = 1

    def kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        with contextlib.suppress(OSError):
            self.log_path.rename(self.log_path.with_suffix(f".{self.lives}.log"))
        self.lives += 1
        self.__enter__()


def kill_postgres(postgres: Any) -> None:
    """kill -9 every process of the server at once (postmaster and backends), as a crash."""
    process = postgres.process
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    postgres.process = None


def start_postgres(postgres: Any) -> None:
    """Start the server again on its data directory (crash recovery runs first)."""
    for attempt in range(10):
        try:
            postgres.start()
            return
        except RuntimeError:
            # An orphan still attached to the old shared memory makes the start fail.
            if postgres.process is not None:
                with contextlib.suppress(OSError):
                    postgres.process.kill()
                    postgres.process.wait()
                postgres.process = None
            if attempt == 9:
                raise
            time.sleep(1)


# -- health ----------------------------------------------------------------------------------


@dataclass(slots=True)
class HealthSample:
    at: float
    healthy: bool
    roles: list[str]
    feeds: int = 0
    """Instances whose /health shows a running feed (feed_position): more than one is two
    readers of one slot."""


class HealthMonitor:
    """Every instance's /health, a few times a second: is the service healthy?

    Healthy: every instance answers 200, and exactly one is the leader with a running feed."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.samples: list[HealthSample] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while True:
                at = time.time()
                answers = await asyncio.gather(
                    *(self._one(session, i.server) for i in self.instances)
                )
                leaders = [body for code, body in answers if body.get("role") == "leader"]
                healthy = (
                    all(code == 200 for code, _ in answers)
                    and len(leaders) == 1
                    and "feed_position" in leaders[0]
                )
                roles = [str(body.get("role", "down")) for _, body in answers]
                feeds = sum(1 for _, body in answers if "feed_position" in body)
                self.samples.append(HealthSample(at, healthy, roles, feeds))
                await asyncio.sleep(HEALTH_SAMPLE_SECONDS)

    @staticmethod
    async def _one(session: Any, server: ServerProcess) -> tuple[int, dict[str, Any]]:
        try:
            async with session.get(
                f"{server.url}/health", headers=server.health_headers
            ) as response:
                return response.status, dict(await response.json())
        except Exception:
            return 0, {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def roles(self) -> list[str]:
        return self.samples[-1].roles if self.samples else []

    async def healthy_after(self, moment: float, deadline: float) -> float | None:
        """The time of the first healthy sample taken after `moment`; None past `deadline`."""
        checked = 0
        while time.time() < deadline:
            for sample in self.samples[checked:]:
                if sample.at >= moment and sample.healthy:
                    return sample.at
            checked = len(self.samples)
            await asyncio.sleep(HEALTH_SAMPLE_SECONDS / 2)
        return None


# -- the soak --------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    target: str
    at: float
    restarted: float = 0.0
    healthy: float | None = None


@dataclass
class Soak:
    args: argparse.Namespace
    postgres: Any
    redis: Any
    instances: list[Instance]
    clients: ClientProcesses
    simulator: SimulatorProcess
    health: HealthMonitor
    started: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    drops: list[tuple[float, int, float]] = field(default_factory=list)
    stopping: bool = False
    ended: float = 0.0
    quiet: float | None = None
    simulator_figures: dict[str, Any] = field(default_factory=dict)
    second_reader: Counter[str] = field(default_factory=Counter)

    async def run(self) -> None:
        self.health.start()
        self.started = time.time()
        end = self.started + self.args.minutes * 60
        faults = asyncio.create_task(self._faults(end))
        drops = asyncio.create_task(self._drops())
        try:
            await asyncio.sleep(max(end - time.time(), 0))
            self.stopping = True
            await faults  # the fault under way is repaired first
            healed = max((f.healthy or 0.0 for f in self.faults), default=0.0)
            # Recovery is measured by what the clients receive next: keep writing a while.
            await asyncio.sleep(max(healed + SETTLE_SECONDS - time.time(), 0))
            drops.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drops
            self.ended = time.time()
            self.clients.send_all("reconnect_all")
            self.simulator_figures = await asyncio.to_thread(self.simulator.stop)
            self.quiet = await self._quiesce()
        finally:
            faults.cancel()
            drops.cancel()
            await self.health.stop()

    def _log(self, text: str) -> None:
        print(f"  t+{time.time() - self.started:6.1f} s  {text}", flush=True)

    async def _faults(self, end: float) -> None:
        rng = random.Random(f"{self.args.seed}-faults")
        wait = rng.uniform(*FIRST_FAULT_AFTER)
        while time.time() + wait < end:
            await asyncio.sleep(wait)
            kind = rng.choice(self.args.faults)
            outage = rng.uniform(*OUTAGE_SECONDS)
            number = rng.randrange(len(self.instances))
            fault = await self._inject(kind, number, outage)
            self.faults.append(fault)
            deadline = time.time() + HEALTHY_DEADLINE_SECONDS
            fault.healthy = await self.health.healthy_after(fault.restarted, deadline)
            self._log(
                "healthy again "
                + (f"{fault.healthy - fault.at:.1f} s after the kill" if fault.healthy else "NEVER")
            )
            if fault.healthy is None:
                return
            wait = rng.uniform(*FAULT_GAP_SECONDS)

    async def _inject(self, kind: str, number: int, outage: float) -> Fault:
        if kind == "redis":
            fault = Fault("kill -9 Redis", "", time.time())
            self._log(f"{fault.kind}")
            await asyncio.to_thread(self.redis.kill)
            await asyncio.sleep(outage)
            await asyncio.to_thread(self.redis.start)
        elif kind == "postgres":
            fault = Fault("kill -9 PostgreSQL", "(every process)", time.time())
            self._log(f"{fault.kind} {fault.target}")
            await asyncio.to_thread(kill_postgres, self.postgres)
            await asyncio.sleep(outage)
            await asyncio.to_thread(start_postgres, self.postgres)
        else:
            instance = self.instances[number]
            roles = self.health.roles()
            role = roles[number] if number < len(roles) else "?"
            fault = Fault("kill -9 instance", f"{instance.number} ({role})", time.time())
            self._log(f"{fault.kind} {fault.target}")
            server = instance.server
            assert isinstance(server, CrashableServer)
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(outage)
            await asyncio.to_thread(server.restart)
        fault.restarted = time.time()
        self._log(f"restarted after {fault.restarted - fault.at:.1f} s")
        return fault

    async def _drops(self) -> None:
        rng = random.Random(f"{self.args.seed}-drops")
        while True:
            await asyncio.sleep(rng.uniform(*DROP_GAP_SECONDS))
            for index in rng.sample(range(self.args.clients), rng.randint(*DROPPED_AT_ONCE)):
                seconds = rng.uniform(*DROP_SECONDS)
                self.clients.send(index, "drop", index, seconds)
                self.drops.append((time.time(), index, seconds))

    async def _quiesce(self) -> float | None:
        """Wait until the service is healthy, every client subscribed, and no hospital metric
        changed for QUIET_SECONDS; the seconds it took (None: not within the deadline)."""
        started = time.time()
        deadline = started + QUIESCENCE_DEADLINE_SECONDS
        while time.time() < deadline:
            await asyncio.sleep(0.5)
            healthy = bool(self.health.samples) and self.health.samples[-1].healthy
            status = await self.clients.status()
            quiet = time.time() - status["last_oracle_update"] >= QUIET_SECONDS
            if healthy and status["subscribed"] == self.args.clients and quiet:
                return time.time() - started
        return None


# -- the truth -------------------------------------------------------------------------------


ORACLE_METRICS: tuple[str, ...] = tuple(
    name
    for name in METRIC_NAMES
    if METRICS[name].tier is not Tier.HISTORICAL and METRICS[name].families != ("system",)
)
"""The metrics tests/oracle.py recomputes: every one about the hospital's rows (not the
service's own health, nor the growth and trend figures read from the roll-ups)."""


def _comparable(value: Any) -> Any:
    return Decimal(value) if isinstance(value, str) else value


def differences(
    screen: dict[str, Any], truth: dict[tuple[str, str | None], Any]
) -> list[tuple[str, str | None, Any, Any]]:
    """(metric, department, shown or None, SQL) for every key where the screen is wrong."""
    wrong = []
    for (metric, department), expected in truth.items():
        shown = screen.get(f"{metric}|{department or ''}")
        value = None if shown is None else _comparable(shown[1])
        if value != expected:
            wrong.append((metric, department, shown, expected))
    return wrong


async def fresh_snapshot(url: str, token: str) -> dict[str, Any]:
    """A new client's snapshot of every metric straight from one instance (no nginx)."""
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    authenticated = asyncio.Event()
    client.on("authenticated", lambda data: authenticated.set())

    def on_snapshot(data: Any) -> None:
        if not got.done():
            got.set_result(data)

    client.on("metrics_snapshot", on_snapshot)
    try:
        await client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
        await asyncio.wait_for(authenticated.wait(), 10)
        await client.emit("subscribe_metrics", {"metrics": list(METRIC_NAMES)})
        snapshot = await asyncio.wait_for(got, 10)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
    return {
        f"{value['metric']}|{value['department'] or ''}": (value["version"], value["value"])
        for value in snapshot["values"]
    }


SECOND_READER = ("is active for PID", "cannot advance replication slot")
"""PostgreSQL's answers when two feeds use one slot: one reads while the other holds it, or
confirms a position the other has already moved past."""


def second_reader_warnings(instances: list[Instance]) -> Counter[str]:
    """How often every life of every instance logged SECOND_READER."""
    found: Counter[str] = Counter()
    for instance in instances:
        path = instance.server.log_path
        for log in [path, *path.parent.glob(f"{path.stem}.*.log")]:
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace")
                for what in SECOND_READER:
                    found[what] += text.count(what)
    return +found


# -- figures ---------------------------------------------------------------------------------


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S")


def _seconds(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {percentile(values, 0.5):.2f} s, p95 {percentile(values, 0.95):.2f} s, "
        f"max {max(values):.2f} s ({len(values)})"
    )


def report(
    soak: Soak,
    results: list[dict[str, Any]],
    truth: dict[tuple[str, str | None], Any],
    fresh: dict[str, dict[str, Any] | str],
) -> Iterator[str]:
    args = soak.args
    sim = soak.simulator_figures
    kinds = sim.get("kinds", {})
    events, seconds = sum(kinds.values()), sim.get("seconds", 0.0)
    yield (
        f"simulator:          {events} hospital events in {seconds:.0f} s "
        f"({events / seconds if seconds else 0:.1f}/s) at speed {args.speed:g}, "
        f"{len(kinds)} kinds; restarted {sim.get('restarts', 0)} times after a failure outside "
        "a step"
    )
    yield f"faults injected:    {len(soak.faults)} server faults, {len(soak.drops)} client drops"
    for fault in soak.faults:
        healthy = (
            f"healthy {fault.healthy - fault.at:5.1f} s after the kill"
            if fault.healthy is not None
            else "NEVER healthy again"
        )
        yield (
            f"  t+{fault.at - soak.started:6.1f} s ({_clock(fault.at)} UTC)  "
            f"{fault.kind + ' ' + fault.target:40} down {fault.restarted - fault.at:4.1f} s, "
            f"{healthy}"
        )
    drop_seconds = [seconds for _, _, seconds in soak.drops]
    if soak.drops:
        yield (
            f"  client drops: {len(soak.drops)} at random times, "
            f"{len({index for _, index, _ in soak.drops})} distinct clients, "
            f"{min(drop_seconds):.1f}-{max(drop_seconds):.1f} s away "
            f"(first at t+{soak.drops[0][0] - soak.started:.1f} s, "
            f"last at t+{soak.drops[-1][0] - soak.started:.1f} s):"
        )
        listed = [f"t+{at - soak.started:.1f} #{index} {s:.1f}s" for at, index, s in soak.drops]
        for start in range(0, len(listed), 6):
            yield "    " + ", ".join(listed[start : start + 6])

    counts: Counter[str] = Counter()
    for result in results:
        counts.update(result["counts"])
    yield (
        f"updates delivered:  {counts['updates']} dashboard_update to {len(results)} clients "
        f"({counts['updates'] // max(len(results), 1)} per client); "
        f"{counts['updates_without_position']} without a position"
    )
    yield (
        f"  not above the held offset: {counts['dropped_not_above'] or 'none'} dropped "
        f"(--client {args.client}), of which "
        f"{counts['not_above_before_answer']} arrived before their subscription's answer: "
        "replayed updates that a live one above the answer's position had overtaken"
        if args.client == "offset"
        else f"  not above the held offset: {counts['not_above_before_answer']} arrived before "
        "their subscription's answer (kept by version, docs/api.md Recovery 5)"
    )

    wrong_by_client = {r["index"]: differences(r["screen"], truth) for r in results}
    affected = {index: wrong for index, wrong in wrong_by_client.items() if wrong}
    keys = {(m, d) for wrong in affected.values() for m, d, _, _ in wrong}
    yield (
        f"updates lost:       {sum(len(w) for w in affected.values())} (client, key) pairs "
        f"differ from SQL, {len(keys)} distinct keys, {len(affected)} of {len(results)} clients "
        f"affected (of {len(truth)} keys compared per client)"
    )
    for index, wrong in list(affected.items())[:8]:
        sample = "; ".join(
            f"{m}/{d or 'hospital'} shows {s[1] if s else None!r} (v{s[0] if s else '-'}) SQL {e}"
            for m, d, s, e in wrong[:3]
        )
        yield f"  client {index}: {len(wrong)} keys: {sample}"
    for name, snapshot in fresh.items():
        if isinstance(snapshot, str):
            yield f"  fresh snapshot from {name}: {snapshot}"
            continue
        wrong = differences(snapshot, truth)
        yield (
            f"  fresh snapshot from {name}: "
            + (
                "equals SQL"
                if not wrong
                else f"{len(wrong)} keys differ: "
                + "; ".join(f"{m}/{d or 'hospital'} {s[1] if s else None!r} SQL {e}"
                            for m, d, s, e in wrong[:3])
            )
        )  # fmt: skip

    inside = sum(r["duplicates_inside"] for r in results)
    outside = sum(r["duplicates_outside"] for r in results)
    dup_clients = sum(1 for r in results if r["duplicates_outside"])
    yield (
        f"duplicates:         {outside} outside the acknowledgement window ({dup_clients} "
        f"clients); {inside} inside it (a replayed update also arriving live, at or below the "
        "answer's position: documented, dropped by Recovery 5)"
    )
    for result in results:
        if result["duplicates_outside"]:
            yield f"  client {result['index']}: e.g. {result['duplicate_samples'][:3]}"
            break
    gaps = [r["gaps"] for r in results]
    yield (
        f"stream gaps:        {sum(gaps)} offsets never received although sent while the client "
        f"was connected and subscribed ({sum(1 for g in gaps if g)} clients)"
    )

    connections = sum(r["connections"] for r in results)
    yield (
        f"recoveries:         {connections - len(results)} reconnections; subscriptions with "
        f"`since`: {counts['recovered_replayed']} replayed ({counts['replayed_updates']} "
        f"updates), {counts['recovered_snapshot']} snapshot (recovered: false); "
        f"{counts['snapshot_unsolicited']} resync snapshots sent by the service once healthy "
        "again"
    )
    yield (
        f"  replays overtaken: {counts['replays_overtaken']} of the replayed subscriptions "
        f"received {counts['live_before_answer']} live updates above the answer's position "
        "before the answer, interleaved with the replay"
    )
    refusals = {
        k: v
        for k, v in counts.items()
        if k.startswith(("error", "auth_error", "subscribe_refused", "connect_failures", "manual"))
    }
    if refusals:
        yield "  on the way:       " + ", ".join(f"{k} {v}" for k, v in sorted(refusals.items()))

    yield (
        "recovery time:      from the kill until every client has, after the service was "
        "healthy again (every"
    )
    yield (
        "                    /health 200, one leader with a running feed), received something "
        "made after the kill:"
    )
    yield (
        "                    an update published after it, a snapshot taken after it, or the "
        "answer to a subscription"
    )
    yield (
        "                    sent after it. Clients dropped on purpose meanwhile are left out "
        "of that fault."
    )
    worst: dict[str, float] = {}
    for number, fault in enumerate(soak.faults):
        times = [r["recovery"][number] for r in results]
        measured = [t for t in times if isinstance(t, float)]
        never = sum(1 for t in times if t is None)
        dropped = sum(1 for t in times if t == "dropped")
        slowest = max(
            (r for r in results if isinstance(r["recovery"][number], float)),
            key=lambda r: r["recovery"][number],
            default=None,
        )
        line = f"  t+{fault.at - soak.started:6.1f} s  {fault.kind + ' ' + fault.target:40} "
        if fault.healthy is None:
            yield line + "service never healthy again"
            continue
        if measured:
            assert slowest is not None
            line += f"every client current after {max(measured):5.1f} s (client {slowest['index']})"
            worst[fault.kind] = max(worst.get(fault.kind, 0.0), max(measured))
        if never:
            line += f"; {never} clients NEVER current again"
        if dropped:
            line += f"; {dropped} dropped meanwhile"
        yield line
    if worst:
        kind, seconds = max(worst.items(), key=lambda item: item[1])
        yield (
            f"  worst:            {seconds:.1f} s ({kind}); by fault: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(worst.items()))
        )
    drop_recoveries = [d[2] - d[1] for r in results for d in r["drops"]]
    yield (
        "  client drops:     reconnect ordered -> subscription answered "
        + _seconds(drop_recoveries)
    )
    stuck = [r for r in results if r["state"] != "subscribed"]
    yield (
        f"clients at the end: {len(results) - len(stuck)} subscribed"
        + "".join(
            f"; client {r['index']} {r['state']} (last received "
            f"t+{r['last_received'] - soak.started:.1f} s)"
            for r in stuck
        )
    )
    samples = soak.health.samples
    split = [sample for sample in samples if sample.feeds > 1]
    yield (
        f"feed readers:       {len(split)} of {len(samples)} /health samples showed more than "
        "one instance with a running feed"
        + (
            f" (two readers of one slot: t+{split[0].at - soak.started:.1f} s to "
            f"t+{split[-1].at - soak.started:.1f} s, ~{len(split) * HEALTH_SAMPLE_SECONDS:.0f} s"
            ") -- SPLIT BRAIN"
            if split
            else ""
        )
    )
    if soak.second_reader:
        yield (
            "                    instance logs: "
            + ", ".join(f"{count} x {what!r}" for what, count in soak.second_reader.items())
            + " -- a second reader of the slot (a deposed leader's feed still running?)"
        )
    statuses: Counter[str] = Counter()
    for result in results:
        statuses.update(result["statuses"])
    yield (
        "connection_status: "
        + ", ".join(f"{name} {count}" for name, count in sorted(statuses.items()))
        + " (received by the clients)"
    )
    yield (
        f"end:                simulator stopped at t+{soak.ended - soak.started:.1f} s; "
        + (
            f"quiescent {soak.quiet:.1f} s later (service healthy, every client subscribed, no "
            f"hospital metric changed for {QUIET_SECONDS:g} s)"
            if soak.quiet is not None
            else f"NOT quiescent within {QUIESCENCE_DEADLINE_SECONDS:g} s: compared anyway"
        )
    )


# -- entry point -----------------------------------------------------------------------------


async def seed(url: str, dsn: str, clients: int, hospital_seed: int) -> None:
    import asyncpg

    from livedash.simulator import seed_hospital

    await seed_hospital(url, seed=hospital_seed, zone=ZoneInfo(ZONE))
    connection = await asyncpg.connect(dsn)
    try:
        await connection.executemany(
            "INSERT INTO users (username, role, departments, active) VALUES ($1, $2, '[]', true)",
            [
                *((f"soak-{index}", Role.SUPER_ADMIN.value) for index in range(clients)),
                (OPERATOR, Role.SUPER_ADMIN.value),
            ],
        )
    finally:
        await connection.close()


async def measure(soak: Soak, tokens: list[str], url: str) -> None:
    await soak.clients.connected()
    print(
        f"clients:            {soak.args.clients} connected through nginx and subscribed to "
        f"{len(METRIC_NAMES)} metrics x every department and the hospital",
        flush=True,
    )
    await soak.run()
    today = datetime.now(ZoneInfo(ZONE)).date()
    from tests.oracle import recompute

    truth = await recompute(url, ZoneInfo(ZONE), today)
    soak.second_reader = second_reader_warnings(soak.instances)
    truth = {key: value for key, value in truth.items() if key[0] in ORACLE_METRICS}
    fault_times = [(fault.at, fault.healthy) for fault in soak.faults]
    results = await soak.clients.finish(fault_times)
    fresh: dict[str, dict[str, Any] | str] = {}
    for instance in soak.instances:
        name = f"instance {instance.number}"
        try:
            fresh[name] = await fresh_snapshot(instance.server.url, tokens[0])
        except Exception as error:
            fresh[name] = f"failed: {type(error).__name__}: {error}"
    for line in report(soak, results, truth, fresh):
        print(line)


def run(args: argparse.Namespace, stack: contextlib.ExitStack, root: Path) -> None:
    from tests.servers import NginxServer, PostgresServer, RedisServer

    postgres = PostgresServer(root / "postgres").init()
    stack.callback(postgres.stop)
    postgres.start()
    asyncio.run(postgres.create_database(DATABASE))
    url, dsn = postgres.url(DATABASE), postgres.dsn(DATABASE)
    upgrade(url)
    asyncio.run(seed(url, dsn, args.clients, args.seed))
    redis = RedisServer(root / "redis")
    stack.callback(redis.stop)
    redis.start()

    secret = secrets.token_urlsafe(32)
    workdir = root / "instances"
    workdir.mkdir()
    settings = Settings(
        database_url=url, jwt_secret=secret, jwt_secret_file=workdir / "unused", _env_file=None
    )
    tokens = [
        issue_token(settings, f"soak-{index}", Role.SUPER_ADMIN) for index in range(args.clients)
    ]
    operator = issue_token(settings, OPERATOR, Role.SUPER_ADMIN)
    environment = {
        "LIVEDASH_DATABASE_URL": url,
        "LIVEDASH_REDIS_URL": redis.url,
        "LIVEDASH_FEED_SLOT": FEED_SLOT,
        "LIVEDASH_TIMEZONE": ZONE,
        "LIVEDASH_LOG_LEVEL": args.log_level,
    }
    instances = [
        Instance(
            CrashableServer(
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
    for instance in instances:
        stack.enter_context(instance.server)
    for instance in instances:
        instance.server.wait_healthy()
    wait_for_leader(instances)
    nginx = NginxServer(root / "nginx", upstreams=[i.server.port for i in instances])
    stack.callback(nginx.stop)
    nginx.start()

    print(f"service:            livedash from {Path(livedash.__file__).parent}", flush=True)
    print(
        f"deployment:         PostgreSQL {postgres_version(postgres)} (throwaway, "
        f"wal_level=logical) at 127.0.0.1:{postgres.port}; Redis at 127.0.0.1:{redis.port}; "
        + ", ".join(
            f"instance {i.number} at {i.server.url} ({i.role}, pid {i.server.pid})"
            for i in instances
        )
        + f"; nginx at {nginx.url}",
        flush=True,
    )
    simulator = stack.enter_context(SimulatorProcess(url, args.seed, args.speed))
    clients = stack.enter_context(
        ClientProcesses(
            nginx.url,
            tokens,
            args.client_processes,
            args.trace,
            drop_not_above=args.client == "offset",
        )
    )
    soak = Soak(args, postgres, redis, instances, clients, simulator, HealthMonitor(instances))
    print(
        f"soak:               {args.minutes:g} min, seed {args.seed}, --client {args.client}; "
        f"faults {','.join(args.faults)}, one every "
        f"{FAULT_GAP_SECONDS[0]:g}-{FAULT_GAP_SECONDS[1]:g} s after the service is healthy "
        f"again (down {OUTAGE_SECONDS[0]:g}-{OUTAGE_SECONDS[1]:g} s), "
        f"{DROPPED_AT_ONCE[0]}-{DROPPED_AT_ONCE[1]} clients dropped every "
        f"{DROP_GAP_SECONDS[0]:g}-{DROP_GAP_SECONDS[1]:g} s "
        f"(away {DROP_SECONDS[0]:g}-{DROP_SECONDS[1]:g} s)",
        flush=True,
    )
    asyncio.run(measure(soak, tokens, url))


def keep_logs(root: Path, target: Path) -> None:
    """Copy every server's log to `target` (before the temporary directory goes)."""
    target.mkdir(parents=True, exist_ok=True)
    for log in [*root.glob("instances/*.log"), root / "postgres/postgres.log",
                root / "redis/redis.log", root / "nginx/error.log"]:  # fmt: skip
        with contextlib.suppress(OSError):
            shutil.copy(log, target / log.name)
    print(f"logs kept in {target}", file=sys.stderr)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A deployment under the simulator and random crashes; screens vs SQL."
    )
    parser.add_argument("--minutes", type=float, required=True, help="how long faults go on")
    parser.add_argument("--clients", type=int, default=50, help="socket.io clients (50)")
    parser.add_argument("--instances", type=int, default=2, help="livedash instances (2)")
    parser.add_argument("--seed", type=int, default=1, help="faults, drops, hospital (1)")
    parser.add_argument(
        "--speed", type=float, default=300.0, help="simulated time per real time (300)"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        help=f"processes the clients run in (default: one per {CLIENTS_PER_PROCESS})",
    )
    parser.add_argument(
        "--client",
        choices=("docs", "offset"),
        default="docs",
        help="docs: keep the highest version per value, as docs/api.md Recovery and the page "
        "do (the default); offset: the old rules (drop an update not above the offset held, a "
        "recovered: false snapshot replaces everything)",
    )
    parser.add_argument(
        "--faults",
        default=",".join(SERVER_FAULTS),
        help="server faults to draw from, comma-separated (default: redis,postgres,instance)",
    )
    parser.add_argument("--keep", type=Path, help="copy every server's log to this directory")
    parser.add_argument(
        "--trace", type=Path, help="write every client's events to this directory (JSON lines)"
    )
    parser.add_argument(
        "--log-level", default="warning", help="the instances' LIVEDASH_LOG_LEVEL (warning)"
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.clients < 1 or args.instances < 1 or args.speed <= 0:
        parser.error("--minutes > 0, --clients >= 1, --instances >= 1, --speed > 0")
    args.faults = [kind.strip() for kind in args.faults.split(",") if kind.strip()]
    if not args.faults or not set(args.faults) <= set(SERVER_FAULTS):
        parser.error(f"--faults: some of {', '.join(SERVER_FAULTS)}")
    if args.client_processes is None:
        args.client_processes = math.ceil(args.clients / CLIENTS_PER_PROCESS)
    if not 1 <= args.client_processes <= args.clients:
        parser.error("1 <= --client-processes <= --clients")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    revision = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"tree:               {revision or '?'}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.path.insert(0, str(REPO))
    from tests.servers import new_root

    root = new_root("livedash-soak-")
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, root, True)
            if args.keep is not None:  # once every server has stopped
                stack.callback(keep_logs, root, args.keep)
            run(args, stack, root)
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
