"""livedash against two bare socket.io servers doing the same broadcast (performance issue 14).

One table, one row per (server, sockets): latency percentiles, what reached the clients, and
what the server cost. The three servers:

- `node socket.io`: bench/baselines/node_server.js, the npm `socket.io` server alone (from
  this repository's node_modules: `npm install`);
- `python-socketio`: bench/baselines/python_server.py, python-socketio's AsyncServer under
  uvicorn alone;
- `livedash`: `livedash serve` on SQLite while a writer process inserts ED patients, as
  bench/latency.py does.

The baselines emit a `dashboard_update`-shaped payload to one room W times a second; the latency
of a value is its emit time (the payload's `timestamp`, read from CLOCK_MONOTONIC as every
process of the bench reads it) to its arrival. For livedash it is the commit that produced the
value to its arrival. Every server is watched by the same clients: they connect over websocket,
wait for `authenticated`, and subscribe to `patients_total`/ED with `subscribe_metrics`, which
the baselines answer as livedash does. `--clients node` (the default when node and
node_modules/socket.io-client are there): the stock npm socket.io-client, all in one Node
process (bench/clients/watchers.js, `livedash.testing.node_watchers`). `--clients python`:
python-socketio (`livedash.testing.watchers`, in worker processes of at most 250 clients each),
which saturates a small machine by itself at 1000 sockets.

    .venv/bin/python bench/run.py                                   # 100 sockets, 40/s, 10 s
    .venv/bin/python bench/run.py --sockets 100,1000 --seconds 10 --json /tmp/issue14.json
    .venv/bin/python bench/run.py --clients python                  # python-socketio clients
    .venv/bin/python bench/run.py --sockets 1000 --writes-per-second 200 \\
        --server-cpus 1 --client-cpus 0                             # a core each

`--server-cpus` and `--client-cpus` (Linux CPU lists, as `taskset` takes them) give the
servers, and the bench with its clients and writer, cores of their own: on a machine with
cores to spare, neither's figures then carry the other's share of the machine.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from baseline_servers import NODE, PYTHON, BaselineProcess, baseline_command
from livedash.auth.tokens import issue_token
from livedash.store.models import Role
from livedash.testing import usage
from livedash.testing.cores import check_on, cpu_list, pin_bench, written
from livedash.testing.hospital import WATCHED, WriterProcess, add_users, migrated_hospital, viewers
from livedash.testing.node_watchers import NodeWatchers
from livedash.testing.service import MANY_CLIENTS, ServiceProcess, begin_bench, bench_settings
from livedash.testing.stats import percentile
from livedash.testing.watchers import Collected, WatcherProcesses, exact_receipts

HERE = Path(__file__).resolve().parent
NODE_CLIENTS = HERE / "clients" / "watchers.js"
CLIENT_LIBRARY = HERE.parent / "node_modules" / "socket.io-client"
LIVEDASH = "livedash"
CLIENTS_PER_PROCESS = 250
"""As bench/latency.py: one event loop reading more sockets stamps the last of them late."""
DRAIN_SECONDS = 5.0
MAX_SENDS_PER_SECOND = 40.0
"""Of one value, by livedash (LIVEDASH_COALESCE_WINDOW_SECONDS 0.025)."""
SATURATED = 0.85
"""Server and clients together above this share of the machine's CPUs: say so."""


@dataclass
class Row:
    """One line of the table (times in ms)."""

    scenario: str
    sockets: int
    writes_per_second: float
    p50: float
    p95: float
    p99: float
    max: float
    delivered_per_socket_per_second: float
    delivered_share: float
    """Deliveries / (values written or emitted in the window x sockets)."""
    server_rss_mb: float
    server_cpu_percent: float
    clients_cpu_percent: float
    """The bench's client processes, together (% of one core)."""
    p99_vs_node: float | None = None
    p99_vs_python: float | None = None
    note: str = ""


@dataclass
class Outcome:
    """What one run of the clients brought back."""

    collected: Collected
    rss_kb: int
    cpu_percent: float
    clients_cpu_percent: float
    client_lag_p99: float


# -- one run of the clients ------------------------------------------------------------------


def node_clients_available() -> bool:
    return shutil.which("node") is not None and CLIENT_LIBRARY.is_dir()


