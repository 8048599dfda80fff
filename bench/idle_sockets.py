"""Memory and connect time of many idle, authenticated, subscribed sockets.

Each client is a raw Socket.IO client over the `websockets` library, which offers
permessage-deflate as browsers and Node's `ws` do (python-socketio's own client does not, so
latency.py cannot see this cost). The clients run in `--client-processes` processes apart from
the service. Each connects, authenticates in the handshake, subscribes to `patients_total` of
ED, then stays idle answering pings. The service runs once per `--deflate` value, on a fresh
embedded database, and the bench prints its RSS before and with every socket subscribed.

    .venv/bin/python bench/idle_sockets.py --sockets 10000 --client-processes 4
    .venv/bin/python bench/idle_sockets.py --sockets 2000 --deflate off --deflate on \\
        --server livedash

By default, and with `--server python` and `--server node`, the same storm runs against the
bare baselines of bench/run.py (bench/baseline_servers.py) after livedash: they answer the
same handshake and subscription but check no token, read no database and count no limit, so
they show the floor of each stack.

`--socket-workers N` runs the service with N socket workers; the RSS is then that of every
process of the service. Server CPU: every process of the service, from the first connect until
every socket is subscribed, per socket.

`--server-cpus` and `--client-cpus` (Linux CPU lists, as `taskset` takes them) give the server
and the bench with its client processes cores of their own, so that neither's figures carry
the other's share of the machine:

    .venv/bin/python bench/idle_sockets.py --sockets 10000 --client-processes 4 \\
        --server-cpus 1 --client-cpus 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from baseline_servers import NODE, PYTHON, BaselineProcess, baseline_command
from livedash.auth.tokens import issue_token
from livedash.store.models import Role
from livedash.testing.cores import allowed_cpus, check_on, cpu_list, pin_bench
from livedash.testing.hospital import add_users, migrated_hospital, viewers
from livedash.testing.service import MANY_CLIENTS, ServiceProcess, begin_bench, bench_settings
from livedash.testing.stats import percentile
from livedash.testing.usage import tree_cpu_seconds, tree_rss_kb

CONNECTS_AT_ONCE = 100  # per client process
LIVEDASH = "livedash"
SERVERS = {"livedash": LIVEDASH, "python": PYTHON, "node": NODE}
"""`--server` values, as bench/run.py's `--scenarios`."""
NODE_SERVER_LIBRARY = Path(__file__).resolve().parents[1] / "node_modules" / "socket.io"
SETTLE_SECONDS = 2.0


@dataclass
class Outcome:
    """One client process's sockets: how many subscribed, and how long each took."""

    subscribed: int
    seconds: list[float]
    failed: int


async def _subscribe(url: str, token: str) -> ClientConnection:
    address = url.replace("http://", "ws://", 1)
    socket = await connect(f"{address}/socket.io/?EIO=4&transport=websocket", max_size=2**20)
    opened = str(await socket.recv())
    if not opened.startswith("0"):
        raise RuntimeError(f"not an Engine.IO open packet: {opened[:40]!r}")
    await socket.send("40" + json.dumps({"token": token}))
    # As socket.io-client does, events only once the namespace has answered: Node's server
    # closes a connection that sends one before.
    while not (answer := str(await socket.recv())).startswith("40"):
        if answer.startswith("44"):
            raise RuntimeError(f"connect refused: {answer[:200]!r}")
    await socket.send("420" + json.dumps(["subscribe_metrics", {"metrics": ["patients_total"]}]))
    while not str(message := await socket.recv()).startswith("430"):
        if message == "2":
            await socket.send("3")
    return socket


async def _hold(
    url: str, tokens: list[str], at_once: int, report: Connection, stop: Connection
) -> None:
    gate = asyncio.Semaphore(at_once)
    sockets: list[ClientConnection] = []
    seconds: list[float] = []
    failed = 0

    async def one(token: str) -> None:
        nonlocal failed
        async with gate:
            started = time.monotonic()
            try:
                sockets.append(await _subscribe(url, token))
            except (OSError, RuntimeError, ConnectionClosed) as error:
                failed += 1
                if failed == 1:
                    print("first refusal:", repr(error), flush=True)
                return
            seconds.append(time.monotonic() - started)

    await asyncio.gather(*(one(token) for token in tokens))
    report.send(Outcome(len(sockets), seconds, failed))

    async def answer_pings(socket: ClientConnection) -> None:
        async for message in socket:
            if message == "2":
                await socket.send("3")

    pingers = [asyncio.create_task(answer_pings(socket)) for socket in sockets]
    await asyncio.to_thread(stop.recv)
    for pinger in pingers:
        pinger.cancel()
    for socket in sockets:
        await socket.close()


