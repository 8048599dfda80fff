"""Sign-in sessions: passwords, rotating refresh tokens, reuse detection, idle timeout."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from livedash.auth.sessions import (
    SessionService,
    hash_password,
    run_set_password,
    set_password,
    verify_password,
)
from livedash.auth.tokens import verify_token
from livedash.errors import InvalidToken
from livedash.settings import Settings
from livedash.store.engine import create_engine
from livedash.store.models import Role
from tests.conftest import LiveServer, Serve, Users
from tests.test_web import CHROMIUM, CHROMIUM_ARGS


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, writer=True)
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sessions(settings: Settings, database: AsyncEngine, clock: Clock) -> SessionService:
    return SessionService(settings, database, now=clock)


@pytest.fixture
async def ann(users: Users, database: AsyncEngine) -> str:
    users.save("ann", Role.ADMIN, ["ED"])
    assert await set_password(database, "ann", "correct horse")
    return "ann"


def execute(database_path: Path, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
    connection = sqlite3.connect(database_path, isolation_level=None)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


# -- passwords ------------------------------------------------------------------------------


def test_password_hashes_verify_and_differ_per_salt() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_password("s3cret", first)
    assert verify_password("s3cret", second)
    assert not verify_password("s3cret ", first)
    assert not verify_password("s3cret", "not a hash")
    assert not verify_password("s3cret", "bcrypt$1$2$3$aa$bb")


# -- login ----------------------------------------------------------------------------------


async def test_login_issues_an_access_token_with_the_users_role(
    sessions: SessionService, settings: Settings, ann: str
) -> None:
    pair = await sessions.login(ann, "correct horse")
    principal = verify_token(settings, pair.access_token)
    assert (principal.subject, principal.role, principal.departments) == (
        "ann",
        Role.ADMIN,
        frozenset({"ED"}),
    )
    assert pair.expires_in == settings.access_token_minutes * 60
    lifetime = principal.expires_at - principal.issued_at
    assert lifetime == timedelta(minutes=settings.access_token_minutes)


async def test_login_failures_say_the_same_thing(
    sessions: SessionService, users: Users, ann: str, database_path: Path
) -> None:
    users.save("nopass", Role.VIEWER, [])
    messages = set()
    for username, password in (
        (ann, "wrong"),
        ("nobody", "correct horse"),
        ("nopass", ""),
        ("nopass", "anything"),
    ):
        with pytest.raises(InvalidToken) as caught:
            await sessions.login(username, password)
        messages.add(caught.value.message)
    execute(database_path, "UPDATE users SET active = 0 WHERE username = 'ann'")
    with pytest.raises(InvalidToken) as caught:
        await sessions.login(ann, "correct horse")
    messages.add(caught.value.message)
    assert messages == {"wrong user name or password"}


# -- refresh --------------------------------------------------------------------------------


async def test_refresh_rotates_the_token(
    sessions: SessionService, settings: Settings, ann: str, database_path: Path
) -> None:
    first = await sessions.login(ann, "correct horse")
    second = await sessions.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert verify_token(settings, second.access_token).subject == "ann"
    third = await sessions.refresh(second.refresh_token)
    rows = execute(database_path, "SELECT family_id, used_at IS NOT NULL FROM refresh_tokens")
    assert len({family for family, _ in rows}) == 1
    assert sorted(used for _, used in rows) == [0, 1, 1]
    # Only hashes are stored; the id in front of the token finds its row.
    stored = {h for (h,) in execute(database_path, "SELECT token_hash FROM refresh_tokens")}
    assert third.refresh_token not in stored
    token_id = third.refresh_token.split(".")[0]
    assert execute(database_path, "SELECT 1 FROM refresh_tokens WHERE id = ?", (token_id,))


async def test_reusing_an_old_token_revokes_the_whole_family(
    sessions: SessionService, ann: str, database_path: Path
) -> None:
    first = await sessions.login(ann, "correct horse")
    second = await sessions.refresh(first.refresh_token)
    other = await sessions.login(ann, "correct horse")  # another session, left alone
    with pytest.raises(InvalidToken) as caught:
        await sessions.refresh(first.refresh_token)
    assert caught.value.details["reason"] == "reused"
    with pytest.raises(InvalidToken) as caught:
        await sessions.refresh(second.refresh_token)  # the newest of the family too
    assert caught.value.details["reason"] == "revoked"
    revoked = execute(
        database_path, "SELECT COUNT(*) FROM refresh_tokens WHERE revoked_at NOT NULL"
    )
    assert revoked == [(2,)]
    assert (await sessions.refresh(other.refresh_token)).username == "ann"


async def test_unknown_and_forged_refresh_tokens_are_refused(
    sessions: SessionService, ann: str
) -> None:
    pair = await sessions.login(ann, "correct horse")
    token_id = pair.refresh_token.split(".")[0]
    for bad in ("", "no-dot", "nope.nope", f"{token_id}.forged", "x" * 1000):
        with pytest.raises(InvalidToken):
            await sessions.refresh(bad)
    assert await sessions.refresh(pair.refresh_token)  # a forgery did not use it up


async def test_expired_tokens_are_refused(
    settings: Settings, database: AsyncEngine, ann: str, clock: Clock
) -> None:
    # A long idle timeout, so that only the session's lifetime ends it.
    lasting = settings.model_copy(update={"refresh_token_days": 1, "idle_timeout_minutes": 5000})
    sessions = SessionService(lasting, database, now=clock)
    pair = await sessions.login(ann, "correct horse")
    clock.advance(hours=23)
    pair = await sessions.refresh(pair.refresh_token)  # rotation keeps the session's expiry
    clock.advance(hours=1, seconds=1)
    with pytest.raises(InvalidToken) as caught:
        await sessions.refresh(pair.refresh_token)
    assert caught.value.details["reason"] == "expired"


async def test_idle_sessions_time_out(
    sessions: SessionService, settings: Settings, ann: str, clock: Clock
) -> None:
    idle = settings.idle_timeout_minutes
    pair = await sessions.login(ann, "correct horse")
    for _ in range(3):  # each refresh restarts the idle clock
        clock.advance(minutes=idle - 1)
        pair = await sessions.refresh(pair.refresh_token)
    clock.advance(minutes=idle, seconds=1)
    with pytest.raises(InvalidToken) as caught:
        await sessions.refresh(pair.refresh_token)
    assert caught.value.details["reason"] == "idle"
    clock.moment -= timedelta(minutes=idle)  # even back in time, the session stays ended
    with pytest.raises(InvalidToken):
        await sessions.refresh(pair.refresh_token)


async def test_concurrent_refreshes_of_one_token_let_exactly_one_through(
    settings: Settings, database_url: str, ann: str
) -> None:
    # Two engines, as two service processes would have.
    engines = [create_engine(database_url, writer=True) for _ in range(2)]
    try:
        services = [SessionService(settings, engine) for engine in engines]
        pair = await services[0].login(ann, "correct horse")
        results = await asyncio.gather(
            *(service.refresh(pair.refresh_token) for service in services * 2),
            return_exceptions=True,
        )
    finally:
        for engine in engines:
            await engine.dispose()
    won = [result for result in results if not isinstance(result, BaseException)]
    lost = [result for result in results if isinstance(result, BaseException)]
    assert len(won) == 1
    assert all(isinstance(error, InvalidToken) for error in lost), lost


async def test_signing_a_user_out_or_deactivating_them_ends_their_sessions(
    sessions: SessionService, ann: str, clock: Clock, database_path: Path
) -> None:
    before = await sessions.login(ann, "correct horse")
    clock.advance(seconds=5)
    later = clock.moment.replace(tzinfo=None).isoformat(sep=" ")
    clock.advance(seconds=5)
    after = await sessions.login(ann, "correct horse")
    execute(database_path, "UPDATE users SET tokens_valid_after = ?", (later,))
    with pytest.raises(InvalidToken) as caught:
        await sessions.refresh(before.refresh_token)
    assert caught.value.details["reason"] == "signed_out"
    after = await sessions.refresh(after.refresh_token)  # started later: still valid

    execute(database_path, "UPDATE users SET active = 0")
    with pytest.raises(InvalidToken) as caught:
        await sessions.refresh(after.refresh_token)
    assert caught.value.details["reason"] == "inactive"


async def test_logout_ends_the_session(sessions: SessionService, ann: str) -> None:
    pair = await sessions.login(ann, "correct horse")
    assert await sessions.logout(pair.refresh_token) == "ann"
    with pytest.raises(InvalidToken):
        await sessions.refresh(pair.refresh_token)
    with pytest.raises(InvalidToken):
        await sessions.logout("unknown.token")


# -- REST -----------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_rest_login_refresh_and_reuse(server: LiveServer, ann: str) -> None:
    with capture_logs() as logs:
        body, new = await _login_refresh_and_reuse(server)
    events = [(entry["event"], entry.get("user")) for entry in logs if "user" in entry]
    assert ("login_failed", "ann") in events
    assert ("login_succeeded", "ann") in events
    assert ("refresh_reuse_detected", "ann") in events
    logged = repr(logs)
    for secret in ("correct horse", body["refresh_token"], new["refresh_token"]):
        assert secret not in logged
    assert body["access_token"] not in logged


async def _login_refresh_and_reuse(server: LiveServer) -> tuple[dict[str, Any], dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        wrong = await client.post("/api/auth/login", json={"username": "ann", "password": "wrong"})
        assert wrong.status_code == 401
        assert wrong.json()["message"] == "wrong user name or password"

        login = await client.post(
            "/api/auth/login", json={"username": "ann", "password": "correct horse"}
        )
        assert login.status_code == 200, login.text
        body = login.json()
        assert body["token_type"] == "bearer"
        assert login.headers["cache-control"] == "no-store"
        assert body["expires_in"] == server.settings.access_token_minutes * 60
        metrics = await client.get("/api/metrics", headers=bearer(body["access_token"]))
        assert metrics.status_code == 200

        refreshed = await client.post(
            "/api/auth/refresh", json={"refresh_token": body["refresh_token"]}
        )
        assert refreshed.status_code == 200
        new = refreshed.json()
        assert (await client.get("/api/metrics", headers=bearer(new["access_token"]))).is_success

        reuse = await client.post(
            "/api/auth/refresh", json={"refresh_token": body["refresh_token"]}
        )
        assert reuse.status_code == 401
        newest = await client.post(
            "/api/auth/refresh", json={"refresh_token": new["refresh_token"]}
        )
        assert newest.status_code == 401

        oversized = await client.post(
            "/api/auth/login", json={"username": "ann", "password": "x" * 5000}
        )
        assert oversized.status_code == 422
    return body, new


async def test_rest_logout(server: LiveServer, ann: str) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        login = await client.post(
            "/api/auth/login", json={"username": "ann", "password": "correct horse"}
        )
        token = login.json()["refresh_token"]
        assert (
            await client.post("/api/auth/logout", json={"refresh_token": token})
        ).status_code == 204
        gone = await client.post("/api/auth/refresh", json={"refresh_token": token})
        assert gone.status_code == 401


async def test_login_attempts_are_limited_per_user_name(server: LiveServer, ann: str) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(10):
            answer = await client.post(
                "/api/auth/login", json={"username": "ann", "password": "guess"}
            )
            assert answer.status_code == 401
        limited = await client.post(
            "/api/auth/login", json={"username": "ann", "password": "correct horse"}
        )
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert 0 < limited.json()["retry_after"] <= 60
        assert limited.headers["retry-after"] == str(limited.json()["retry_after"])
        # Another user name is still let in from the same address.
        other = await client.post("/api/auth/login", json={"username": "bob", "password": "x"})
        assert other.status_code == 401


# -- the page -------------------------------------------------------------------------------


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A fresh page in the system's Chromium whose script errors fail the test."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        errors: list[Exception] = []
        page.on("pageerror", lambda error: errors.append(error))
        yield page
        await browser.close()
    assert not errors, f"the page threw: {errors}"


async def sign_in(page: Page, server: LiveServer) -> None:
    await page.goto(server.url)
    await page.fill("#username", "ann")
    await page.fill("#password", "correct horse")
    await page.click("#password-login button[type=submit]")
    await expect(page.locator("#connection")).to_have_text("Live")


async def test_the_page_signs_in_with_a_password_and_goes_live(
    server: LiveServer, ann: str, page: Page
) -> None:
    await sign_in(page, server)
    await expect(page.locator("#user")).to_contain_text("ann")
    stored = await page.evaluate("sessionStorage.getItem('livedash.refresh')")
    assert stored is not None
    assert "." in stored
    assert await page.evaluate("sessionStorage.getItem('livedash.token')") is None
    await page.click("#sign-out")
    await expect(page.locator("#password-login")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('livedash.refresh')") is None


async def test_the_page_refreshes_its_token_and_ends_a_revoked_session(
    serve: Serve, settings: Settings, ann: str, page: Page, database_path: Path
) -> None:
    # One-minute access tokens: the page refreshes them at once (at least 5 s ahead).
    server = await serve(settings.model_copy(update={"access_token_minutes": 1}))
    await page.clock.install()
    await sign_in(page, server)
    first = await page.evaluate("sessionStorage.getItem('livedash.refresh')")
    await page.clock.fast_forward(6000)
    await page.wait_for_function(
        "first => sessionStorage.getItem('livedash.refresh') !== first", arg=first
    )
    await expect(page.locator("#connection")).to_have_text("Live")

    execute(database_path, "UPDATE refresh_tokens SET revoked_at = '2000-01-01 00:00:00'")
    await page.clock.fast_forward(6000)
    await expect(page.locator("#connection")).to_have_text("Session ended — sign in again")
    await expect(page.locator("#login")).to_be_visible()


# -- the command ----------------------------------------------------------------------------


def test_user_password_command_sets_a_password(
    tmp_path: Path, database_path: Path, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from livedash.cli import app

    monkeypatch.setattr("livedash.cli.configure_logging", lambda *args, **kwargs: None)
    users.save("ann", Role.ADMIN, [])
    env = {"LIVEDASH_JWT_SECRET_FILE": str(tmp_path / "secret")}
    runner = CliRunner()

    def run(*args: str, given: str) -> int:
        command = ["user", "password", *args, "--db", str(database_path)]
        return runner.invoke(app, command, input=given, env=env).exit_code

    assert run("ann", given="first one\nfirst one\n") == 0
    (stored,) = execute(database_path, "SELECT password_hash FROM users")[0]
    assert verify_password("first one", stored)
    assert run("ann", "--password-stdin", given="second one\n") == 0
    (stored,) = execute(database_path, "SELECT password_hash FROM users")[0]
    assert verify_password("second one", stored)
    assert run("nobody", "--password-stdin", given="x\n") == 1
    assert run("ann", "--password-stdin", given="\n") == 2
    assert runner.invoke(app, ["user", "password", "--help"]).exit_code == 0


async def test_the_demo_password_is_set_only_once(
    settings: Settings, users: Users, database_path: Path
) -> None:
    users.save("admin", Role.SUPER_ADMIN, [])
    assert await run_set_password(settings, "admin", "admin", only_if_unset=True)
    assert not await run_set_password(settings, "admin", "other", only_if_unset=True)
    (stored,) = execute(database_path, "SELECT password_hash FROM users")[0]
    assert verify_password("admin", stored)