def clients_label(kind: str, sockets: Sequence[int]) -> str:
    """Which clients watched the servers, for the header."""
    if kind == "node":
        manifest = json.loads((CLIENT_LIBRARY / "package.json").read_text())
        return f"npm socket.io-client {manifest.get('version', '?')}, one Node process"
    most = max(math.ceil(count / CLIENTS_PER_PROCESS) for count in sockets)
    return f"python-socketio, up to {CLIENTS_PER_PROCESS} per process ({most} at most)"


async def watch(
    url: str,
    tokens: list[str],
    pid: int,
    drive: Callable[[], Awaitable[int]],
    kind: str,
) -> Outcome:
    """Connect the clients (`kind`: "node", one Node process; "python", worker processes),
    `drive()` the writes (it returns the final value), drain, and note the server's CPU share
    over that window and its RSS at the end."""
    clients: NodeWatchers | WatcherProcesses
    if kind == "node":
        clients = NodeWatchers(url, tokens, NODE_CLIENTS)
    else:
        processes = max(1, math.ceil(len(tokens) / CLIENTS_PER_PROCESS))
        clients = WatcherProcesses(url, tokens, processes, 1, {})
    with clients:
        await clients.connect()
        await asyncio.sleep(0.5)  # let the server settle after the connect storm
        clients.start()
        # The server's every process (livedash's socket workers too).
        cpu, wall = usage.tree_cpu_seconds(pid), time.monotonic()
        final_value = await drive()
        await clients.drain(final_value, DRAIN_SECONDS)
        window = time.monotonic() - wall
        cpu_percent = 100 * (usage.tree_cpu_seconds(pid) - cpu) / window
        rss = usage.tree_rss_kb(pid) or 0
        collected = await clients.collect()
        lag = max(percentile(samples, 0.99) for samples in clients.lag)
    # The clients measure their CPU from start() to the end of their drain: nearly this window.
    clients_percent = 100 * sum(clients.cpu_seconds) / window
    return Outcome(collected, rss, cpu_percent, clients_percent, lag)


