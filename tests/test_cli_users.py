"""`livedash user …` against a running service: what the command says, and what the service
then refuses or allows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from livedash.cli import app
from livedash.settings import Settings
from tests.support.live import Connect, Serve

RECHECK_SECONDS = 0.2


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI configures logging for its process; in here that process is the test run,
    # whose output streams CliRunner swaps out and closes.
    monkeypatch.setattr("livedash.cli.configure_logging", lambda *args, **kwargs: None)


async def livedash(database: Path, *args: str, given: str | None = None) -> Result:
    """`livedash ARGS --db DATABASE`, in a thread (the command runs its own event loop)."""
    environment = {"COLUMNS": "200"}  # a table row on one line
    return await asyncio.to_thread(
        CliRunner().invoke, app, [*args, "--db", str(database)], input=given, env=environment
    )


def row(result: Result, user: str) -> list[str]:
    """The cells of `user`'s row in `user list`'s table."""
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if cells and cells[0] == user:
            return cells
    raise AssertionError(f"no row for {user!r} in:\n{result.stdout}")


async def test_a_disabled_user_is_refused_at_once_and_can_be_enabled_again(
    serve: Serve, settings: Settings, database_path: Path, connect: Connect
) -> None:
    server = await serve(settings.model_copy(update={"auth_recheck_seconds": RECHECK_SECONDS}))
    added = await livedash(database_path, "user", "add", "ann", "--role", "admin", "-d", "ED")
    assert added.exit_code == 0, added.output
    password = await livedash(
        database_path, "user", "password", "ann", "--password-stdin", given="s3cret pass\n"
    )
    assert password.exit_code == 0, password.output
    before = await livedash(database_path, "user", "list")
    assert row(before, "ann") == ["ann", "admin", "ED", "enabled", "set", "never"]

    async with httpx.AsyncClient(base_url=server.url) as http:

        async def sign_in() -> httpx.Response:
            return await http.post(
                "/api/auth/login", json={"username": "ann", "password": "s3cret pass"}
            )

        def departments(access: str) -> Any:
            return http.get("/api/departments", headers={"Authorization": f"Bearer {access}"})

        signed_in = await sign_in()
        assert signed_in.status_code == 200, signed_in.text
        access, refresh = signed_in.json()["access_token"], signed_in.json()["refresh_token"]
        assert (await departments(access)).status_code == 200
        screen = await connect(server, access)
        listed = await livedash(database_path, "user", "list")
        assert row(listed, "ann")[-1].startswith(f"{datetime.now(UTC):%Y-%m-%d} ")

        disabled = await livedash(database_path, "user", "disable", "ann")
        assert disabled.exit_code == 0, disabled.output
        assert "Disabled 'ann'" in disabled.stderr
        # The open dashboard is told, and every way back in is refused.
        refusal = await screen.next("auth_error", within=RECHECK_SECONDS * 20)
        assert refusal["code"] == "invalid_token"
        assert (await departments(access)).status_code == 401
        refreshed = await http.post("/api/auth/refresh", json={"refresh_token": refresh})
        assert refreshed.status_code == 401
        assert (await sign_in()).status_code == 401
        assert row(await livedash(database_path, "user", "list"), "ann")[3] == "disabled"

        enabled = await livedash(database_path, "user", "enable", "ann")
        assert enabled.exit_code == 0, enabled.output
        again = await sign_in()
        assert again.status_code == 200, again.text
        renewed = await http.post(
            "/api/auth/refresh", json={"refresh_token": again.json()["refresh_token"]}
        )
        assert renewed.status_code == 200, renewed.text  # a new session goes on
        assert (await departments(access)).status_code == 401  # the old token stays refused
        old_session = await http.post("/api/auth/refresh", json={"refresh_token": refresh})
        assert old_session.status_code == 401


async def test_unknown_users_and_the_table_of_several(database_path: Path) -> None:
    for name, role, departments in (
        ("zed", "viewer", ["-d", "CARD", "-d", "ED"]),
        ("boss", "super_admin", []),
    ):
        added = await livedash(database_path, "user", "add", name, "--role", role, *departments)
        assert added.exit_code == 0, added.output
    listed = await livedash(database_path, "user", "list")
    assert listed.exit_code == 0
    assert row(listed, "zed") == ["zed", "viewer", "CARD, ED", "enabled", "none", "never"]
    assert row(listed, "boss")[:3] == ["boss", "super_admin", "all"]
    assert listed.stdout.index("boss") < listed.stdout.index("zed")  # by name

    for command in ("disable", "enable"):
        unknown = await livedash(database_path, "user", command, "nobody")
        assert unknown.exit_code == 1
        assert "There is no user named 'nobody'" in unknown.stderr
