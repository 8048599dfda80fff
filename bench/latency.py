"""Commit-to-screen latency, on the embedded default (SQLite) or a deployment (PostgreSQL).

A writer process inserts one patient per tick into one department with a plain driver, as the
hospital's own application would. The service runs as separate processes (`livedash serve`),
so neither the clients nor the writer share its event loop. N socket.io clients subscribe to
that department's `patients_total` and note when each `dashboard_update` arrives; the latency
of an update is its arrival minus the commit that produced its value.

    .venv/bin/python bench/latency.py --clients 100 --writes-per-second 50 --seconds 20
    .venv/bin/python bench/latency.py --backend postgres --instances 2 --clients 1000 \\
        --writes-per-second 200 --seconds 20

What the clients subscribe to (`--watch`): `one`, that value only (the default); `department`,
every metric of the department (`METRIC_NAMES`), as the page does for a department's screen:
one admitted patient then moves several of its values. How they take updates (`--updates`):
`each`, one `dashboard_update` per value (the default); `batched`, `updates: "batched"` in the
handshake, one `dashboard_updates` per send of the service, whose `patients_total` is recorded
as a `dashboard_update` would be (the batch's arrival for each of its values). Latency is of
`patients_total` either way; the `frames` line counts every update frame (`dashboard_update` or
`dashboard_updates`) and value the clients received, per socket and second. To compare:

    .venv/bin/python bench/latency.py --clients 1000 --writes-per-second 50 --seconds 10 \\
        --watch department --updates each    # then --updates batched

The clients (`--client-kind`): `node`, the stock npm socket.io-client, every client in one
Node process (bench/clients/watchers.js, `livedash.testing.node_watchers`; the default when
node and node_modules/socket.io-client are there, as in bench/run.py), or `python`,
python-socketio (`livedash.testing.watchers`), which costs about twice the CPU per message.

On SQLite, one server; python clients all in this process. On PostgreSQL: a throwaway cluster
(wal_level=logical), Redis, `--instances` servers and nginx in front (deploy/nginx.conf), all
on free loopback ports and all stopped at the end; the clients connect through nginx from
several loopback source addresses, so that its address hash spreads them over the instances,
and python clients run in `--client-processes` processes. `--instances 1 --via direct` leaves
nginx out of the clients' path, to tell its share of the machine apart.

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
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

import livedash
from livedash.auth.tokens import issue_token
from livedash.metrics.definitions import METRIC_NAMES
from livedash.store.models import Role
from livedash.testing.deployment import start_deployment
from livedash.testing.hospital import (
    METRIC,
    WATCHED,
    WriterProcess,
    Writes,
    add_users,
    migrated_hospital,
    seed_postgres,
    viewers,
)
from livedash.testing.node_watchers import NodeWatchers
from livedash.testing.servers import loopback_address, new_root
from livedash.testing.service import MANY_CLIENTS, ServiceProcess, begin_bench, bench_settings
from livedash.testing.stats import percentile, spread
from livedash.testing.usage import LoopLag, run_queue_seconds, tree_cpu_seconds
from livedash.testing.watchers import (
    Collected,
    WatcherProcesses,
    Watchers,
    exact_receipts,
    freshness,
)

DRAIN_SECONDS = 5.0
HERE = Path(__file__).resolve().parent
NODE_CLIENTS = HERE / "clients" / "watchers.js"
CLIENT_LIBRARY = HERE.parent / "node_modules" / "socket.io-client"

# PostgreSQL only.
FEED_SLOT = "bench"
CLIENT_ADDRESSES = 200  # loopback source addresses 127.0.0.2...: nginx pins each to an instance
# Default --client-processes (python clients): one per this many clients. An update reaches
# every client at once; one loop reading 1000 sockets stamps the last of them ~100 ms late
# (measured: p50 loop lag 59 ms with 1000 python clients in one process, 1 ms with 250).
CLIENTS_PER_PROCESS = 250
FEED_SAMPLE_SECONDS = 0.25


# -- one run ---------------------------------------------------------------------------------


def node_clients_available() -> bool:
    """As bench/run.py: node on PATH and the npm socket.io-client installed (`npm install`)."""
    return shutil.which("node") is not None and CLIENT_LIBRARY.is_dir()


def clients_label(kind: str) -> str:
    if kind == "node":
        manifest = json.loads((CLIENT_LIBRARY / "package.json").read_text())
        return f"npm socket.io-client {manifest.get('version', '?')}"
    return "python-socketio"


def watched_metrics(watch: str) -> tuple[str, ...]:
    """--watch one: the watched metric; department: every metric (a department's screen)."""
    return tuple(METRIC_NAMES) if watch == "department" else (METRIC,)


def subscription_line(run: Run) -> str:
    """The header line that says what each client subscribes to, and how it takes updates."""
    what = (
        f"every metric ({len(run.metrics)}) of {WATCHED}"
        if len(run.metrics) > 1
        else f"{METRIC} of {WATCHED}"
    )
    how = "dashboard_updates (auth updates: batched)" if run.batched else "dashboard_update each"
    return (
        f"subscription:       each client {what}, as {how}; "
        f"latency of {METRIC}/{WATCHED} only, every other value counted"
    )


@dataclass
class Run:
    clients: int
    client_kind: str = "python"
    metrics: tuple[str, ...] = (METRIC,)
    """What each client subscribes to, of the watched department (--watch)."""
    batched: bool = False
    """The clients take `dashboard_updates` (--updates batched)."""
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
    frames: int = 0
    """Update frames (`dashboard_update` + `dashboard_updates`) all clients received in the
    window, of every subscribed metric."""
    values: int = 0
    """The updates in them."""


async def measure(
    server: ServiceProcess, writer: WriterProcess, tokens: list[str], run: Run
) -> tuple[Watchers, Writes]:
    clients = Watchers(server.url, tokens, metrics=run.metrics, batched=run.batched)
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
        clients.count_from_here()
        writes = await writer.run()
        run.drain_seconds = await clients.drain(writes.final_value, DRAIN_SECONDS)
        run.frames, run.values = clients.frames, clients.values
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


async def measure_node(
    server: ServiceProcess, writer: WriterProcess, tokens: list[str], run: Run
) -> tuple[Collected, Writes]:
    """As `measure`, with the clients in one Node process (bench/clients/watchers.js)."""
    with NodeWatchers(
        server.url, tokens, NODE_CLIENTS, metrics=run.metrics, batched=run.batched
    ) as clients:
        await clients.connect()
        run.connect_seconds = clients.connect_seconds
        await asyncio.sleep(0.5)  # let the server settle after the connect storm
        run.rss_connected_kb = server.rss_kb()
        clients.start()
        run.load_before = os.getloadavg()[0]
        cpu_server, wall = server.cpu_seconds(), time.monotonic()
        writes = await writer.run()
        await clients.drain(writes.final_value, DRAIN_SECONDS)
        run.drain_seconds = clients.drain_seconds
        run.frames, run.values = clients.frames, clients.values
        run.server_cpu_seconds = server.cpu_seconds() - cpu_server
        run.window_seconds = time.monotonic() - wall
        run.load_after = os.getloadavg()[0]
        run.rss_end_kb = server.rss_kb()
        collected = await clients.collect()
        run.bench_cpu_seconds = sum(clients.cpu_seconds)
        run.lag = [sample for samples in clients.lag for sample in samples]
    return collected, writes


# -- a deployment (PostgreSQL) ---------------------------------------------------------------


@dataclass
class Instance:
    """One `livedash serve` of a deployment, and its figures."""

    server: ServiceProcess
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
    client_kind: str = "python"
    client_roles: list[str] = field(default_factory=list)
    feed: list[FeedSample] = field(default_factory=list)
    other_pids: dict[str, int] = field(default_factory=dict)
    other_cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: list[float] = field(default_factory=list)
    client_waited: list[float] = field(default_factory=list)
    client_lag: list[list[float]] = field(default_factory=list)


def _naive_utc_timestamp(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


async def sample_feed(
    server: ServiceProcess, samples: list[FeedSample], measuring_from: float
) -> None:
    """The leader's slot lag and the age of its last applied change, every few hundred ms."""
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
    headers = leader.server.health_headers
    clients: NodeWatchers | WatcherProcesses
    if cluster.client_kind == "node":
        # Each client from its own loopback address, as the python clients: nginx pins it.
        addresses = [loopback_address(i, cluster.addresses) for i in range(len(tokens))]
        clients = NodeWatchers(
            url,
            tokens,
            NODE_CLIENTS,
            local_addresses=addresses,
            health_headers=headers,
            metrics=run.metrics,
            batched=run.batched,
        )
    else:
        clients = WatcherProcesses(
            url,
            tokens,
            cluster.processes,
            cluster.addresses,
            headers,
            metrics=run.metrics,
            batched=run.batched,
        )
    with clients:
        await clients.connect()
        run.connect_seconds = clients.connect_seconds
        cluster.client_roles = [clients.roles.get(a, "?") for a in clients.address_of]
        await asyncio.sleep(0.5)  # let the servers settle after the connect storm
        for instance in instances:
            instance.rss_connected_kb = instance.server.rss_kb()
            instance.sockets = int((await asyncio.to_thread(instance.server.health))["sockets"])
        held = sum(instance.sockets for instance in instances)
        # The roles learnt through nginx from each address against the instances' own counts:
        # a client whose source address was not the one chosen would break the two apart.
        by_lookup = cluster.client_roles.count("leader")
        by_leader = sum(i.sockets for i in instances if i.role == "leader")
        print(
            "sockets (/health):  "
            + ", ".join(f"{instance.name} {instance.sockets}" for instance in instances)
            + f"; {held} of {len(tokens)} clients"
            + (" -- MISMATCH" if held != len(tokens) else "")
            + (" -- NOT SPREAD" if any(i.sockets == 0 for i in instances) else "")
            + (
                f" -- ROLES: {by_lookup} clients by their address behind the leader"
                if by_lookup != by_leader
                else ""
            ),
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
        run.frames, run.values = clients.frames, clients.values
        cluster.client_cpu = clients.cpu_seconds
        cluster.client_waited = clients.waited_seconds
        cluster.client_lag = clients.lag
        run.bench_cpu_seconds = sum(clients.cpu_seconds)
        run.lag = [sample for samples in clients.lag for sample in samples]
    return collected, writes


# -- figures ---------------------------------------------------------------------------------


def _published_at(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def delivery(run: Run, writer: Writes, clients: Watchers | Collected, rate: float) -> Iterator[str]:
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
    # The service stamps by the wall clock, the clients by the monotonic one: each span is
    # measured within one clock, and the second half is the rest of the whole.
    to_publish = {
        r.value: _published_at(r.published) - writer.commits_wall[r.value] for r in exact.values()
    }
    publish_to_client = [
        r.received - writer.commits[r.value] - to_publish[r.value] for r in exact.values()
    ]
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
    window = run.window_seconds or 1.0
    per_frame = run.values / run.frames if run.frames else 0.0
    yield (
        f"frames:             {run.frames} update frames, {run.values} values of the "
        f"{len(run.metrics)} subscribed metric{'s' if len(run.metrics) > 1 else ''} "
        f"({per_frame:.1f} per frame); per socket {run.frames / n / window:.1f} frames/s, "
        f"{run.values / n / window:.1f} values/s"
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


def report(run: Run, writer: Writes, clients: Watchers | Collected, rate: float) -> Iterator[str]:
    yield from delivery(run, writer, clients, rate)
    n = run.clients
    per_client = (run.rss_connected_kb - run.rss_idle_kb) / n if n else 0.0
    yield (
        f"server RSS:         {run.rss_idle_kb} KB idle, {run.rss_connected_kb} KB with "
        f"{n} clients ({per_client:.1f} KB per client), {run.rss_end_kb} KB at the end"
    )
    window = run.window_seconds or 1.0
    where = "one Node process" if run.client_kind == "node" else "this process"
    yield (
        f"CPU (of one core):  server {100 * run.server_cpu_seconds / window:.0f}%, "
        f"bench clients {100 * run.bench_cpu_seconds / window:.0f}% ({where}) "
        f"over {window:.1f} s"
    )
    yield f"bench loop lag (ms) {spread(run.lag)}  ({where})"
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
        + f"; bench clients {share(run.bench_cpu_seconds)} in {cluster.processes} "
        + ("Node " if cluster.client_kind == "node" else "")
        + ("processes (" if cluster.processes > 1 else "process (")
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
        "--via",
        choices=("nginx", "direct"),
        help="postgres: how the clients reach the instances: nginx (default), or direct to "
        "the one instance of --instances 1, so that the proxy's share of the machine can be "
        "told apart",
    )
    parser.add_argument(
        "--client-kind",
        choices=("node", "python"),
        help="node: npm socket.io-client in one Node process (the default when node and "
        "node_modules/socket.io-client are there); python: python-socketio (in this process "
        "on SQLite, in --client-processes processes on PostgreSQL)",
    )
    parser.add_argument(
        "--watch",
        choices=("one", "department"),
        default="one",
        help=f"what each client subscribes to: one, {METRIC} of {WATCHED} (default); "
        f"department, every metric of {WATCHED}, as a department's screen. Latency is of "
        f"{METRIC} either way",
    )
    parser.add_argument(
        "--updates",
        choices=("each", "batched"),
        default="each",
        help='each: one dashboard_update per value (default); batched: updates: "batched" '
        "in the handshake, one dashboard_updates per send of the service",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        help=f"postgres, python clients: processes the clients run in (default: one per "
        f"{CLIENTS_PER_PROCESS} clients)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.writes_per_second <= 0 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--clients >= 1, --writes-per-second > 0, --seconds > 0, --warmup >= 0")
    if args.client_kind is None:
        args.client_kind = "node" if node_clients_available() else "python"
    elif args.client_kind == "node" and not node_clients_available():
        parser.error(f"--client-kind node needs node on PATH and {CLIENT_LIBRARY} (npm install)")
    if args.client_kind == "node" and args.client_processes is not None:
        parser.error(
            "--client-processes is for python clients: add --client-kind python "
            "(node clients run in one process)"
        )
    if args.backend == "sqlite":
        if args.instances is not None or args.client_processes is not None or args.via:
            parser.error("--instances, --via and --client-processes are for --backend postgres")
    else:
        if args.db is not None or args.port is not None:
            parser.error("--db and --port are for --backend sqlite")
        args.instances = 2 if args.instances is None else args.instances
        if args.instances < 1:
            parser.error("--instances >= 1")
        args.via = args.via or "nginx"
        if args.via == "direct" and args.instances != 1:
            parser.error("--via direct is for --instances 1: nginx spreads clients over several")
        if args.client_kind == "node":
            args.client_processes = 1
        elif args.client_processes is None:
            wanted = math.ceil(args.clients / CLIENTS_PER_PROCESS)
            args.client_processes = max(1, min(wanted, args.clients))
        if not 1 <= args.client_processes <= args.clients:
            parser.error("1 <= --client-processes <= --clients")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    begin_bench()
    if args.backend == "postgres":
        return main_postgres(args)
    with tempfile.TemporaryDirectory(prefix="livedash-bench-") as temp:
        workdir = Path(temp)
        db: Path = (args.db or workdir / "hospital.db").absolute()
        url, department_id = migrated_hospital(db)
        settings = bench_settings(url, workdir)
        secret = settings.signing_key()
        add_users(db, viewers(args.clients))  # the users the tokens speak for
        tokens = [
            issue_token(settings, f"bench-{index}", Role.VIEWER, [WATCHED])
            for index in range(args.clients)
        ]
        run = Run(
            args.clients,
            client_kind=args.client_kind,
            metrics=watched_metrics(args.watch),
            batched=args.updates == "batched",
        )
        server = ServiceProcess(workdir, secret, db=db, port=args.port, env=MANY_CLIENTS)
        print(
            f"database:           SQLite (WAL) at {db}; writer inserts into {WATCHED}, "
            f"clients watch {METRIC}/{WATCHED}",
            flush=True,
        )
        print(
            f"client library:     {clients_label(args.client_kind)}, "
            + ("in one Node process" if args.client_kind == "node" else "in this process"),
            flush=True,
        )
        print(subscription_line(run), flush=True)
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
                clients: Watchers | Collected
                if args.client_kind == "node":
                    clients, writes = asyncio.run(measure_node(server, writer, tokens, run))
                else:
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
    deployment = start_deployment(
        stack,
        root,
        instances=args.instances,
        slot=FEED_SLOT,
        seed=lambda url, dsn: seed_postgres(dsn),
        users=viewers(args.clients),
    )
    settings, postgres, redis, nginx = (
        deployment.settings,
        deployment.postgres,
        deployment.redis,
        deployment.nginx,
    )
    tokens = [
        issue_token(settings, f"bench-{index}", Role.VIEWER, [WATCHED])
        for index in range(args.clients)
    ]
    instances += [
        Instance(server, number, role=role)
        for number, (server, role) in enumerate(
            zip(deployment.instances, deployment.roles, strict=True), 1
        )
    ]
    for instance in instances:
        instance.rss_idle_kb = instance.server.rss_kb()
    processes = args.client_processes
    addresses = min(args.clients, CLIENT_ADDRESSES)
    cluster = Cluster(instances, processes, addresses, client_kind=args.client_kind)
    run = Run(
        args.clients,
        client_kind=args.client_kind,
        health_seconds=deployment.healthy_seconds,
        metrics=watched_metrics(args.watch),
        batched=args.updates == "batched",
    )
    print(f"service:            livedash from {Path(livedash.__file__).parent}", flush=True)
    print(
        f"database:           PostgreSQL {postgres.version} (throwaway, wal_level=logical, "
        f"fsync=off) at 127.0.0.1:{postgres.port}, slot {FEED_SLOT!r}; Redis at "
        f"127.0.0.1:{redis.port}; writer (asyncpg) inserts into {WATCHED}, clients "
        f"watch {METRIC}/{WATCHED}",
        flush=True,
    )
    writer = stack.enter_context(
        WriterProcess(
            deployment.dsn,
            deployment.seeded,
            args.writes_per_second,
            args.warmup,
            args.seconds,
        )
    )
    cluster.other_pids = {**deployment.pids(), "writer": writer.pid or 0}
    print(
        "instances:          "
        + ", ".join(
            f"{i.number}: pid {i.server.pid} at {i.server.url} ({i.role})" for i in instances
        )
        + f"; one leader {deployment.elected_seconds:.2f} s after all were healthy",
        flush=True,
    )
    url = nginx.url if args.via == "nginx" else instances[0].server.url
    route = (
        f"through nginx:      {nginx.url} (deploy/nginx.conf, hash $remote_addr); "
        if args.via == "nginx"
        else f"direct:             {url}, no proxy (nginx idle); "
    )
    print(
        route
        + f"clients ({clients_label(args.client_kind)}) from {addresses} loopback addresses in "
        + ("one Node process" if args.client_kind == "node" else f"{processes} client process")
        + ("es" if processes > 1 else "")
        + (
            f" ({math.ceil(args.clients / processes)} clients per event loop at most, "
            "so that the bench's own loop does not saturate)"
            if processes > 1
            else ""
        ),
        flush=True,
    )
    print(subscription_line(run), flush=True)
    collected, writes = asyncio.run(measure_cluster(cluster, url, writer, tokens, run, args.warmup))
    return run, cluster, collected, writes


if __name__ == "__main__":
    sys.exit(main())
