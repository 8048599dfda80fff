"""The `livedash` command, as a hospital IT person runs it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
import typer
from asyncinotify import Inotify, Mask
from typer.core import TyperGroup
from typer.testing import CliRunner

from livedash.auth.tokens import verify_token
from livedash.cli import app
from livedash.settings import Settings
from livedash.store.models import Role
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


def _commands(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command under `group`, as the words that name it."""
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_every_command_explains_itself_with_an_example() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    commands = _commands(group)
    wanted = {
        ("demo",),
        ("serve",),
        ("simulate",),
        ("migrate",),
        ("token",),
        ("user", "add"),
        ("user", "list"),
        ("user", "disable"),
        ("user", "enable"),
        ("user", "password"),
        ("api-key", "create"),
        ("doctor",),
        ("report", "generate"),
        ("alerts", "list"),
        ("alerts", "silence"),
        ("bench",),
        ("settings-doc",),
        ("vapid-keys",),
    }
    assert wanted <= set(commands)
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, command
        assert "Example: " in result.output, command
        assert len(result.output.splitlines()) > 6, command


async def test_simulate_writes_hospital_activity_until_stopped(tmp_path: Path) -> None:
    database = tmp_path / "training.db"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "livedash", "simulate", "--db", str(database), "--speed", "3000"),
        cwd=tmp_path,
        env={**os.environ, **_env(tmp_path), "LIVEDASH_LOG_LEVEL": "warning"},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(60):
            while b"Simulating" not in (line := await process.stderr.readline()):
                assert line, "the simulator exited before simulating"
        assert re.match(rb"Simulating \d+ departments, \d+ beds at 3000x real time", line)

        def changes() -> int:
            with sqlite3.connect(database) as connection:
                return int(connection.execute("SELECT count(*) FROM change_log").fetchone()[0])

        with Inotify() as inotify:  # each commit writes the database's files
            inotify.add_watch(tmp_path, Mask.MODIFY)
            seeded = changes()
            async with asyncio.timeout(30):
                async for _written in inotify:
                    if changes() > seeded:  # the hospital's rows change, as its application's
                        break
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
            rest = (await process.stderr.read()).decode()
        assert re.search(r"Simulator stopped after [1-9]\d* events \(", rest), rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