def _client_process(
    url: str, tokens: list[str], at_once: int, report: Connection, stop: Connection
) -> None:
    asyncio.run(_hold(url, tokens, at_once, report, stop))


def storm(
    url: str, pid: int, tokens: list[str], processes: int, at_once: int, rss: Callable[[], int]
) -> dict[str, float]:
    """Connect a socket per token to the server at `url` (process `pid` and its children), in
    `processes` client processes, and return its figures; `rss` reads its memory."""
    idle_kb = rss()
    cpu_before = tree_cpu_seconds(pid)
    context = multiprocessing.get_context("spawn")
    pipes, children = [], []
    started = time.monotonic()
    for index in range(processes):
        report_in, report_out = context.Pipe(duplex=False)
        stop_in, stop_out = context.Pipe(duplex=False)
        share = tokens[index::processes]
        child = context.Process(
            target=_client_process, args=(url, share, at_once, report_out, stop_in)
        )
        child.start()
        pipes.append((report_in, stop_out))
        children.append(child)
    outcomes: list[Outcome] = [report.recv() for report, _ in pipes]
    all_subscribed = time.monotonic() - started
    server_cpu = tree_cpu_seconds(pid) - cpu_before
    time.sleep(SETTLE_SECONDS)
    busy_kb = rss()
    for _, stop in pipes:
        stop.send(None)
    for child in children:
        child.join(30)
    subscribed = sum(outcome.subscribed for outcome in outcomes)
    each = sorted(second for outcome in outcomes for second in outcome.seconds)
    return {
        "subscribed": subscribed,
        "failed": sum(outcome.failed for outcome in outcomes),
        "all_subscribed_s": all_subscribed,
        "connect_p50_s": percentile(each, 0.5),
        "connect_p99_s": percentile(each, 0.99),
        "idle_mb": idle_kb / 1024,
        "with_sockets_mb": busy_kb / 1024,
        "kb_per_socket": (busy_kb - idle_kb) / max(subscribed, 1),
        "server_cpu_ms_per_socket": 1000 * server_cpu / max(subscribed, 1),
    }


def measure(
    sockets: int,
    deflate: bool,
    processes: int,
    at_once: int,
    workers: int = 0,
    cpus: frozenset[int] | None = None,
    pinned: bool = False,
) -> dict[str, float]:
    """Start a service, connect `sockets` clients, and return its figures."""
    with tempfile.TemporaryDirectory(prefix="livedash-idle-") as temp:
        workdir = Path(temp)
        db = workdir / "hospital.db"
        url, _ = migrated_hospital(db)
        settings = bench_settings(url, workdir)
        secret = settings.signing_key()
        add_users(db, viewers(sockets))
        tokens = [issue_token(settings, f"bench-{i}", Role.VIEWER, ["ED"]) for i in range(sockets)]
        env = {
            **MANY_CLIENTS,
            "LIVEDASH_WS_PER_MESSAGE_DEFLATE": str(deflate).lower(),
            "LIVEDASH_SOCKET_WORKERS": str(workers),
        }
        with ServiceProcess(workdir, secret, db=db, env=env, cpus=cpus) as server:
            server.wait_healthy()
            check_on(server.pid, cpus)
            if pinned:
                print_cpus(LIVEDASH, server.pid)
            return storm(server.url, server.pid, tokens, processes, at_once, server.rss_kb)


