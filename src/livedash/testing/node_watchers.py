"""The watchers of `livedash.testing.watchers` as the stock npm socket.io-client, every client in
one Node process (bench/clients/watchers.js): the same connection, subscription and receipts,
at a fraction of python-socketio's CPU cost per message.

`NodeWatchers` offers what bench/run.py and bench/latency.py use of `WatcherProcesses`:
`connect()`, `start()`, `drain(final_value, seconds)`, `collect()`, the client's CPU time and
loop lag, the update frames and values received (`frames`, `values`), and, given
`local_addresses`, each client's source address (`address_of`) and the role of the instance
behind it (`roles`). It talks to the script over its stdin and stdout, one
JSON object per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

from livedash.testing.hospital import METRIC, WATCHED
from livedash.testing.usage import run_queue_seconds
from livedash.testing.watchers import CONNECT_CONCURRENCY, STOP_SECONDS, Collected, Receipt

POLL_SECONDS = 0.05
ROLE_CONCURRENCY = 20
ROLE_TIMEOUT_SECONDS = 10.0


async def roles_behind(
    url: str, addresses: Sequence[str], headers: Mapping[str, str]
) -> dict[str, str]:
    """The role of the instance that nginx (`hash $remote_addr`) pins each source address to:
    `GET /health` through `url` from that address, as `WatcherProcesses` asks."""
    gate = asyncio.Semaphore(ROLE_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=ROLE_TIMEOUT_SECONDS)

    async def one(address: str) -> tuple[str, str]:
        async with gate:
            connector = aiohttp.TCPConnector(local_addr=(address, 0))
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get(f"{url}/health", headers=dict(headers)) as response,
            ):
                body = await response.json()
        return address, str(body.get("role", "?"))

    return dict(await asyncio.gather(*(one(address) for address in dict.fromkeys(addresses))))


class NodeWatchers:
    """`tokens` clients of `url` in one Node process running `script` (watchers.js).

    With `local_addresses` (one per token), client i connects from `local_addresses[i]`, and
    `connect()` then also learns the role behind each address (`roles_behind`, with
    `health_headers`): `roles[address_of[i]]` is client i's instance's role, as with
    `WatcherProcesses`.

    Each client subscribes to `metrics` (default: the watched one) of the watched department;
    `batched`, it asks for `dashboard_updates` in its handshake. Only the watched metric's
    updates are receipts; `frames` and `values` count every update, from `start()` to the end
    of `drain()`, all clients together.

    A context manager: it starts the process, and at the end closes its stdin, waits
    STOP_SECONDS and kills it if still alive.
    """

    def __init__(
        self,
        url: str,
        tokens: list[str],
        script: Path,
        *,
        node: str | None = None,
        concurrency: int = CONNECT_CONCURRENCY,
        local_addresses: Sequence[str] | None = None,
        health_headers: Mapping[str, str] | None = None,
        metrics: Sequence[str] = (METRIC,),
        batched: bool = False,
    ) -> None:
        found = node or shutil.which("node")
        if found is None:
            raise RuntimeError("node is not on PATH")
        if local_addresses is not None and len(local_addresses) != len(tokens):
            raise ValueError(f"{len(local_addresses)} local addresses for {len(tokens)} tokens")
        self.count = len(tokens)
        self.url = url
        self.address_of: list[str] = list(local_addresses or [])
        """Each client's source address (empty: the system's choice)."""
        self.roles: dict[str, str] = {}
        """The role behind each of `address_of`, once connected."""
        self._health_headers = dict(health_headers or {})
        self._command = [found, str(script)]
        self._config: dict[str, Any] = {
            "url": url,
            "tokens": tokens,
            "metric": METRIC,
            "department": WATCHED,
            "concurrency": concurrency,
            "metrics": list(metrics),
            "batched": batched,
        }
        if local_addresses is not None:
            self._config["local_addresses"] = self.address_of
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: Path | None = None
        self.connect_seconds = 0.0
        self.cpu_seconds: list[float] = []
        """One entry (the Node process), from `start()` to the end of the drain."""
        self.waited_seconds: list[float] = []
        self.lag: list[list[float]] = []
        self.drain_seconds = 0.0
        self.frames = 0
        """`dashboard_update` and `dashboard_updates` events received, from `start()` to the end
        of the drain."""
        self.values = 0
        """The updates in them (one per `dashboard_update`)."""
        self._drained = False
        self._waited_at_start = 0.0
        self._drain_cpu = 0.0

    @property
    def pid(self) -> int:
        return self._running().pid

    def __enter__(self) -> NodeWatchers:
        self._temp = tempfile.TemporaryDirectory(prefix="livedash-node-clients-")
        folder = Path(self._temp.name)
        config = folder / "config.json"
        config.write_text(json.dumps(self._config))
        self._stderr = folder / "stderr.log"
        with self._stderr.open("wb") as stderr:
            self._process = subprocess.Popen(
                [*self._command, str(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        process = self._process
        if process is not None:
            # stdout first: stopped early, the script writes its receipts to a closed pipe
            # and dies at once instead of blocking on a full one.
            self._pipe(process.stdout).close()
            with contextlib.suppress(OSError):
                self._pipe(process.stdin).close()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._temp is not None:
            self._temp.cleanup()

    async def connect(self) -> None:
        """Wait until every client has connected, authenticated and subscribed; then, with
        local addresses, learn the role behind each one."""
        started = time.monotonic()
        ready = await self._receive("ready")
        self.connect_seconds = time.monotonic() - started
        if ready["ready"] != self.count:
            raise RuntimeError(f"{ready['ready']} of {self.count} node clients connected")
        if self.address_of:
            self.roles = await roles_behind(self.url, self.address_of, self._health_headers)

    def start(self) -> None:
        self._waited_at_start = run_queue_seconds(self.pid)
        self._send("start")

    async def drain(self, final_value: int, seconds: float) -> None:
        """Wait until every client saw `final_value` (or `seconds` passed)."""
        started = time.monotonic()
        while True:
            self._send("latest")
            answer = await self._receive("latest")
            self._drain_cpu = float(answer["cpu_seconds"])
            self.frames, self.values = int(answer["frames"]), int(answer["values"])
            done = all(value >= final_value for value in answer["latest"])
            if done or time.monotonic() - started >= seconds:
                break
            await asyncio.sleep(POLL_SECONDS)
        self.drain_seconds = time.monotonic() - started
        self._drained = True
        self.cpu_seconds.append(self._drain_cpu)
        self.waited_seconds.append(run_queue_seconds(self.pid) - self._waited_at_start)

    async def collect(self) -> Collected:
        """Every receipt (after `drain`); the clients disconnect and the process exits."""
        self._send("stop")
        receipts: list[Receipt] = []
        while True:
            message = await self._receive("receipts", "stopped")
            if "stopped" in message:
                break
            receipts.extend(Receipt(*receipt) for receipt in message["receipts"])
        self.lag.append([float(sample) for sample in message["lag"]])
        if not self._drained:  # collected without a drain: up to the stop, then
            self.cpu_seconds.append(float(message["cpu_seconds"]))
            self.frames, self.values = int(message["frames"]), int(message["values"])
        receipts.sort(key=lambda receipt: receipt.received)
        return Collected(receipts, [int(value) for value in message["latest"]])

    # -- the pipe --------------------------------------------------------------------------

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the node clients are not running")
        return self._process

    @staticmethod
    def _pipe(pipe: IO[bytes] | None) -> IO[bytes]:
        if pipe is None:
            raise RuntimeError("the node clients have no pipe")
        return pipe

    def _send(self, order: str) -> None:
        stdin = self._pipe(self._running().stdin)
        stdin.write(f"{json.dumps(order)}\n".encode())
        stdin.flush()

    async def _receive(self, *expected: str) -> dict[str, Any]:
        """The next line, which must hold one of the `expected` keys."""
        line = await asyncio.to_thread(self._pipe(self._running().stdout).readline)
        if not line:
            raise RuntimeError(f"the node clients exited without a word:\n{self._stderr_tail()}")
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"the node clients failed: {message['error']}")
        if not any(key in message for key in expected):
            raise RuntimeError(f"the node clients said {line[:200]!r}, not {expected}")
        return message

    def _stderr_tail(self, lines: int = 20) -> str:
        if self._stderr is None or not self._stderr.exists():
            return "(no stderr)"
        text = self._stderr.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(no stderr)"
