"""Throwaway PostgreSQL, Redis and nginx processes on free loopback ports.

Started from the binaries installed on the machine, in directories of their own, so that a
test or a bench can kill one on purpose without touching the machine's own services.
PostgreSQL refuses to run as root, so under root its processes run as the `postgres` system
user. nginx runs deploy/nginx.conf of the source checkout this package is imported from, with
only its "site:" lines changed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg

NGINX_CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "nginx.conf"
"""deploy/nginx.conf of the checkout (it is not part of an installed package)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loopback_address(index: int, addresses: int) -> str:
    """The loopback source address of client `index` out of `addresses`: 127.0.0.2, ...

    nginx pins a client by its address (`hash $remote_addr consistent`), so clients that should
    spread over the instances connect from different addresses."""
    number = index % addresses
    return f"127.0.{number // 250}.{2 + number % 250}"


def new_root(prefix: str) -> Path:
    """A fresh directory that every user may enter (PostgreSQL runs as another user)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Block until `port` accepts connections; fail with the server's log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}): {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"server did not listen on {port} in {timeout}s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("postgres")
    if found is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return Path(found).resolve().parent


class PostgresServer:
    """A PostgreSQL cluster with `wal_level=logical`."""

    def __init__(self, root: Path, **overrides: str) -> None:
        self.root = root
        self.overrides = overrides  # server settings instead of the defaults in `start`
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._bin = postgres_bindir()
        self._user: int | None = None
        self._group: int | None = None
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            self._user, self._group = account.pw_uid, account.pw_gid

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def version(self) -> str:
        """The server's major version, from its data directory."""
        with contextlib.suppress(OSError):
            return (self.data / "PG_VERSION").read_text().strip()
        return "?"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` on this server."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        """The libpq DSN of `database` (for asyncpg and psql)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._user is not None and self._group is not None:
            os.chown(self.root, self._user, self._group)
        subprocess.run(
            [self._bin / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
             "--no-sync", "-E", "UTF8", "--no-instructions"],
            check=True, capture_output=True, user=self._user, group=self._group,
        )  # fmt: skip
        return self

    def start(self) -> PostgresServer:
        options = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root),
            "wal_level": "logical",
            "max_replication_slots": "200",
            "max_wal_senders": "20",
            "max_connections": "300",
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "64MB",
            **self.overrides,
        }
        arguments: list[str | Path] = [self._bin / "postgres", "-D", self.data]
        for name, value in options.items():
            arguments += ["-c", f"{name}={value}"]
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            arguments, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            user=self._user, group=self._group,
        )  # fmt: skip
        wait_for_port(self.port, self.process, self.log, 30)
        self._wait_until_accepting(30)
        return self

    def _wait_until_accepting(self, timeout: float) -> None:
        # The port opens before recovery ends ("the database system is starting up").
        deadline = time.monotonic() + timeout
        ready = [str(self._bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while subprocess.run(ready, check=False).returncode != 0:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited: {_tail(self.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {timeout}s: {_tail(self.log)}")
            time.sleep(0.02)

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL to the postmaster), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def crash(self) -> None:
        """kill -9 every process of the server at once (postmaster and backends)."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.process = None

    def recover(self, attempts: int = 10) -> PostgresServer:
        """Start again on the same data directory after a crash (its recovery runs first)."""
        for attempt in range(attempts):
            try:
                return self.start()
            except RuntimeError:
                # An orphan still attached to the old shared memory makes the start fail.
                if self.process is not None:
                    with contextlib.suppress(OSError):
                        self.process.kill()
                        self.process.wait()
                    self.process = None
                if attempt == attempts - 1:
                    raise
                time.sleep(1)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    async def create_database(self, name: str, template: str = "template1") -> str:
        """Create `name` (a copy of `template`); its SQLAlchemy URL."""
        connection = await asyncpg.connect(self.admin_dsn)
        try:
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await connection.close()
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        """Drop `name` and the replication slots on it.

        A slot's reader may still be ending (a test closed its replication connection, the
        server has not yet noticed): it is ended here, waiting up to 5 s for it to exit, or
        the slot stays active and DROP DATABASE refuses, even WITH (FORCE)."""
        connection = await asyncpg.connect(self.admin_dsn)
        try:
            await connection.execute(
                "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots "
                "WHERE database = $1 AND active_pid IS NOT NULL",
                name,
            )
            await connection.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE database = $1 AND NOT active",
                name,
            )
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


class RedisServer:
    """A Redis server without persistence, on a free port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.log = root / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("Redis is not installed: apt-get install redis-server")
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root), "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.port, self.process, self.log, 10)
        return self

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    stop = kill


def render_nginx_config(
    root: Path, port: int, upstreams: list[int], config: Path = NGINX_CONFIG
) -> str:
    """deploy/nginx.conf with only its "site:" lines set for this run."""
    lines: list[str] = []
    upstream_written = False
    for line in config.read_text().splitlines():
        if "# site:" not in line:
            lines.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        setting = line.split()[0]
        if setting == "pid":
            lines.append(f"{indent}pid {root / 'nginx.pid'};")
        elif setting == "error_log":
            lines.append(f"{indent}error_log {root / 'error.log'} warn;")
        elif setting == "client_body_temp_path":
            lines.append(f"{indent}client_body_temp_path {root / 'body'};")
        elif setting == "proxy_temp_path":
            lines.append(f"{indent}proxy_temp_path {root / 'proxy'};")
        elif setting == "listen":
            lines.append(f"{indent}listen 127.0.0.1:{port};")
        elif setting == "server" and not upstream_written:
            upstream_written = True
            rest = line.split(None, 2)[2].split("#")[0].strip()  # the options after the address
            lines.extend(f"{indent}server 127.0.0.1:{p} {rest}" for p in upstreams)
        elif setting != "server":
            raise ValueError(f"unknown site line in nginx.conf: {line}")
    return "\n".join(lines) + "\n"


class NginxServer:
    """nginx in the foreground with deploy/nginx.conf pointed at `upstreams` (and changed by
    `changes`, for benchmarks that compare settings)."""

    def __init__(
        self,
        root: Path,
        upstreams: list[int],
        changes: Sequence[Callable[[str], str]] = (),
    ) -> None:
        self.root = root
        self.port = free_port()
        self.upstreams = upstreams
        self.changes = changes
        self.log = root / "error.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NginxServer:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "nginx.conf"
        text = render_nginx_config(self.root, self.port, self.upstreams)
        for change in self.changes:
            text = change(text)
        config.write_text(text)
        self.process = subprocess.Popen(
            [binary, "-c", str(config), "-p", str(self.root), "-e", str(self.log),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.port, self.process, self.log, 10)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
