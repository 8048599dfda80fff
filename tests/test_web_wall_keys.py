"""Wall screens that sign in with a `dashboard` API key: `POST /api/auth/key`, its limits, the
key's revocation, and the page signing itself in, renewing and surviving a restart with nobody
there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from playwright.async_api import Browser, expect

from livedash.auth.api_keys import create_api_key, revoke_api_key
from livedash.errors import ConfigurationError
from livedash.settings import Settings
from livedash.store.engine import open_database
from livedash.store.models import Role
from tests.support.browser import cell, open_screen
from tests.support.instances import Instance, ServeProcess
from tests.support.live import LiveServer, Serve
from tests.support.writers import Users, Write, register_patient

RESTART_MS = 30_000


async def make_key(settings: Settings, name: str, scopes: tuple[str, ...], **kw: object) -> str:
    async with open_database(settings.database_url, writer=True) as database:
        return await create_api_key(database, name, scopes, **kw)  # type: ignore[arg-type]


async def revoke(settings: Settings, name: str) -> bool:
    async with open_database(settings.database_url, writer=True) as database:
        return await revoke_api_key(database, name)


@pytest.fixture
async def wall_user(users: Users) -> str:
    users.save("wall-ed", Role.VIEWER, ("ED", "CARD"))
    await users.settled()
    return "wall-ed"


async def sign_in_with(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/api/auth/key", json={"api_key": key})


# -- the API ----------------------------------------------------------------------------------


async def test_a_dashboard_key_signs_in_as_its_user_with_their_scope(
    server: LiveServer, settings: Settings, wall_user: str, hospital: dict[str, int]
) -> None:
    key = await make_key(settings, "ed-wall", ("dashboard",), username=wall_user)
    async with httpx.AsyncClient(base_url=server.url) as client:
        answer = await sign_in_with(client, key)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["username"] == "wall-ed"
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == settings.access_token_minutes * 60
        assert "refresh_token" not in body
        assert answer.headers["Cache-Control"] == "no-store"
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        departments = await client.get("/api/departments", headers=bearer)
        assert departments.status_code == 200, departments.text
        codes = {entry["code"] for entry in departments.json()["items"]}
        assert codes == {"ED", "CARD"}


async def test_keys_that_may_not_sign_in_are_refused_and_say_why(
    server: LiveServer, settings: Settings, wall_user: str, users: Users
) -> None:
    ingest = await make_key(settings, "main-app", ("ingest",))
    users.save("gone", Role.VIEWER, ("ED",))
    await users.settled()
    gone = await make_key(settings, "gone-wall", ("dashboard",), username="gone")
    users.save("gone", Role.VIEWER, ("ED",), active=False)
    await users.settled()
    async with httpx.AsyncClient(base_url=server.url) as client:
        unscoped = await sign_in_with(client, ingest)
        assert unscoped.status_code == 403
        assert "dashboard" in unscoped.json()["detail"]
        inactive = await sign_in_with(client, gone)
        assert inactive.status_code == 401
        made_up = await sign_in_with(client, "ldk_abcdefgh_" + "x" * 43)
        assert made_up.status_code == 401
        malformed = await sign_in_with(client, "not a key")
        assert malformed.status_code == 401
        extra = await client.post("/api/auth/key", json={"api_key": ingest, "user": "admin"})
        assert extra.status_code == 422


async def test_a_dashboard_key_needs_a_user_who_is_not_a_super_admin(
    settings: Settings, users: Users, wall_user: str
) -> None:
    users.save("root", Role.SUPER_ADMIN, ())
    await users.settled()
    with pytest.raises(ConfigurationError, match="super_admin"):
        await make_key(settings, "root-wall", ("dashboard",), username="root")
    with pytest.raises(ConfigurationError, match="no active user"):
        await make_key(settings, "ghost-wall", ("dashboard",), username="ghost")
    with pytest.raises(ConfigurationError, match="give the user"):
        await make_key(settings, "anon-wall", ("dashboard",))
    with pytest.raises(ConfigurationError, match="only for it"):
        await make_key(settings, "ingest-as", ("ingest",), username=wall_user)


async def test_a_hundred_screens_behind_one_address_all_sign_in_after_a_restart(
    server: LiveServer, settings: Settings, wall_user: str
) -> None:
    key = await make_key(settings, "ed-wall", ("dashboard",), username=wall_user)
    async with httpx.AsyncClient(base_url=server.url) as client:
        answers = await asyncio.gather(*(sign_in_with(client, key) for _ in range(100)))
    assert [a.status_code for a in answers] == [200] * 100


async def test_an_address_guessing_keys_is_held_back(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        codes = [
            (await sign_in_with(client, f"ldk_guess{n:03d}_" + "y" * 43)).status_code
            for n in range(12)
        ]
    assert codes[:10] == [401] * 10
    assert codes[10:] == [429, 429]


async def test_revoking_a_dashboard_key_ends_the_tokens_it_handed_out(
    server: LiveServer,
    settings: Settings,
    wall_user: str,
    hospital: dict[str, int],
    connect: Callable[..., object],
) -> None:
    key = await make_key(settings, "ed-wall", ("dashboard",), username=wall_user)
    async with httpx.AsyncClient(base_url=server.url) as client:
        access = (await sign_in_with(client, key)).json()["access_token"]
        bearer = {"Authorization": f"Bearer {access}"}
        assert (await client.get("/api/departments", headers=bearer)).status_code == 200
        assert await revoke(settings, "ed-wall")
        # Tokens are compared with the revocation to the second: one issued in the same
        # second as the revocation counts as issued before it.
        refused = await client.get("/api/departments", headers=bearer)
        assert refused.status_code == 401
        again = await sign_in_with(client, key)
        assert again.status_code == 401
        assert "revoked" in again.json()["detail"]


# -- the page ---------------------------------------------------------------------------------


@pytest.fixture
async def instance(serve_process: ServeProcess) -> Instance:
    """`livedash serve` in its own process, with one-minute access tokens."""
    return await serve_process({"LIVEDASH_ACCESS_TOKEN_MINUTES": "1"})


async def test_a_wall_signs_in_with_its_key_renews_itself_and_survives_a_restart(
    hospital: dict[str, int],
    instance: Instance,
    settings: Settings,
    wall_user: str,
    writer: Write,
    browser: Browser,
) -> None:
    key = await make_key(settings, "ed-wall", ("dashboard",), username=wall_user)
    screen = await open_screen(browser, width=1920, height=1080)
    wall = screen.page
    try:
        await wall.clock.install()
        await wall.goto(f"{instance.url}/?wall=1#key={key}")
        await expect(wall.locator("#connection")).to_have_text("Live")
        await expect(wall.locator("#login")).to_be_hidden()
        await expect(cell(wall, "patients_waiting", "ED")).to_have_text("1")
        assert "ldk_" not in wall.url, "the key stays out of the address bar"
        assert await wall.evaluate("localStorage.getItem('livedash.key')") == key
        assert await wall.evaluate("localStorage.getItem('livedash.refresh')") is None

        # One-minute tokens are renewed with the key ahead of their expiry, nobody asked.
        async with wall.expect_response("**/api/auth/key") as renewed:
            await wall.clock.fast_forward(6_000)
        assert (await renewed.value).ok
        await expect(wall.locator("#connection")).to_have_text("Live")

        await wall.evaluate("window.stayed = true")
        await instance.stop()
        await expect(wall.locator("#connection")).to_contain_text("Reconnecting", timeout=10_000)
        await register_patient(writer, hospital["ED"], "while the wall was alone")
        await instance.start()
        await expect(wall.locator("#connection")).to_have_text("Live", timeout=RESTART_MS)
        await expect(cell(wall, "patients_waiting", "ED")).to_have_text("2")
        assert await wall.evaluate("window.stayed") is True, "the wall was reloaded"

        # The kiosk's browser restarts: the key in its storage signs it in again.
        again = await screen.context.new_page()
        await wall.close()
        await again.goto(f"{instance.url}/?wall=1")
        await expect(again.locator("#connection")).to_have_text("Live")
        await expect(again.locator("#login")).to_be_hidden()
        await expect(cell(again, "patients_waiting", "ED")).to_have_text("2")

        # IT revokes the key: the screen goes dark within the recheck bound, and says why.
        assert await revoke(settings, "ed-wall")
        await expect(again.locator("#connection")).to_contain_text(
            "key was refused", timeout=15_000
        )
        await expect(again.locator("#login")).to_be_visible()
        assert await again.evaluate("localStorage.getItem('livedash.key')") is None
    finally:
        await screen.context.close()
    assert not screen.errors, f"the page threw: {screen.errors}"


async def test_a_key_pasted_into_the_sign_in_form_signs_a_screen_in(
    hospital: dict[str, int], serve: Serve, settings: Settings, wall_user: str, browser: Browser
) -> None:
    server = await serve()
    key = await make_key(settings, "ed-wall", ("dashboard",), username=wall_user)
    screen = await open_screen(browser)
    try:
        page = screen.page
        await page.goto(server.url)
        await page.click("#token-details summary")
        await page.fill("#token", key)
        await page.click("#token-login button[type=submit]")
        await expect(page.locator("#connection")).to_have_text("Live")
        await expect(page.locator("#user")).to_contain_text("wall-ed")
        assert await page.evaluate("sessionStorage.getItem('livedash.key')") == key
        assert await page.evaluate("sessionStorage.getItem('livedash.token')") is None
    finally:
        await screen.context.close()
    assert not screen.errors, f"the page threw: {screen.errors}"
