"""The `livedash` command, as a hospital IT person runs it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import socketio
from typer.testing import CliRunner

from livedash.auth.tokens import verify_token
from livedash.cli import app
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.recorder import Recorder
from tests.support.schema import head_revision


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI configures logging for its process; in here that process is the test run,
    # whose output streams CliRunner swaps out and closes.
    monkeypatch.setattr("livedash.cli.configure_logging", lambda *args, **kwargs: None)


def _env(tmp_path: Path) -> dict[str, str]:
    return {"LIVEDASH_JWT_SECRET_FILE": str(tmp_path / "secret")}


def test_token_is_signed_with_the_configured_key(tmp_path: Path) -> None:
    database = str(tmp_path / "hospital.db")
    runner = CliRunner()
    added = runner.invoke(
        app,
        ["user", "add", "ann", "--role", "admin", "-d", "CARD", "--db", database],
        env=_env(tmp_path),
    )
    assert added.exit_code == 0, added.output
    assert "Created 'ann'" in added.output
    result = runner.invoke(
        app,
        [*("token", "--role", "admin", "-d", "ED", "-d", "CARD"), "--sub", "ann", "--db", database],
        env=_env(tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # an active user: nothing to warn about
    settings = Settings(jwt_secret_file=tmp_path / "secret", _env_file=None)  # type: ignore[call-arg]
    principal = verify_token(settings, result.stdout.strip())
    assert principal.subject == "ann"
    assert principal.role is Role.ADMIN
    assert principal.departments == {"ED", "CARD"}


def test_a_token_for_an_unknown_or_inactive_user_comes_with_a_warning(tmp_path: Path) -> None:
    database = str(tmp_path / "hospital.db")
    runner = CliRunner()
    ghost = runner.invoke(app, ["token", "--sub", "ghost", "--db", database], env=_env(tmp_path))
    assert ghost.exit_code == 0
    assert "not an active user" in ghost.stderr
    assert "livedash user add ghost" in ghost.stderr
    assert ghost.stdout.count(".") == 2  # still a token on stdout, for scripts
    for args in (["--role", "viewer"], ["--role", "viewer", "--inactive"]):
        saved = runner.invoke(app, ["user", "add", "bob", *args, "--db", database])
        assert saved.exit_code == 0, saved.output
    assert "Updated 'bob'" in saved.output
    with sqlite3.connect(database) as connection:
        assert connection.execute(
            "SELECT role, departments, active FROM users WHERE username = 'bob'"
        ).fetchone() == ("viewer", "[]", 0)
    inactive = runner.invoke(app, ["token", "--sub", "bob", "--db", database], env=_env(tmp_path))
    assert "not an active user" in inactive.stderr


def test_bad_role_is_refused_with_the_choices(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["token", "--role", "root"], env=_env(tmp_path))
    assert result.exit_code == 2
    assert "super_admin" in result.output


def test_migrate_creates_the_database(tmp_path: Path) -> None:
    database = tmp_path / "data" / "hospital.db"
    result = CliRunner().invoke(app, ["migrate", "--db", str(database)], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    with sqlite3.connect(database) as connection:
        version = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == (head_revision(),)


def test_revoke_signs_a_user_out_or_refuses_one_token(tmp_path: Path) -> None:
    database = tmp_path / "hospital.db"
    runner = CliRunner()
    assert runner.invoke(app, ["migrate", "--db", str(database)], env=_env(tmp_path)).exit_code == 0
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO users (username, role, departments, active) "
            "VALUES ('ann', 'admin', '[]', 1)"
        )

    def revoke(*args: str) -> int:
        return runner.invoke(
            app, ["revoke", *args, "--db", str(database)], env=_env(tmp_path)
        ).exit_code

    assert revoke("--user", "ann") == 0
    assert revoke("--jti", "token-1", "--reason", "laptop stolen") == 0
    assert revoke("--user", "nobody") == 1
    assert revoke() == 2
    assert revoke("--user", "ann", "--jti", "token-1") == 2
    with sqlite3.connect(database) as connection:
        signed_out = connection.execute("SELECT tokens_valid_after FROM users").fetchone()[0]
        revoked = connection.execute("SELECT jti, reason FROM revoked_tokens").fetchall()
    assert signed_out is not None
    assert revoked == [("token-1", "laptop stolen")]


def test_every_command_explains_itself() -> None:
    runner = CliRunner()
    for command in ("demo", "serve", "migrate", "simulate", "token", "revoke", "api-doc"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert len(result.output.splitlines()) > 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`livedash demo` in its own process; yields it and the URL it prints."""
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livedash",
        "demo",
        "--port",
        str(port),
        "--db",
        str(tmp_path / "demo.db"),
        "--speed",
        "3000",
        cwd=tmp_path,
        env={**os.environ, "LIVEDASH_LOG_LEVEL": "warning"},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "the demo exited before printing its URL"
            if line.startswith("http://"):
                break
    try:
        yield process, line.strip()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_demo_serves_a_live_hospital_and_stops_cleanly(
    demo: tuple[asyncio.subprocess.Process, str],
) -> None:
    process, url = demo
    match = re.fullmatch(r"(http://127\.0\.0\.1:\d+)/#token=(\S+)", url)
    assert match is not None, url
    base, token = match.groups()
    async with httpx.AsyncClient(base_url=base) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert "socket.io.min.js" in page.text
        assert (await http.get("/health")).json()["status"] == "ok"

    client = socketio.AsyncClient(reconnection=False)
    screen = Recorder(client)
    await client.connect(base, auth={"token": token}, transports=["websocket"])
    try:
        authenticated = await screen.next("authenticated")
        assert (authenticated["sub"], authenticated["role"]) == ("admin", "super_admin")
        await client.call("subscribe_metrics", timeout=10)
        snapshot = await screen.next("metrics_snapshot")
        beds = {v["value"] for v in snapshot["values"] if v["metric"] == "beds_total"}
        assert max(beds) >= 250  # the seeded hospital
        update = await screen.next("dashboard_update", within=30)  # the simulator at work
        assert update["version"] > 0
    finally:
        await client.disconnect()

    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(20):
        assert await process.wait() == 0
