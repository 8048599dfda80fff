"""Sign-in sessions: passwords, rotating refresh tokens, reuse detection, idle timeout."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from playwright.async_api import Page, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from livedash.auth.ratelimit import shared_storage
from livedash.auth.sessions import (
    MAX_PASSWORD_LENGTH,
    SessionService,
    hash_password,
    needs_rehash,
    run_set_password,
    set_password,
    verify_password,
)
from livedash.auth.throttle import (
    LOGIN_SLOWDOWN_MAX_SECONDS,
    SESSION_LIMIT_PER_ADDRESS,
    LoginLimits,
    login_delay,
)
from livedash.auth.tokens import verify_token
from livedash.errors import InvalidToken, RateLimited
from livedash.settings import Settings
from livedash.store.engine import create_engine, write_locking
from livedash.store.models import Role
from livedash.testing.servers import RedisServer
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.live import LiveServer, Serve
from tests.support.writers import Users


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


@pytest.fixture
def database(database: AsyncEngine) -> AsyncEngine:
    """The test's engine, its transactions taking SQLite's write lock as the CLI's do."""
    return write_locking(database)


@pytest.fixture
async def reader(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sessions(
    settings: Settings, database: AsyncEngine, reader: AsyncEngine, clock: Clock
) -> SessionService:
    return SessionService(settings, database, reader=reader, now=clock)


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


def stored_hash(database_path: Path, username: str) -> str:
    rows = execute(database_path, "SELECT password_hash FROM users WHERE username = ?", (username,))
    return str(rows[0][0])


def scrypt_hash(password: str) -> str:
    """A hash in the format livedash wrote before argon2id."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    encoded = (base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (salt, digest))
    return "$".join(("scrypt", "16384", "8", "1", *encoded))


@contextlib.contextmanager
def write_lock_held(database_path: Path) -> Iterator[None]:
    """SQLite's write lock, held by another program (as the hospital's application would)."""
    connection = sqlite3.connect(database_path, isolation_level=None, timeout=0)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


# -- passwords ------------------------------------------------------------------------------


def test_password_hashes_verify_and_differ_per_salt() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second
    assert first.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password("s3cret", first)
    assert verify_password("s3cret", second)
    assert not verify_password("s3cret ", first)
    assert not verify_password("s3cret", "not a hash")
    assert not verify_password("s3cret", "bcrypt$1$2$3$aa$bb")
    assert not verify_password("s3cret", "$argon2id$v=19$m=19456,t=2,p=1$broken")
    assert not needs_rehash(first)


def test_old_scrypt_hashes_still_verify_and_need_a_rehash() -> None:
    old = scrypt_hash("s3cret")
    assert verify_password("s3cret", old)
    assert not verify_password("s3cret ", old)
    assert not verify_password("s3cret", old.rsplit("$", 1)[0] + "$AAAA")
    assert needs_rehash(old)


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


async def test_outdated_argon2_parameters_are_replaced_at_sign_in(
    sessions: SessionService, ann: str, database_path: Path
) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("correct horse")
    execute(database_path, "UPDATE users SET password_hash = ?", (weak,))
    with pytest.raises(InvalidToken):
        await sessions.login(ann, "wrong")
    assert stored_hash(database_path, ann) == weak  # only a right password is rehashed
    with capture_logs() as logs:
        await sessions.login(ann, "correct horse")
    renewed = stored_hash(database_path, ann)
    assert renewed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password("correct horse", renewed)
    assert {"event": "audit_password_rehashed", "user": "ann", "log_level": "info"} in logs
    await sessions.login(ann, "correct horse")
    assert stored_hash(database_path, ann) == renewed  # a current hash is left alone


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


async def test_made_up_tokens_and_wrong_passwords_are_refused_without_the_write_lock(
    sessions: SessionService, ann: str, database_path: Path
) -> None:
    pair = await sessions.login(ann, "correct horse")
    forged = pair.refresh_token.split(".")[0] + ".forged"
    # Were any of these to need SQLite's write lock, it would wait for the other program.
    with write_lock_held(database_path):
        for token in ("unknown.token", forged):
            with pytest.raises(InvalidToken):
                await sessions.refresh(token)
            with pytest.raises(InvalidToken):
                await sessions.logout(token)
        for username, password in ((ann, "wrong"), ("nobody", "correct horse")):
            with pytest.raises(InvalidToken):
                await sessions.login(username, password)
    assert (await sessions.refresh(pair.refresh_token)).username == "ann"


async def test_expired_tokens_are_refused(
    settings: Settings, database: AsyncEngine, reader: AsyncEngine, ann: str, clock: Clock
) -> None:
    # A long idle timeout, so that only the session's lifetime ends it.
    lasting = settings.model_copy(update={"refresh_token_days": 1, "idle_timeout_minutes": 5000})
    sessions = SessionService(lasting, database, reader=reader, now=clock)
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
        assert wrong.json()["detail"] == "wrong user name or password"

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

        # Longer than a password may be, in a body small enough to be read.
        oversized = await client.post(
            "/api/auth/login",
            json={"username": "ann", "password": "x" * (MAX_PASSWORD_LENGTH + 1)},
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


def client_from(server: LiveServer, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client whose connections come from `address` (any of 127.0.0.0/8 on loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=server.url, transport=transport)


async def sign_in_as(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/login", json={"username": username, "password": password})


def expect_rate_limited(answer: httpx.Response, window_seconds: float) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["code"] == "rate_limited"
    assert 0 < answer.json()["retry_after"] <= window_seconds
    assert answer.headers["retry-after"] == str(answer.json()["retry_after"])


async def test_failed_sign_ins_are_limited_per_address_and_user_name(
    server: LiveServer, ann: str
) -> None:
    async with client_from(server) as client:
        # At once, so that the growing delay of a much-failed name does not slow the test.
        guesses = await asyncio.gather(*(sign_in_as(client, ann, "guess") for _ in range(10)))
        assert [answer.status_code for answer in guesses] == [401] * 10
        # This address has failed too often for ann: even the right password is refused.
        expect_rate_limited(await sign_in_as(client, ann, "correct horse"), 60)
        # Another user name is still let in from the same address.
        assert (await sign_in_as(client, "bob", "x")).status_code == 401


async def test_another_addresss_failures_slow_a_user_down_but_never_lock_them_out(
    server: LiveServer, ann: str
) -> None:
    async with client_from(server, "127.0.0.2") as attacker, client_from(server) as own:
        guesses = await asyncio.gather(*(sign_in_as(attacker, ann, "guess") for _ in range(10)))
        assert [answer.status_code for answer in guesses] == [401] * 10
        expect_rate_limited(await sign_in_as(attacker, ann, "correct horse"), 60)

        started = asyncio.get_running_loop().time()
        with capture_logs() as logs:
            signed_in = await sign_in_as(own, ann, "correct horse")
        took = asyncio.get_running_loop().time() - started
    assert signed_in.status_code == 200, signed_in.text
    slowed = [entry for entry in logs if entry["event"] == "login_slowed"]
    assert [(entry["user"], entry["seconds"]) for entry in slowed] == [
        (ann, LOGIN_SLOWDOWN_MAX_SECONDS)
    ]
    assert took >= LOGIN_SLOWDOWN_MAX_SECONDS


async def test_successful_sign_ins_are_not_counted_against_the_user(
    server: LiveServer, ann: str
) -> None:
    async with client_from(server) as client:
        for _ in range(11):
            assert (await sign_in_as(client, ann, "correct horse")).status_code == 200


async def test_an_old_scrypt_hash_signs_in_and_is_replaced_by_argon2id(
    server: LiveServer, ann: str, database_path: Path
) -> None:
    old = scrypt_hash("correct horse")
    execute(database_path, "UPDATE users SET password_hash = ?", (old,))
    async with client_from(server) as client:
        assert (await sign_in_as(client, ann, "wrong")).status_code == 401
        assert stored_hash(database_path, ann) == old
        assert (await sign_in_as(client, ann, "correct horse")).status_code == 200
        renewed = stored_hash(database_path, ann)
        assert renewed.startswith("$argon2id$")
        assert not needs_rehash(renewed)
        assert verify_password("correct horse", renewed)
        assert (await sign_in_as(client, ann, "correct horse")).status_code == 200
    assert stored_hash(database_path, ann) == renewed


async def test_sign_in_limits_are_shared_through_redis_and_survive_its_loss(
    redis_server: RedisServer,
) -> None:
    storage = shared_storage(redis_server.url)
    async with LoginLimits(storage) as one, LoginLimits(storage) as other:
        for _ in range(6):
            await one.login_failed("10.0.0.9", "ann")
        with capture_logs() as logs:
            await other.admit_login("10.0.0.1", "ANN")  # user names are counted case-blind
        assert [(entry["event"], entry["seconds"]) for entry in logs] == [("login_slowed", 0.5)]
        for _ in range(4):
            await other.login_failed("10.0.0.9", "ann")
        with pytest.raises(RateLimited):
            await one.admit_login("10.0.0.9", "ann")

        redis_server.kill()
        with capture_logs() as logs:
            await one.login_failed("10.0.0.9", "ann")
            await one.admit_login("10.0.0.9", "ann")  # let through rather than locked out
        assert {entry["event"] for entry in logs} == {"rate_limit_storage_unavailable"}


def test_the_sign_in_delay_grows_with_a_names_failures_and_is_capped() -> None:
    delays = [login_delay(failures) for failures in range(12)]
    assert delays[:5] == [0.0] * 5
    assert delays[5:] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert login_delay(10_000) == LOGIN_SLOWDOWN_MAX_SECONDS


async def test_rest_refuses_made_up_tokens_and_wrong_passwords_without_the_write_lock(
    server: LiveServer, ann: str, database_path: Path
) -> None:
    async with client_from(server) as client:
        signed_in = (await sign_in_as(client, ann, "correct horse")).json()
        forged = signed_in["refresh_token"].split(".")[0] + ".forged"
        # Were any of these to need SQLite's write lock, it would wait for the other program.
        with write_lock_held(database_path):
            for token in ("unknown.token", forged):
                for path in ("/api/auth/refresh", "/api/auth/logout"):
                    answer = await client.post(path, json={"refresh_token": token})
                    assert answer.status_code == 401, (path, answer.text)
            for username, password in ((ann, "wrong"), ("nobody", "correct horse")):
                assert (await sign_in_as(client, username, password)).status_code == 401
        refreshed = await client.post(
            "/api/auth/refresh", json={"refresh_token": signed_in["refresh_token"]}
        )
        assert refreshed.status_code == 200


async def test_refreshes_and_sign_outs_are_limited_per_address(server: LiveServer) -> None:
    allowed = int(SESSION_LIMIT_PER_ADDRESS.split("/")[0])
    made_up = {"refresh_token": "unknown.token"}
    async with client_from(server) as client, client_from(server, "127.0.0.2") as other:
        for number in range(allowed):
            path = "/api/auth/refresh" if number % 2 else "/api/auth/logout"
            assert (await client.post(path, json=made_up)).status_code == 401
        for path in ("/api/auth/refresh", "/api/auth/logout"):
            expect_rate_limited(await client.post(path, json=made_up), 60)
        # Another address is not affected.
        assert (await other.post("/api/auth/refresh", json=made_up)).status_code == 401


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