def _published_at(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def row(
    scenario: str,
    args: argparse.Namespace,
    sockets: int,
    outcome: Outcome,
    measured: set[int],
    sent_at: Callable[[int, str], float],
) -> Row:
    """The figures of one run: latency of each (client, measured value) from `sent_at`."""
    exact, duplicates = exact_receipts(outcome.collected.receipts, measured)
    latencies = [r.received - sent_at(r.value, r.published) for r in exact.values()]
    figures = [1000 * percentile(latencies, q) for q in (0.5, 0.95, 0.99, 1.0)]
    received = {value for _, value in exact}
    never_sent = len(measured - received)
    lost = len(measured) * sockets - len(exact) - never_sent * sockets
    notes = []
    if never_sent:
        notes.append(f"{never_sent} of {len(measured)} values reached no client")
    if lost:
        notes.append(f"{lost} deliveries lost")
    if duplicates:
        notes.append(f"{duplicates} duplicates")
    if outcome.client_lag_p99 > 0.05:
        notes.append(f"client loop lag p99 {1000 * outcome.client_lag_p99:.0f} ms")
    busy = outcome.cpu_percent + outcome.clients_cpu_percent
    if busy > SATURATED * 100 * (os.cpu_count() or 1):
        notes.append(
            f"server and clients used {busy:.0f}% of {os.cpu_count()} cores: the machine was "
            "saturated, the figures include the bench's own delay"
        )
    return Row(
        scenario=scenario,
        sockets=sockets,
        writes_per_second=args.writes_per_second if scenario == LIVEDASH else args.baseline_rate,
        p50=figures[0],
        p95=figures[1],
        p99=figures[2],
        max=figures[3],
        delivered_per_socket_per_second=len(exact) / sockets / args.seconds,
        delivered_share=len(exact) / (len(measured) * sockets) if measured else 0.0,
        server_rss_mb=outcome.rss_kb / 1024,
        server_cpu_percent=outcome.cpu_percent,
        clients_cpu_percent=outcome.clients_cpu_percent,
        note="; ".join(notes),
    )


def run_baseline(scenario: str, args: argparse.Namespace, sockets: int, workdir: Path) -> Row:
    """A bare server emitting `count` values at W/s once the clients are in; values emitted
    after the warm-up are measured."""
    rate = args.baseline_rate
    count: int = round(rate * (args.warmup + args.seconds))
    first = math.floor(rate * args.warmup) + 1
    tokens = [f"bench-{index}" for index in range(sockets)]
    name = scenario.split()[0]
    command = baseline_command(scenario, rate, count)
    with BaselineProcess(command, workdir, name, cpus=args.server_cpus) as server:
        server.wait_healthy()
        check_on(server.pid, args.server_cpus)

        async def drive() -> int:
            await asyncio.to_thread(server.get, "/start")
            await asyncio.sleep(count / rate)
            await asyncio.to_thread(server.wait_sent, count)
            return count

        try:
            outcome = asyncio.run(watch(server.url, tokens, server.pid, drive, args.clients))
        except Exception:
            print(f"{name} log (last lines):\n{server.log_tail()}", file=sys.stderr)
            raise
    measured = set(range(first, count + 1))
    return row(scenario, args, sockets, outcome, measured, lambda _, at: _published_at(at))


def run_livedash(args: argparse.Namespace, sockets: int, workdir: Path) -> Row:
    """`livedash serve` on SQLite and bench/latency.py's writer: commit -> arrival."""
    db = workdir / "hospital.db"
    url, department_id = migrated_hospital(db)
    settings = bench_settings(url, workdir)
    secret = settings.signing_key()
    add_users(db, viewers(sockets))
    tokens = [
        issue_token(settings, f"bench-{index}", Role.VIEWER, [WATCHED]) for index in range(sockets)
    ]
    env = {**MANY_CLIENTS, "LIVEDASH_SOCKET_WORKERS": str(args.socket_workers)}
    server = ServiceProcess(workdir, secret, db=db, env=env, cpus=args.server_cpus)
    commits: dict[int, float] = {}
    measured: set[int] = set()
    with (
        WriterProcess(
            db, department_id, args.writes_per_second, args.warmup, args.seconds
        ) as writer,
        server,
    ):
        server.wait_healthy()
        check_on(server.pid, args.server_cpus)

        async def drive() -> int:
            writes = await writer.run()
            commits.update(writes.commits)
            measured.update(writes.measured)
            return writes.final_value

        try:
            outcome = asyncio.run(watch(server.url, tokens, server.pid, drive, args.clients))
        except Exception:
            print(f"livedash log (last lines):\n{server.log_tail()}", file=sys.stderr)
            raise
    return row(LIVEDASH, args, sockets, outcome, measured, lambda value, _: commits[value])


# -- the table -------------------------------------------------------------------------------

COLUMNS = (
    ("scenario", 16, "{}"),
    ("sockets", 7, "{}"),
    ("writes/s", 8, "{:g}"),
    ("p50 ms", 8, "{:.1f}"),
    ("p95 ms", 8, "{:.1f}"),
    ("p99 ms", 8, "{:.1f}"),
    ("max ms", 8, "{:.1f}"),
    ("/s/socket", 9, "{:.1f}"),
    ("delivered", 9, "{:.1%}"),
    ("RSS MB", 7, "{:.0f}"),
    ("CPU %", 6, "{:.0f}"),
    ("clients CPU %", 13, "{:.0f}"),
    ("p99/node", 8, "{:.1f}x"),
    ("p99/python", 10, "{:.1f}x"),
)


def table(rows: Sequence[Row]) -> list[str]:
    """The rows as aligned text, then each row's note."""
    lines = ["  ".join(f"{name:>{width}}" for name, width, _ in COLUMNS)]
    for r in rows:
        cells = (
            r.scenario,
            r.sockets,
            r.writes_per_second,
            r.p50,
            r.p95,
            r.p99,
            r.max,
            r.delivered_per_socket_per_second,
            r.delivered_share,
            r.server_rss_mb,
            r.server_cpu_percent,
            r.clients_cpu_percent,
            r.p99_vs_node,
            r.p99_vs_python,
        )
        lines.append(
            "  ".join(
                f"{'-' if cell is None else form.format(cell):>{width}}"
                for (_, width, form), cell in zip(COLUMNS, cells, strict=True)
            )
        )
    lines += [f"  {r.scenario}, {r.sockets} sockets: {r.note}" for r in rows if r.note]
    return lines


def ratios(rows: list[Row]) -> None:
    """livedash's p99 over each baseline's at the same number of sockets."""
    for r in rows:
        if r.scenario != LIVEDASH:
            continue
        for other in rows:
            if other.sockets == r.sockets and other.p99 > 0:
                if other.scenario == NODE:
                    r.p99_vs_node = r.p99 / other.p99
                elif other.scenario == PYTHON:
                    r.p99_vs_python = r.p99 / other.p99


# -- entry point -----------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="livedash against bare Node socket.io and bare python-socketio: the same "
        "room broadcast to the same clients, one table."
    )
    parser.add_argument("--sockets", default="100", help="comma-separated numbers of clients (100)")
    parser.add_argument(
        "--writes-per-second", type=float, default=40.0, help="writes or emits per second (40)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    parser.add_argument(
        "--baseline-rate",
        type=float,
        help="emits per second of the bare servers (default: the writes per second, at most "
        "40, the most livedash's 25 ms coalescing window sends of one value)",
    )
    parser.add_argument(
        "--scenarios",
        default="node,python,livedash",
        help="comma-separated servers to run, of node, python, livedash (all)",
    )
    parser.add_argument("--json", type=Path, help="also save the table here as JSON")
    parser.add_argument(
        "--socket-workers",
        type=int,
        default=0,
        help="livedash's LIVEDASH_SOCKET_WORKERS (0); its RSS and CPU count every process",
    )
    parser.add_argument(
        "--clients",
        choices=("node", "python"),
        help="node: npm socket.io-client in one Node process (the default when node and "
        "node_modules/socket.io-client are there); python: python-socketio in worker processes",
    )
    parser.add_argument(
        "--server-cpus",
        type=cpu_list,
        help="CPUs the servers run on, as taskset takes them (default: any)",
    )
    parser.add_argument(
        "--client-cpus",
        type=cpu_list,
        help="CPUs this bench, its clients and livedash's writer run on (default: any)",
    )
    args = parser.parse_args(argv)
    if args.clients is None:
        args.clients = "node" if node_clients_available() else "python"
    elif args.clients == "node" and not node_clients_available():
        parser.error(f"--clients node needs node on PATH and {CLIENT_LIBRARY} (npm install)")
    try:
        args.sockets = [int(part) for part in args.sockets.split(",") if part.strip()]
    except ValueError:
        parser.error("--sockets: comma-separated integers, e.g. 100,1000")
    if not args.sockets or min(args.sockets) < 1:
        parser.error("--sockets >= 1")
    if args.writes_per_second <= 0 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--writes-per-second > 0, --seconds > 0, --warmup >= 0")
    if not 0 <= args.socket_workers <= 64:
        parser.error("--socket-workers: 0 to 64")
    if args.baseline_rate is None:
        args.baseline_rate = min(args.writes_per_second, MAX_SENDS_PER_SECOND)
    elif args.baseline_rate <= 0:
        parser.error("--baseline-rate > 0")
    names = {"node": NODE, "python": PYTHON, "livedash": LIVEDASH}
    chosen = [part.strip() for part in args.scenarios.split(",") if part.strip()]
    if not chosen or any(part not in names for part in chosen):
        parser.error("--scenarios: comma-separated, of node, python, livedash")
    args.scenarios = [names[part] for part in chosen]
    return args


