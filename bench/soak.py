"""Soak: a deployment under the hospital simulator, with random crashes, checked against SQL.

    .venv/bin/python bench/soak.py --minutes 10 --clients 50 --instances 2 --seed 1

Everything throwaway, on free loopback ports (`livedash.testing.deployment`): PostgreSQL with
`wal_level=logical`, Redis, `--instances` `livedash serve` processes and nginx in front
(deploy/nginx.conf). The hospital simulator writes continuously. `--clients` screens connect
through nginx from many loopback source addresses (so that nginx's address hash spreads them
over the instances), subscribe to every metric of every department and the hospital, and are
the reference recovery client the fault tests use too (`livedash.testing.screen.Screen`,
docs/api.md, Recovery): each keeps a screen (the highest version per metric and department,
from updates and snapshots alike; a version-0 value replaces what is held), remembers the last
stream position, and re-subscribes with `since` on every (re)connection. `--client offset`
instead drops an update whose offset is not above the one held in the same epoch and lets a
`recovered: false` snapshot replace everything (the rules before 2026-11-24, which lost
updates: kept to show it).

Faults at random (seeded) times, one server fault at a time: kill -9 Redis, kill -9 the whole
PostgreSQL server, or kill -9 one instance (the leader or not), each restarted after a few
seconds (same port, same data directory); meanwhile random screens go away and come back
later. At the end the simulator stops, the service is left to settle, and every screen is
compared with the SQL recompute of every metric (`livedash.testing.oracle`).

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import livedash
from livedash.auth.tokens import issue_token
from livedash.metrics.definitions import METRIC_NAMES, METRICS, Tier
from livedash.store.models import Role
from livedash.testing.deployment import (
    HEALTH_SAMPLE_SECONDS,
    Deployment,
    HealthMonitor,
    start_deployment,
)
from livedash.testing.hospital import SimulatorProcess
from livedash.testing.oracle import Key, differences, recompute
from livedash.testing.screen import Screen
from livedash.testing.screens import ScreenProcesses
from livedash.testing.servers import new_root
from livedash.testing.service import ServiceProcess, begin_bench
from livedash.testing.stats import in_seconds

REPO = Path(__file__).resolve().parent.parent
FEED_SLOT = "soak"
ZONE = "UTC"
CLIENTS_PER_PROCESS = 100

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
SERVER_FAULTS = ("redis", "postgres", "instance")

ORACLE_METRICS: tuple[str, ...] = tuple(
    name
    for name in METRIC_NAMES
    if METRICS[name].tier is not Tier.HISTORICAL and METRICS[name].families != ("system",)
)
"""The metrics the SQL oracle recomputes: every one about the hospital's rows (not the
service's own health, nor the growth and trend figures read from the roll-ups)."""


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
    deployment: Deployment
    clients: ScreenProcesses
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
            self.clients.return_all()
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
            number = rng.randrange(len(self.deployment.instances))
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
        deployment = self.deployment
        if kind == "redis":
            fault = Fault("kill -9 Redis", "", time.time())
            self._log(f"{fault.kind}")
            await asyncio.to_thread(deployment.redis.kill)
            await asyncio.sleep(outage)
            await asyncio.to_thread(deployment.redis.start)
        elif kind == "postgres":
            fault = Fault("kill -9 PostgreSQL", "(every process)", time.time())
            self._log(f"{fault.kind} {fault.target}")
            await asyncio.to_thread(deployment.postgres.crash)
            await asyncio.sleep(outage)
            await asyncio.to_thread(deployment.postgres.recover)
        else:
            server = deployment.instances[number]
            roles = self.health.roles()
            role = roles[number] if number < len(roles) else "?"
            fault = Fault("kill -9 instance", f"{number + 1} ({role})", time.time())
            self._log(f"{fault.kind} {fault.target}")
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
                self.clients.away(index, seconds)
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
            quiet = time.time() - status["last_update"] >= QUIET_SECONDS
            if healthy and status["subscribed"] == self.args.clients and quiet:
                return time.time() - started
        return None


# -- the truth -------------------------------------------------------------------------------


async def fresh_snapshot(url: str, token: str) -> dict[Key, tuple[int, Any]]:
    """What a new screen shows of every metric, straight from one instance (no nginx)."""
    screen = Screen(url, token, metrics=METRIC_NAMES, record=False)
    try:
        await screen.open()
        return dict(screen.shown)
    finally:
        await screen.close()


SECOND_READER = ("is active for PID", "cannot advance replication slot")
"""PostgreSQL's answers when two feeds use one slot: one reads while the other holds it, or
confirms a position the other has already moved past."""


def second_reader_warnings(instances: list[ServiceProcess]) -> Counter[str]:
    """How often every life of every instance logged SECOND_READER."""
    found: Counter[str] = Counter()
    for instance in instances:
        for log in instance.logs():
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace")
                for what in SECOND_READER:
                    found[what] += text.count(what)
    return +found


# -- figures ---------------------------------------------------------------------------------


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S")


def _held(shown: dict[Key, tuple[int, Any]], key: Key) -> str:
    """How a screen shows `key`: "metric/department shows value (vN)"."""
    metric, department = key
    held = shown.get(key)
    version = held[0] if held else "-"
    return f"{metric}/{department or 'hospital'} shows {held[1] if held else None!r} (v{version})"


