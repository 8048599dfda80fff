"""`livedash serve` in a child process, watched from outside as an operator would.

The service runs as its own process (`python -m livedash serve`), so that neither a bench's
clients nor its writer share its event loop, and so that it can be killed -9 and started again
on the same port. Its working directory is a temporary one (no stray `.env` of the caller's
reaches it) and `PYTHONPATH` decides which source tree runs. Its `/health`, memory and CPU time
are read from outside; each life's log is kept apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from livedash.settings import Settings
from livedash.testing import usage
from livedash.testing.child import ChildServer
from livedash.testing.cores import on_cpus

HEALTH_DEADLINE_SECONDS = 30.0
MANY_CLIENTS = {"LIVEDASH_RATE_LIMIT_CONNECTIONS_PER_IP": "100000/minute"}
"""A bench's clients all connect from 127.0.0.1 (or from nginx) at once."""


class ServiceProcess(ChildServer):
    """One `livedash serve`: `start()`/`stop()` (or `with`), `kill()` -9 and `restart()`.

    `env` is added to the caller's environment; with `isolated`, none of the caller's own
    `LIVEDASH_*` variables reaches the service (a deployment's settings are all given).
    `health_token`, a super_admin's, is sent to read `/health`'s details. With `cpus`, it
    runs on those CPUs only (`livedash.testing.cores`).
    """

    def __init__(
        self,
        workdir: Path,
        secret: str,
        *,
        db: Path | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        isolated: bool = False,
        name: str = "server",
        health_token: str | None = None,
        cpus: Collection[int] | None = None,
    ) -> None:
        super().__init__(workdir / f"{name}.log", port)
        self.health_headers = {"Authorization": f"Bearer {health_token}"} if health_token else {}
        self.lives = 0
        command = [sys.executable, "-m", "livedash", "serve"]
        if db is not None:
            command += ["--db", str(db)]
        command += ["--port", str(self.port), "--host", "127.0.0.1"]
        self._command = on_cpus(command, cpus)
        inherited = dict(os.environ)
        if isolated:
            inherited = {k: v for k, v in inherited.items() if not k.startswith("LIVEDASH_")}
        self._env = {
            **inherited,
            "LIVEDASH_JWT_SECRET": secret,
            "LIVEDASH_JWT_SECRET_FILE": str(workdir / "unused-secret"),
            "LIVEDASH_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self._workdir = workdir

    def package(self) -> Path:
        """Where the service imports `livedash` from (its environment's PYTHONPATH decides)."""
        found = subprocess.run(
            [sys.executable, "-c", "import livedash; print(livedash.__file__)"],
            env=self._env,
            cwd=self._workdir,
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(found.stdout.strip()).parent

    def start(self) -> ServiceProcess:
        """Start a (new) life; the log of the previous one is kept as `NAME.N.log`."""
        if self.lives:
            with contextlib.suppress(OSError):
                self.log_path.rename(self.log_path.with_suffix(f".{self.lives}.log"))
        self.lives += 1
        self.spawn(self._command, self._workdir, self._env)
        return self

    def kill(self) -> None:
        """kill -9, as a crash."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self) -> ServiceProcess:
        """Start again on the same port (after `kill` or `stop`)."""
        return self.start()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def wait_healthy(self, seconds: float = HEALTH_DEADLINE_SECONDS) -> float:
        """Seconds until GET /health answered 200; raises if the service died or never did."""
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError("the service exited during start-up")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/health", timeout=1) as response,
            ):
                if response.status == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"/health did not answer 200 in {seconds:g} s")

    def health(self) -> dict[str, Any]:
        """GET /health as JSON, whatever its status (blocking)."""
        request = urllib.request.Request(f"{self.url}/health", headers=self.health_headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        return body

    def rss_kb(self) -> int:
        """Resident memory of the service's processes (its socket workers too)."""
        return usage.tree_rss_kb(self.pid) or 0

    def cpu_seconds(self) -> float:
        return usage.cpu_seconds(self.pid)

    def logs(self) -> list[Path]:
        """The log of every life, the current one first."""
        return [self.log_path, *sorted(self.log_path.parent.glob(f"{self.log_path.stem}.*.log"))]


def wait_for_leader(services: Sequence[ServiceProcess]) -> tuple[float, list[str]]:
    """Block until exactly one service reports itself leader; the seconds it took, and each
    one's role."""
    started = time.monotonic()
    while True:
        roles = [str(service.health().get("role", "?")) for service in services]
        if roles.count("leader") == 1:
            return time.monotonic() - started, roles
        if time.monotonic() - started > HEALTH_DEADLINE_SECONDS:
            raise RuntimeError(f"no single leader in {HEALTH_DEADLINE_SECONDS:g} s: {roles}")
        time.sleep(0.1)


def bench_settings(database_url: str, workdir: Path) -> Settings:
    """Settings with a fresh signing key, for a bench's tokens and the services it starts
    (`settings.signing_key()` is the secret to hand them)."""
    return Settings(
        database_url=database_url,
        jwt_secret=secrets.token_urlsafe(32),
        jwt_secret_file=workdir / "unused-secret",
        _env_file=None,
    )


def begin_bench() -> None:
    """Print the command line, so that every figure printed after it can be rerun, and let
    SIGTERM stop the bench as Ctrl-C does (its `finally` blocks stop what it started)."""
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
