"""Failover: how long clients behind nginx get errors after an instance is killed -9.

    .venv/bin/python bench/failover.py --seconds 50 --clients 12 --faults 2 --fault-gap 8 \
        --restart-after 3 --variant repo --variant max-fails-1

Two minimal backends (uvicorn ASGI apps, started as `bench/failover.py --serve PORT`) stand in
for `livedash serve`: a WebSocket on /socket.io/ stays open until either side ends it,
`GET /socket.io/?...` answers 200 after `--hold` s (a short long-poll), `GET /health` at once.
nginx runs in front of them from deploy/nginx.conf rendered as the tests render it
(`livedash.testing.servers.render_nginx_config`), changed by `--variant` (VARIANTS; `repo`: as is).
`--clients` clients, each from its own loopback address (127.0.0.2, ...; `hash $remote_addr`
spreads them), either keep one socket.io-like WebSocket open and reconnect with
python-socketio's back-off when it ends (`--pattern websocket`, the default, as bench/soak.py's
clients), or send HTTP requests over one keep-alive connection (`poll`, `reconnect`). After
`--kill-after` s one backend is killed with SIGKILL and started again on the same port
`--restart-after` s later; `--faults N` does this N times, the two backends in turn.

Printed per variant: per client its unavailable stretches (first failed answer or dropped
WebSocket to the next 200/101); the worst and p50 over clients of each client's longest one;
the count of 502s; the nginx error log lines by kind ("no live upstreams", "connect() failed",
"temporarily disabled", ...). A stretch still open at the end is cut at `--seconds`.
Everything runs on free loopback ports in a temporary directory and is stopped at the end
(Ctrl-C and SIGTERM included); nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livedash.testing.servers import (
    NginxServer,
    free_port,
    loopback_address,
    new_root,
    wait_for_port,
)


def _sub(old: str, new: str) -> Callable[[str], str]:
    def change(config: str) -> str:
        if old not in config:
            raise ValueError(f"variant: {old!r} is not in the rendered nginx.conf")
        return config.replace(old, new)

    return change


def _regex(pattern: str, new: str) -> Callable[[str], str]:
    def change(config: str) -> str:
        changed, count = re.subn(pattern, new, config)
        if not count:
            raise ValueError(f"variant: {pattern!r} does not match the rendered nginx.conf")
        return changed

    return change


VARIANTS: dict[str, list[Callable[[str], str]]] = {
    # deploy/nginx.conf as it is (only its "site:" lines set).
    "repo": [],
    # Upstream state shared by all workers.
    "zone": [_sub("upstream livedash {\n", "upstream livedash {\n        zone livedash 64k;\n")],
    "workers1": [_sub("worker_processes auto;", "worker_processes 1;")],
    "no-keepalive": [_regex(r"\n\s*keepalive 64;", "")],
    # deploy/nginx.conf says max_fails=0 (since 2026-11-24); these mark failed instances down.
    "max-fails-1": [_regex(r"max_fails=0", "max_fails=1 fail_timeout=2s")],
    "max-fails-3": [_regex(r"max_fails=0", "max_fails=3 fail_timeout=2s")],
    "fail-timeout-10": [_regex(r"max_fails=0", "max_fails=1 fail_timeout=10s")],
    "least-conn": [_sub("hash $remote_addr consistent;", "least_conn;")],
    # The recommendation under test: proxy_next_upstream for `/` without http_502/http_503.
    "no-next-5xx": [
        _sub(
            "proxy_next_upstream error timeout http_502 http_503;",
            "proxy_next_upstream error timeout;",
        )
    ],
}

LOG_KINDS = [
    ("no live upstreams", re.compile(r"no live upstreams")),
    ("upstream prematurely closed", re.compile(r"upstream prematurely closed")),
    ("connect() failed (111 refused)", re.compile(r"connect\(\) failed \(111")),
    ("recv() failed (104 reset)", re.compile(r"recv\(\) failed \(104")),
    ("upstream server temporarily disabled", re.compile(r"temporarily disabled")),
    ("upstream timed out", re.compile(r"timed out")),
]


# -- the backend -----------------------------------------------------------------------------


def serve(port: int, hold: float, starting: float) -> None:
    """A stand-in instance under uvicorn (as `livedash serve`, default 5 s keep-alive):
    /socket.io/ answers after `hold` s, /health at once; 503 for `starting` s after start."""
    import uvicorn

    started = time.monotonic()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # a socket.io WebSocket: open until either side ends
            await receive()  # websocket.connect
            if time.monotonic() - started < starting:
                await send({"type": "websocket.close", "code": 1013})
                return
            await send({"type": "websocket.accept", "headers": [(b"x-backend", b"%d" % port)]})
            while (await receive())["type"] != "websocket.disconnect":
                pass
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        status = 200
        if time.monotonic() - started < starting:
            status = 503
        elif path.startswith("/socket.io"):
            await asyncio.sleep(hold)
        elif path != "/health":
            status = 404
        body = f"{status} {port}".encode()
        headers = [(b"content-type", b"text/plain"), (b"x-backend", str(port).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


class Backend:
    def __init__(self, root: Path, hold: float, starting: float) -> None:
        self.port = free_port()
        self.hold = hold
        self.starting = starting
        self.log = root / f"backend-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve",
                    str(self.port),
                    "--hold",
                    str(self.hold),
                    "--starting",
                    str(self.starting),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port, self.process, self.log, 20)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


# -- the clients -----------------------------------------------------------------------------


@dataclass
class Client:
    index: int
    address: str
    answers: list[tuple[float, float, int, str]] = field(default_factory=list)
    """(sent, answered, status, backend or error) per request, in order."""

    def windows(self) -> list[tuple[float, float]]:
        """Every unavailable stretch: from the first non-200 answer to the next 200."""
        stretches: list[tuple[float, float]] = []
        start: float | None = None
        for _sent, answered, status, _who in self.answers:
            if status != 200 and start is None:
                start = answered
            elif status == 200 and start is not None:
                stretches.append((start, answered))
                start = None
        if start is not None:
            stretches.append((start, self.answers[-1][1]))
        return stretches

    def worst(self) -> float:
        return max((end - start for start, end in self.windows()), default=0.0)


async def run_client(
    client: Client, url: str, stop: float, args: argparse.Namespace, t0: float
) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(local_addr=(client.address, 0), limit=1)
    timeout = aiohttp.ClientTimeout(total=30)
    rng = random.Random(client.index)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        number = 0
        delay = 0.0
        while time.monotonic() < stop:
            number += 1
            sent = time.monotonic() - t0
            if args.pattern == "websocket":
                ok = await _websocket(session, url, number, client, sent, stop, t0)
            else:
                ok = await _request(session, url, number, client, sent, args.paths, t0)
            if args.pattern != "poll" and not ok:
                delay = min(delay * 2 or 0.5, 5.0)
                await asyncio.sleep(delay * (1 + 0.5 * (2 * rng.random() - 1)))
            else:
                delay = 0.0
                await asyncio.sleep(args.interval)


async def _request(
    session: Any, url: str, number: int, client: Client, sent: float, paths: str, t0: float
) -> bool:
    import aiohttp

    health = paths == "health" or (paths == "both" and number % 2 == 1)
    path = "/health" if health else f"/socket.io/?EIO=4&transport=polling&t={number}"
    try:
        async with session.get(url + path) as response:
            await response.read()
            status, who = response.status, response.headers.get("X-Backend", "nginx")
    except (aiohttp.ClientError, TimeoutError) as error:
        status, who = 0, type(error).__name__
    client.answers.append((sent, time.monotonic() - t0, status, who))
    return status == 200


async def _websocket(
    session: Any, url: str, number: int, client: Client, sent: float, stop: float, t0: float
) -> bool:
    """One WebSocket connection as socket.io opens it; an answer of 200 means "101 and open";
    the connection's end before the run's is recorded as a failed answer (status 0)."""
    import aiohttp

    path = f"/socket.io/?EIO=4&transport=websocket&t={number}"
    try:
        async with session.ws_connect(url + path, autoping=True) as ws:
            client.answers.append((sent, time.monotonic() - t0, 200, "ws"))
            while time.monotonic() < stop:
                with contextlib.suppress(TimeoutError):
                    message = await ws.receive(timeout=max(0.01, stop - time.monotonic()))
                    if message.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        break
            else:
                return True
        now = time.monotonic() - t0
        client.answers.append((now, now, 0, "ws closed"))
        return False
    except aiohttp.WSServerHandshakeError as error:
        client.answers.append((sent, time.monotonic() - t0, error.status, "handshake"))
    except (aiohttp.ClientError, TimeoutError) as error:
        client.answers.append((sent, time.monotonic() - t0, 0, type(error).__name__))
    return False


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Result:
    variant: str
    clients: list[Client]
    log_kinds: Counter[str]
    log_sample: dict[str, str]
    faults: list[tuple[int, float, float]]
    """(backend port, killed at, restarted at) per fault, in seconds from the start."""


async def run_variant(args: argparse.Namespace, variant: str) -> Result:
    root = new_root("failover-")
    backends = [Backend(root, args.hold, args.starting) for _ in range(2)]
    nginx: NginxServer | None = None
    try:
        for backend in backends:
            backend.start()
        nginx = NginxServer(root / "nginx", [b.port for b in backends], VARIANTS[variant])
        nginx.start()
        url = f"http://127.0.0.1:{nginx.port}"
        clients = [Client(i, loopback_address(i, args.clients)) for i in range(args.clients)]
        t0 = time.monotonic()
        stop = t0 + args.seconds
        tasks = [asyncio.create_task(run_client(client, url, stop, args, t0)) for client in clients]
        await asyncio.sleep(args.kill_after)
        faults: list[tuple[int, float, float]] = []
        for fault in range(args.faults):
            if fault:
                await asyncio.sleep(args.fault_gap)
            victim = backends[fault % 2]
            kill_at = time.monotonic() - t0
            victim.kill()
            await asyncio.sleep(args.restart_after)
            restart_at = time.monotonic() - t0
            await asyncio.to_thread(victim.start)
            faults.append((victim.port, kill_at, restart_at))
        try:  # every client stops at `stop`; a hung one is cut off
            await asyncio.wait_for(asyncio.gather(*tasks), args.seconds + 30)
        except TimeoutError:
            print("   (clients still running 30 s after the end: cancelled)", flush=True)
        kinds: Counter[str] = Counter()
        sample: dict[str, str] = {}
        for line in nginx.log.read_text(errors="replace").splitlines():
            for kind, pattern in LOG_KINDS:
                if pattern.search(line):
                    kinds[kind] += 1
                    sample.setdefault(kind, line)
                    break
            else:
                if "[notice]" not in line:
                    kinds["other"] += 1
                    sample.setdefault("other", line)
        return Result(variant, clients, kinds, sample, faults)
    finally:
        if nginx is not None:
            nginx.stop()
        for backend in backends:
            backend.kill()
        shutil.rmtree(root, ignore_errors=True)


def report(result: Result, verbose: bool) -> None:
    faults = "; ".join(
        f"backend :{port} killed at {killed:.1f} s, restarted at {restarted:.1f} s"
        for port, killed, restarted in result.faults
    )
    print(f"== variant {result.variant}: {faults}")
    worsts = [client.worst() for client in result.clients]
    statuses: Counter[int] = Counter()
    for client in result.clients:
        statuses.update(status for _s, _a, status, _w in client.answers)
        windows = client.windows()
        spans = ", ".join(f"{start:.1f}-{end:.1f}" for start, end in windows) or "-"
        bad = sum(1 for _s, _a, status, _w in client.answers if status != 200)
        print(f"   client {client.address:<11} requests {len(client.answers):>5}  non-200 "
              f"{bad:>5}  worst {client.worst():5.1f} s  stretches {spans}")  # fmt: skip
        if verbose:
            for sent, answered, status, who in client.answers:
                if status != 200:
                    print(f"      {sent:7.2f}-{answered:7.2f} {status} {who}")
    print(f"   unavailable window per client: worst {max(worsts):.1f} s, "
          f"p50 {statistics.median(worsts):.1f} s")  # fmt: skip
    others = {status: n for status, n in statuses.items() if status not in (200, 502)}
    print(f"   answers: {statuses[200]} x 200, {statuses[502]} x 502, other {others or 0}")
    if not result.log_kinds:
        print("   error log: nothing")
    for kind, count in result.log_kinds.most_common():
        print(f"   error log: {count:>5} x {kind}")
        if verbose:
            print(f"      e.g. {result.log_sample[kind]}")


async def main_async(args: argparse.Namespace) -> None:
    # SIGTERM (e.g. from `timeout`) as Ctrl-C: cancel, so that every `finally` stops its servers.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    results = []
    for variant in args.variant or ["repo"]:
        result = await run_variant(args, variant)
        report(result, args.verbose)
        results.append(result)
    if len(results) > 1:
        print("== summary (unavailable window per client, s)")
        for result in results:
            worsts = [client.worst() for client in result.clients]
            count = sum(1 for c in result.clients for a in c.answers if a[2] == 502)
            lost = result.log_kinds["no live upstreams"]
            print(f"   {result.variant:<16} worst {max(worsts):5.1f}  p50 "
                  f"{statistics.median(worsts):5.1f}  502s {count:>5}  "
                  f"'no live upstreams' {lost:>5}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    parser.add_argument("--clients", type=int, default=12, help="clients (<= 20)")
    parser.add_argument("--kill-after", type=float, default=5.0, help="SIGKILL backend 1 at")
    parser.add_argument("--restart-after", type=float, default=3.0, help="seconds down")
    parser.add_argument("--interval", type=float, default=0.05, help="pause between requests")
    parser.add_argument("--hold", type=float, default=0.5, help="socket.io answer delay")
    parser.add_argument(
        "--variant", action="append", choices=sorted(VARIANTS),
        help="nginx config variant, repeatable (default: repo = deploy/nginx.conf as is)",
    )  # fmt: skip
    parser.add_argument(
        "--starting", type=float, default=0.0,
        help="a (re)started backend answers 503 for this long (livedash: /health 'starting')",
    )  # fmt: skip
    parser.add_argument(
        "--pattern", choices=("poll", "reconnect", "websocket"), default="websocket",
        help="poll: an HTTP request every --interval; reconnect: the same, but after a non-200 "
        "back off as python-socketio does (0.5 s doubling to 5 s, +-50%%); websocket: keep one "
        "socket.io WebSocket open, reconnect with that back-off when it fails or ends",
    )  # fmt: skip
    parser.add_argument(
        "--paths", choices=("both", "socketio", "health"), default="both",
        help="what clients request: /socket.io/ and /health alternately, or one of them",
    )  # fmt: skip
    parser.add_argument(
        "--faults", type=int, default=1,
        help="kill -9 and restart this many times, the two backends in turn",
    )  # fmt: skip
    parser.add_argument("--fault-gap", type=float, default=10.0, help="restart to next kill")
    parser.add_argument("--verbose", action="store_true", help="every non-200 answer")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.hold, args.starting)
        return
    if not 1 <= args.clients <= 200:
        parser.error("--clients must be 1..200")
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