def placed(cpus: frozenset[int] | None) -> str:
    return "any" if cpus is None else written(cpus)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    begin_bench()
    pin_bench(args.client_cpus)
    rows: list[Row] = []
    clients = clients_label(args.clients, args.sockets)
    print(f"clients: {clients}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    try:
        for sockets in args.sockets:
            for scenario in args.scenarios:
                print(f"running {scenario} with {sockets} sockets...", file=sys.stderr, flush=True)
                with tempfile.TemporaryDirectory(prefix="livedash-run-") as temp:
                    if scenario == LIVEDASH:
                        rows.append(run_livedash(args, sockets, Path(temp)))
                    else:
                        rows.append(run_baseline(scenario, args, sockets, Path(temp)))
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        return 130
    ratios(rows)
    print(
        f"latency: baselines emit -> arrival, livedash commit -> arrival; warm-up "
        f"{args.warmup:g} s, then {args.seconds:g} s measured; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)"
    )
    print(f"clients: {clients}")
    if args.server_cpus is not None or args.client_cpus is not None:
        print(
            f"CPUs: servers {placed(args.server_cpus)}; the bench, its clients and writer "
            f"{placed(args.client_cpus)}"
        )
    for line in table(rows):
        print(line)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "seconds": args.seconds,
                    "warmup": args.warmup,
                    "writes_per_second": args.writes_per_second,
                    "baseline_emits_per_second": args.baseline_rate,
                    "clients": args.clients,
                    "clients_detail": clients,
                    "server_cpus": placed(args.server_cpus),
                    "client_cpus": placed(args.client_cpus),
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
