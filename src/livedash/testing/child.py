"""A server program in a child process on a free loopback port, its output in a log file.

What `livedash serve` as the tests and benches run it (`service.ServiceProcess`) and the
benches' bare socket.io baselines (bench/baseline_servers.py) have in common: the port and URL,
the process, a graceful stop, and the log's last lines when something goes wrong.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from livedash.testing.servers import free_port

STOP_SECONDS = 10.0


class ChildServer:
    """A server in a child process, listening on `port` (a free one by default)."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.log_path.stem} is not running")
        return self._process.pid

    def spawn(
        self, command: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
    ) -> None:
        """Start `command`, its output written to `log_path` (anew)."""
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL after STOP_SECONDS."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def exit_code(self) -> int | None:
        """The exit status once the process has ended (None: running, or never started)."""
        return self._process.poll() if self._process is not None else None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"