def measure_baseline(
    scenario: str,
    sockets: int,
    processes: int,
    at_once: int,
    cpus: frozenset[int] | None = None,
    pinned: bool = False,
) -> dict[str, float]:
    """The same storm against a bare socket.io server (`NODE` or `PYTHON`), which checks no
    token, reads no database and applies no limit: the floor of its stack."""
    with tempfile.TemporaryDirectory(prefix="livedash-idle-") as temp:
        command = baseline_command(scenario, rate=1, count=1)
        with BaselineProcess(command, Path(temp), "baseline", cpus=cpus) as server:
            server.wait_healthy()
            check_on(server.pid, cpus)
            if pinned:
                print_cpus(scenario, server.pid)
            tokens = ["unchecked"] * sockets
            return storm(
                server.url,
                server.pid,
                tokens,
                processes,
                at_once,
                lambda: tree_rss_kb(server.pid) or 0,
            )


def print_cpus(server: str, pid: int) -> None:
    """Where the server and the bench run, as Linux has them once the server is up (a pinned
    run's line before its row)."""
    print(
        f"  {server} on CPUs {allowed_cpus(pid)}, the bench and its clients on CPUs "
        f"{allowed_cpus(os.getpid())}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--at-once",
        type=int,
        default=CONNECTS_AT_ONCE,
        help=f"connects in flight per client process ({CONNECTS_AT_ONCE}); a storm: all",
    )
    parser.add_argument(
        "--deflate", action="append", choices=["off", "on"], help="once per run (default: off)"
    )
    parser.add_argument(
        "--socket-workers",
        type=int,
        default=0,
        help="LIVEDASH_SOCKET_WORKERS of the service (0); RSS counts every process",
    )
    parser.add_argument(
        "--server",
        action="append",
        choices=list(SERVERS),
        help="once per run, in order (default: livedash, python, and node where node and "
        "node_modules/socket.io are there); node and python are the bare baselines of "
        "bench/baselines/, connected to by the same clients",
    )
    parser.add_argument(
        "--server-cpus",
        type=cpu_list,
        help="CPUs the server runs on, as taskset takes them (default: any)",
    )
    parser.add_argument(
        "--client-cpus",
        type=cpu_list,
        help="CPUs this bench and its client processes run on (default: any)",
    )
    args = parser.parse_args()
    node_there = shutil.which("node") is not None and NODE_SERVER_LIBRARY.is_dir()
    if args.server is None:
        args.server = ["livedash", "python", *(["node"] if node_there else [])]
        if not node_there:
            print(f"without node and {NODE_SERVER_LIBRARY} (npm install): no Node baseline")
    elif "node" in args.server and not node_there:
        parser.error(f"--server node needs node on PATH and {NODE_SERVER_LIBRARY} (npm install)")
    servers = [SERVERS[name] for name in args.server]
    begin_bench()
    pin_bench(args.client_cpus)
    pinned = args.server_cpus is not None or args.client_cpus is not None
    print(
        f"{'server':>15} {'deflate':>7} {'sockets':>7} {'failed':>6} {'all in':>7} {'p50':>6} "
        f"{'p99':>6} {'RSS idle':>9} {'RSS with':>9} {'per socket':>10} {'server CPU':>10}"
    )
    # The baselines never offer deflate (Node's default; python_server.py turns it off): once.
    runs = [
        (server, deflate)
        for server in servers
        for deflate in (args.deflate or ["off"] if server == LIVEDASH else ["off"])
    ]
    for server, deflate in runs:
        if server == LIVEDASH:
            figures = measure(
                args.sockets,
                deflate == "on",
                args.client_processes,
                args.at_once,
                args.socket_workers,
                args.server_cpus,
                pinned,
            )
        else:
            figures = measure_baseline(
                server,
                args.sockets,
                args.client_processes,
                args.at_once,
                args.server_cpus,
                pinned,
            )
        print(
            f"{server:>15} {deflate:>7} {figures['subscribed']:>7.0f} {figures['failed']:>6.0f} "
            f"{figures['all_subscribed_s']:>6.1f}s {figures['connect_p50_s']:>5.2f}s "
            f"{figures['connect_p99_s']:>5.2f}s {figures['idle_mb']:>7.0f}MB "
            f"{figures['with_sockets_mb']:>7.0f}MB {figures['kb_per_socket']:>8.1f}KB "
            f"{figures['server_cpu_ms_per_socket']:>5.2f}ms/socket",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
