"""The bare socket.io servers every bench measures livedash next to (bench/baselines/).

- `node socket.io`: bench/baselines/node_server.js, the npm `socket.io` server alone (from this
  repository's node_modules: `npm install`);
- `python-socketio`: bench/baselines/python_server.py, python-socketio's AsyncServer under
  uvicorn alone.

Each answers a client as livedash does (`authenticated` once connected, `subscribe_metrics`
acknowledged after joining the one room), checks no token, and broadcasts on `GET /start`.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Collection
from pathlib import Path

from livedash.testing.child import ChildServer
from livedash.testing.cores import on_cpus

HERE = Path(__file__).resolve().parent
NODE = "node socket.io"
PYTHON = "python-socketio"
HEALTH_SECONDS = 30.0


class BaselineProcess(ChildServer):
    """A baseline server (`command` + `--port`) in a child process, stopped at the end; with
    `cpus`, on those CPUs only."""

    def __init__(
        self, command: list[str], workdir: Path, name: str, cpus: Collection[int] | None = None
    ) -> None:
        super().__init__(workdir / f"{name}.log")
        self._command = on_cpus([*command, "--port", str(self.port)], cpus)

    def __enter__(self) -> BaselineProcess:
        self.spawn(self._command, HERE.parent)
        return self

    def get(self, path: str) -> dict[str, object]:
        """GET `path` as JSON (blocking)."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            body: dict[str, object] = json.loads(response.read())
        return body

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_SECONDS
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                raise RuntimeError(f"{self.log_path.stem} exited:\n{self.log_tail()}")
            try:
                self.get("/health")
            except OSError:
                time.sleep(0.1)
            else:
                return
        raise RuntimeError(f"{self.url}/health did not answer in {HEALTH_SECONDS:g} s")

    def wait_sent(self, count: int) -> None:
        """Block until the server has emitted `count` values."""
        while int(str(self.get("/health")["sent"])) < count:
            time.sleep(0.05)


def baseline_command(scenario: str, rate: float, count: int) -> list[str]:
    options = ["--rate", f"{rate:g}", "--count", str(count)]
    if scenario == NODE:
        return ["node", str(HERE / "baselines" / "node_server.js"), *options]
    return [sys.executable, str(HERE / "baselines" / "python_server.py"), *options]