def report(
    soak: Soak,
    results: list[dict[str, Any]],
    truth: dict[tuple[str, str | None], Any],
    fresh: dict[str, dict[Key, tuple[int, Any]] | str],
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

    shown_by_client = {r["index"]: r["shown"] for r in results}
    wrong_by_client = {index: differences(shown, truth) for index, shown in shown_by_client.items()}
    affected = {index: wrong for index, wrong in wrong_by_client.items() if wrong}
    keys = {key for wrong in affected.values() for key in wrong}
    yield (
        f"updates lost:       {sum(len(w) for w in affected.values())} (client, key) pairs "
        f"differ from SQL, {len(keys)} distinct keys, {len(affected)} of {len(results)} clients "
        f"affected (of {len(truth)} keys compared per client)"
    )
    for index, wrong in list(affected.items())[:8]:
        sample = "; ".join(
            f"{_held(shown_by_client[index], key)} SQL {sql}"
            for key, (_, sql) in list(wrong.items())[:3]
        )
        yield f"  client {index}: {len(wrong)} keys: {sample}"
    for name, snapshot in fresh.items():
        if isinstance(snapshot, str):
            yield f"  fresh snapshot from {name}: {snapshot}"
            continue
        differ = differences(snapshot, truth)
        yield f"  fresh snapshot from {name}: " + (
            "equals SQL"
            if not differ
            else f"{len(differ)} keys differ: "
            + "; ".join(
                f"{_held(snapshot, key)} SQL {sql}" for key, (_, sql) in list(differ.items())[:3]
            )
        )

    inside = sum(r["duplicates_allowed"] for r in results)
    outside = sum(r["duplicates_wrong"] for r in results)
    dup_clients = sum(1 for r in results if r["duplicates_wrong"])
    yield (
        f"duplicates:         {outside} outside the acknowledgement window ({dup_clients} "
        f"clients); {inside} inside it (a replayed update also arriving live, at or below the "
        "answer's position: documented, dropped by Recovery 5)"
    )
    for result in results:
        if result["duplicates_wrong"]:
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
        dropped = sum(1 for t in times if t == "away")
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
    drop_recoveries = [d[2] - d[1] for r in results for d in r["absences"]]
    yield (
        "  client drops:     reconnect ordered -> subscription answered "
        + in_seconds(drop_recoveries)
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


def seed(hospital_seed: int) -> Callable[[str, str], Awaitable[None]]:
    """The simulator's hospital, seeded with `hospital_seed`."""

    async def seed_hospital(url: str, dsn: str) -> None:
        from livedash.simulator import seed_hospital

        await seed_hospital(url, seed=hospital_seed, zone=ZoneInfo(ZONE))

    return seed_hospital


async def measure(soak: Soak, tokens: list[str]) -> None:
    await soak.clients.connected()
    print(
        f"clients:            {soak.args.clients} connected through nginx and subscribed to "
        f"{len(METRIC_NAMES)} metrics x every department and the hospital",
        flush=True,
    )
    await soak.run()
    today = datetime.now(ZoneInfo(ZONE)).date()
    truth = await recompute(soak.deployment.url, ZoneInfo(ZONE), today)
    soak.second_reader = second_reader_warnings(soak.deployment.instances)
    truth = {key: value for key, value in truth.items() if key[0] in ORACLE_METRICS}
    fault_times = [(fault.at, fault.healthy) for fault in soak.faults]
    results = await soak.clients.finish(fault_times)
    fresh: dict[str, dict[Key, tuple[int, Any]] | str] = {}
    for number, instance in enumerate(soak.deployment.instances, 1):
        name = f"instance {number}"
        try:
            fresh[name] = await fresh_snapshot(instance.url, tokens[0])
        except Exception as error:
            fresh[name] = f"failed: {type(error).__name__}: {error}"
    for line in report(soak, results, truth, fresh):
        print(line)


def run(args: argparse.Namespace, stack: contextlib.ExitStack, root: Path) -> None:
    deployment = start_deployment(
        stack,
        root,
        instances=args.instances,
        slot=FEED_SLOT,
        seed=seed(args.seed),
        users=[(f"soak-{index}", Role.SUPER_ADMIN, []) for index in range(args.clients)],
        env={"LIVEDASH_TIMEZONE": ZONE, "LIVEDASH_LOG_LEVEL": args.log_level},
    )
    tokens = [
        issue_token(deployment.settings, f"soak-{index}", Role.SUPER_ADMIN)
        for index in range(args.clients)
    ]
    postgres, redis, nginx = deployment.postgres, deployment.redis, deployment.nginx
    print(f"service:            livedash from {Path(livedash.__file__).parent}", flush=True)
    print(
        f"deployment:         PostgreSQL {postgres.version} (throwaway, "
        f"wal_level=logical) at 127.0.0.1:{postgres.port}; Redis at 127.0.0.1:{redis.port}; "
        + ", ".join(
            f"instance {number} at {server.url} ({role}, pid {server.pid})"
            for number, (server, role) in enumerate(
                zip(deployment.instances, deployment.roles, strict=True), 1
            )
        )
        + f"; nginx at {nginx.url}",
        flush=True,
    )
    simulator = stack.enter_context(SimulatorProcess(deployment.url, args.seed, args.speed, ZONE))
    clients = stack.enter_context(
        ScreenProcesses(
            nginx.url,
            tokens,
            args.client_processes,
            watched=ORACLE_METRICS,
            metrics=METRIC_NAMES,
            rules=args.client,
            trace=args.trace,
        )
    )
    health = HealthMonitor(deployment.instances)
    soak = Soak(args, deployment, clients, simulator, health)
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
    asyncio.run(measure(soak, tokens))


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    begin_bench()
    revision = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"tree:               {revision or '?'}", flush=True)
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
