"""`livedash demo` as someone trying livedash runs it: one banner to copy from, logs in a file."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import socketio
from typer.testing import CliRunner

from livedash.cli import app
from livedash.testing.recorder import Recorder
from livedash.testing.servers import free_port

JWT = r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"
BANNER_END = "Press Ctrl+C to stop."


@dataclass
class Demo:
    process: asyncio.subprocess.Process
    banner: list[str]
    port: int
    stderr: Path


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """`livedash demo` in its own process, on a narrow terminal; yields it once it printed
    its banner."""
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("LIVEDASH_")
    }
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "livedash", "demo", "--port", str(port)),
            *("--db", str(tmp_path / "data" / "demo.db"), "--speed", "3000"),
            cwd=tmp_path,
            env={**environment, "COLUMNS": "80"},  # rich would wrap the token at 80
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
    assert process.stdout is not None
    banner: list[str] = []
    try:
        async with asyncio.timeout(90):
            while not banner or banner[-1] != BANNER_END:
                line = (await process.stdout.readline()).decode()
                assert line, f"the demo exited: {banner}, {stderr.read_text()}"
                banner.append(line.rstrip("\n"))
        yield Demo(process, banner, port, stderr)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_banner_gives_a_working_url_sign_in_and_token_and_logs_go_to_a_file(
    demo: Demo, tmp_path: Path
) -> None:
    lines = demo.banner
    base = f"http://127.0.0.1:{demo.port}"
    assert lines[0].startswith("livedash demo: ")
    assert f"Dashboard:    {base}/" in lines
    assert "Sign in:      user admin, password admin (demo only)" in lines
    [token_line] = [line for line in lines if line.startswith("API token:    ")]
    token = token_line.removeprefix("API token:    ")
    assert re.fullmatch(JWT, token), token_line  # the whole token, on its one line
    assert len(token_line) > 80  # longer than the terminal: it was not wrapped
    assert f"Skip sign-in: {base}/#token={token}" in lines
    log_file = tmp_path / "data" / "livedash-demo.log"
    assert f"Logs:         {log_file}" in lines
    assert lines[-1] == BANNER_END
    assert len(lines) == 7  # the banner only: no log line on stdout

    async with httpx.AsyncClient(base_url=base) as http:
        page = await http.get("/")
        assert page.status_code == 200
        departments = await http.get(
            "/api/departments", headers={"Authorization": f"Bearer {token}"}
        )
        assert departments.status_code == 200, departments.text
        seeded = re.match(r"livedash demo: (\d+) departments", lines[0])
        assert seeded is not None, lines[0]
        assert len(departments.json()["items"]) == int(seeded[1])
        signed_in = await http.post(
            "/api/auth/login", json={"username": "admin", "password": "admin"}
        )
        assert signed_in.status_code == 200, signed_in.text

    client = socketio.AsyncClient(reconnection=False)
    screen = Recorder(client)
    await client.connect(base, auth={"token": token}, transports=["websocket"])
    try:
        authenticated = await screen.next("authenticated")
        assert (authenticated["sub"], authenticated["role"]) == ("admin", "super_admin")
        await client.call("subscribe_metrics", timeout=10)
        await screen.next("metrics_snapshot")
        update = await screen.next("dashboard_update", within=30)  # the simulator at work
        assert update["version"] > 0
    finally:
        await client.disconnect()

    demo.process.send_signal(signal.SIGINT)
    assert demo.process.stdout is not None
    async with asyncio.timeout(30):
        rest = await demo.process.stdout.read()
        assert await demo.process.wait() == 0
    assert rest == b""  # nothing more on stdout either, while it served and stopped
    logged = log_file.read_text()
    assert "login_succeeded" in logged  # the service's events went to the file
    assert "login_succeeded" not in demo.stderr.read_text()


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # For the in-process runs: the test run's logging stays as it is.
    monkeypatch.setattr("livedash.cli.configure_logging", lambda *args, **kwargs: None)


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        database = tmp_path / "demo.db"
        result = CliRunner().invoke(
            app, ["demo", "--port", str(port), "--db", str(database)], env={"COLUMNS": "200"}
        )
    assert result.exit_code == 1
    assert f"Cannot serve on 127.0.0.1:{port}: the port is in use. Try --port." in result.stderr
    assert not database.exists()  # refused before migrating
