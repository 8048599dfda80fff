"""API keys: created, checked and revoked with the functions and with `livedash api-key`."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from livedash.auth.api_keys import (
    ApiKeyAuthenticator,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from livedash.cli import app
from livedash.errors import AuthError, ConfigurationError, Forbidden, StoreError
from livedash.store.engine import write_locking
from tests.support.logs import use_test_logging

KEY = re.compile(r"ldk_[a-z0-9]{8}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def database(database: AsyncEngine) -> AsyncEngine:
    """The test's engine, its transactions taking SQLite's write lock as the CLI's do."""
    return write_locking(database)


async def test_a_key_is_returned_once_and_stored_as_its_hash(
    database: AsyncEngine, database_path: Path
) -> None:
    key = await create_api_key(database, "main-app")
    assert KEY.fullmatch(key)
    with sqlite3.connect(database_path) as connection:
        prefix, stored, scopes = connection.execute(
            "SELECT prefix, key_hash, scopes FROM api_keys"
        ).fetchone()
    assert key.startswith(f"ldk_{prefix}_")
    assert stored == hashlib.sha256(key.encode()).hexdigest()
    assert scopes == '["ingest"]'
    [info] = await list_api_keys(database)
    assert (info.name, info.prefix, info.scopes) == ("main-app", prefix, ("ingest",))
    assert key not in repr(info)
    assert await create_api_key(database, "other") != key


async def test_bad_names_scopes_and_duplicates_are_refused(database: AsyncEngine) -> None:
    await create_api_key(database, "main-app")
    with pytest.raises(StoreError, match="already exists"):
        await create_api_key(database, "main-app")
    with pytest.raises(ConfigurationError, match="unknown scope"):
        await create_api_key(database, "admin", scopes=("admin",))
    with pytest.raises(ConfigurationError, match="name"):
        await create_api_key(database, "")


async def test_authentication_refuses_bad_revoked_and_unscoped_keys(
    database: AsyncEngine,
) -> None:
    keys = ApiKeyAuthenticator(database)
    key = await create_api_key(database, "main-app")
    assert (await keys.authenticate(key, "ingest")).name == "main-app"
    for bad in ("", "ldk_", "Bearer " + key, key + "x", key[:-1] + "!", "x" * 1000):
        with pytest.raises(AuthError):
            await keys.authenticate(bad, "ingest")
    with pytest.raises(Forbidden, match="export"):
        await keys.authenticate(key, "export")
    assert await revoke_api_key(database, "main-app")
    assert not await revoke_api_key(database, "main-app")
    assert not await revoke_api_key(database, "nobody")
    with pytest.raises(AuthError, match="revoked"):
        await keys.authenticate(key, "ingest")


async def test_last_use_is_recorded_at_most_once_a_minute(database: AsyncEngine) -> None:
    keys = ApiKeyAuthenticator(database)
    key = await create_api_key(database, "main-app")
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

    async def last_used() -> datetime | None:
        [info] = await list_api_keys(database)
        return info.last_used_at

    assert await last_used() is None
    await keys.authenticate(key, "ingest", now=start)
    assert await last_used() == start.replace(tzinfo=None)
    await keys.authenticate(key, "ingest", now=start + timedelta(seconds=59))
    assert await last_used() == start.replace(tzinfo=None)
    await keys.authenticate(key, "ingest", now=start + timedelta(seconds=61))
    assert await last_used() == (start + timedelta(seconds=61)).replace(tzinfo=None)


# -- the command ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _logs_on_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # As in production, log events go to stderr; CliRunner swaps (and closes) the streams, so
    # the logger looks the stream up at each event instead of holding on to one.
    def configure(*args: object, **kwargs: object) -> None:
        structlog.configure(
            logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
            cache_logger_on_first_use=False,
        )

    monkeypatch.setattr("livedash.cli.configure_logging", configure)
    yield
    use_test_logging()


def test_the_command_creates_lists_and_revokes_keys(tmp_path: Path) -> None:
    database = tmp_path / "hospital.db"
    runner = CliRunner()
    env = {"LIVEDASH_JWT_SECRET_FILE": str(tmp_path / "secret")}

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["api-key", *args, "--db", str(database)], env=env)
        return result.exit_code, result.stdout, result.stderr

    code, out, err = run("create", "main-app")
    assert code == 0, err
    [key] = KEY.findall(out)
    assert out.strip() == key  # only the key on stdout, for scripts
    assert "cannot be shown again" in " ".join(err.split())
    assert key not in err

    assert run("create", "main-app")[0] == 1
    assert run("create", "admin-app", "--scope", "admin")[0] == 1

    code, out, err = run("list")
    assert code == 0, err
    listing = out + err
    assert "main-app" in listing
    assert key[4:12] in listing  # the prefix
    assert "ingest" in listing
    assert "never" in listing
    assert key not in listing
    assert key[13:] not in listing

    assert run("revoke", "main-app")[0] == 0
    assert run("revoke", "main-app")[0] == 1
    with sqlite3.connect(database) as connection:
        revoked = connection.execute("SELECT revoked_at FROM api_keys").fetchone()[0]
    assert revoked is not None
    assert "main-app" in run("list")[1]


def test_every_api_key_command_explains_itself() -> None:
    runner = CliRunner()
    for command in ("create", "revoke", "list"):
        result = runner.invoke(app, ["api-key", command, "--help"])
        assert result.exit_code == 0
        assert len(result.output.splitlines()) > 3


def test_the_command_makes_a_wall_screens_key_for_a_user_and_refuses_the_wrong_ones(
    tmp_path: Path,
) -> None:
    database = tmp_path / "hospital.db"
    runner = CliRunner()
    env = {"LIVEDASH_JWT_SECRET_FILE": str(tmp_path / "secret")}

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--db", str(database)], env=env)
        return result.exit_code, " ".join((result.stdout + result.stderr).split())

    assert run("user", "add", "wall-ed", "--role", "viewer", "-d", "ED")[0] == 0
    assert run("user", "add", "root", "--role", "super_admin")[0] == 0
    code, out = run("api-key", "create", "ed-wall", "--scope", "dashboard", "--user", "wall-ed")
    assert code == 0, out
    assert KEY.findall(out)
    code, out = run("api-key", "list")
    assert "ed-wall" in out
    assert "dashboard" in out
    assert "wall-ed" in out

    code, out = run("api-key", "create", "root-wall", "--scope", "dashboard", "--user", "root")
    assert code == 1
    assert "super_admin" in out
    code, out = run("api-key", "create", "lost", "--scope", "dashboard")
    assert code == 1
    assert "give the user" in out
    code, out = run("api-key", "create", "main-app", "--user", "wall-ed")
    assert code == 1
    assert "only for it" in out
    with sqlite3.connect(database) as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM api_keys")]
    assert names == ["ed-wall"]
