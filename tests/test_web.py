"""The dashboard page, driven in the system's headless Chromium against a real server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from livedash.auth.tokens import verify_token
from livedash.errors import InvalidToken
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.hospital import sql_now
from livedash.testing.oracle import Values, recompute
from livedash.testing.servers import RedisServer
from tests.support.browser import cell
from tests.support.live import LiveServer
from tests.support.writers import Write, register_patient

STATIC = Path(__file__).parent.parent / "src" / "livedash" / "web" / "static"

# What the page shows in a scope's tiles and panels (the hospital's, or a department's view).
TILE_METRICS = (
    "patients_active",
    "patients_waiting",
    "patients_new_today",
    "patients_total",
    "patients_emergency",
    "bed_occupancy_rate",
    "beds_occupied",
    "beds_free",
    "beds_cleaning",
    "beds_out_of_service",
    "room_occupancy_rate",
    "staff_on_duty",
    "appointments_today",
    "appointments_completed_today",
    "appointments_scheduled_today",
)
# ... and in each department's row of the overview.
ROW_METRICS = (
    "patients_active",
    "patients_waiting",
    "patients_emergency",
    "bed_occupancy_rate",
    "beds_occupied",
    "beds_total",
    "beds_free",
    "staff_on_duty",
)
RATES = {"bed_occupancy_rate", "room_occupancy_rate"}


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page whose script errors fail the test."""
    context = await browser.new_context(
        locale="en-US", timezone_id="Europe/Berlin", viewport={"width": 1280, "height": 800}
    )
    page = await context.new_page()
    script_errors: list[Exception] = []
    page.on("pageerror", lambda error: script_errors.append(error))
    yield page
    await context.close()
    assert not script_errors, f"the page threw: {script_errors}"


def shown(metric: str, value: float) -> str:
    """`value` as the page formats it in the en-US locale."""
    return f"{value * 100:.1f}%" if metric in RATES else f"{value:,}"


async def expect_values(
    page: Page, truth: Values, department: str | None, metrics: tuple[str, ...]
) -> None:
    """Wait until every figure of `metrics` shown for `department` equals the SQL recompute."""
    for metric in metrics:
        await expect(cell(page, metric, department)).to_have_text(
            shown(metric, truth[metric, department])
        )


async def test_page_and_assets_are_served(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        for asset, kind in (
            ("/static/vendor/socket.io.min.js", "javascript"),
            ("/static/vendor/uPlot.iife.min.js", "javascript"),
            ("/static/vendor/uPlot.min.css", "text/css"),
            ("/static/js/app.js", "javascript"),
            ("/static/dashboard.css", "text/css"),
        ):
            response = await client.get(asset)
            assert response.status_code == 200, asset
            assert kind in response.headers["content-type"], asset
            assert f'"{asset}"' in page.text, asset
        # Every module the page imports is served, as JavaScript (module scripts need it).
        modules = sorted(STATIC.glob("js/*.js"))
        assert modules
        for module in modules:
            response = await client.get(f"/static/js/{module.name}")
            assert response.status_code == 200, module.name
            assert "javascript" in response.headers["content-type"], module.name
            for imported in re.findall(r'from "\./([a-z]+\.js)"', module.read_text()):
                assert (STATIC / "js" / imported).is_file(), (module.name, imported)
    # Ready for a strict CSP: every script is a file, and there is no inline style.
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", page.text))
    assert "<style" not in page.text
    assert not re.search(r"\sstyle=", page.text)
    assert not re.search(r"\son[a-z]+=", page.text)


async def test_super_admin_sees_hospital_totals_and_live_updates(
    hospital: dict[str, int],
    server: LiveServer,
    page: Page,
    token: Any,
    sqlite_writer: Write,
    settings: Settings,
) -> None:
    await sqlite_writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital["ED-1A"],))
    await sqlite_writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital["CARD-2B"],))
    await sqlite_writer(
        "INSERT INTO appointments (department_id, scheduled_at, status) VALUES (?, ?, 'completed')",
        (hospital["CARD"], sql_now()),
    )
    await register_patient(sqlite_writer, hospital["ED"], "walk-in", emergency=True)

    await page.goto(f"{server.url}/#token={token()}")
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator("#login")).to_be_hidden()
    assert page.url == f"{server.url}/", "the token is left in the address bar"
    await expect(page.locator(".now .tile")).to_have_count(5)
    await expect(page.locator(".today .tile")).to_have_count(3)
    await expect(page.locator("#department-rows tr")).to_have_count(2)

    truth = await recompute(
        settings.database_url, settings.zone, datetime.now(settings.zone).date()
    )
    assert truth["bed_occupancy_rate", None] == 0.25
    await expect_values(page, truth, None, TILE_METRICS)
    for department in ("ED", "CARD"):
        await expect_values(page, truth, department, ROW_METRICS)
    await expect(page.locator("#last-update")).not_to_have_text("—")

    waiting = cell(page, "patients_waiting", None)
    await register_patient(sqlite_writer, hospital["ED"], "walk-in")
    await expect(waiting).to_have_text(str(truth["patients_waiting", None] + 1))
    await expect(waiting).to_have_class(re.compile(r"\bchanged\b"))
    await expect(cell(page, "patients_waiting", "ED")).to_have_text(
        str(truth["patients_waiting", "ED"] + 1)
    )
    await expect(cell(page, "patients_waiting", "CARD")).to_have_text(
        str(truth["patients_waiting", "CARD"])
    )


async def test_department_admin_sees_only_their_department(
    hospital: dict[str, int], server: LiveServer, page: Page, token: Any, sqlite_writer: Write
) -> None:
    frames: list[str | bytes] = []
    page.on(
        "websocket", lambda socket: socket.on("framereceived", lambda frame: frames.append(frame))
    )

    await page.goto(f"{server.url}/#token={token(Role.ADMIN, ('ED',))}")
    await expect(page.locator("#connection")).to_have_text("Live")
    # One department and no hospital totals: its view is the overview, with nothing to choose.
    await expect(page.locator("#view-title")).to_have_text("Emergency")
    await expect(page.locator("#filter")).to_be_hidden()
    await expect(cell(page, "patients_waiting", "ED")).to_have_text("1")

    await register_patient(sqlite_writer, hospital["CARD"], "walk-in")
    await register_patient(sqlite_writer, hospital["ED"], "walk-in")
    # ED's change comes after CARD's in the feed: had CARD's leaked, it would be here by now.
    await expect(cell(page, "patients_waiting", "ED")).to_have_text("2")

    await expect(page.locator('[data-department=""]')).to_have_count(0)
    await expect(page.locator('[data-department="CARD"]')).to_have_count(0)
    assert "CARD" not in await page.content()
    assert frames, "no websocket traffic was seen"
    assert not [frame for frame in frames if "CARD" in str(frame)]


async def test_bad_token_shows_the_auth_error(
    hospital: dict[str, int], server: LiveServer, page: Page, settings: Settings
) -> None:
    with pytest.raises(InvalidToken) as refused:
        verify_token(settings, "not-a-jwt")

    await page.goto(f"{server.url}/#token=not-a-jwt")
    status = page.locator("#connection")
    await expect(status).to_have_text(f"Authentication failed: {refused.value.message}")
    await expect(status).to_have_attribute("data-state", "auth-error")
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#token")).to_have_value("not-a-jwt")
    await expect(page.locator("[data-metric]")).to_have_count(0)
    assert await page.evaluate("sessionStorage.length") == 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_the_page_says_when_the_cache_is_down_and_when_it_is_back(
    hospital: dict[str, int],
    server: LiveServer,
    page: Page,
    token: Any,
    writer: Write,
    redis_server: RedisServer,
) -> None:
    await page.goto(f"{server.url}/#token={token()}")
    await expect(page.locator("#connection")).to_have_text("Live")

    redis_server.kill()
    await expect(page.locator("#connection")).to_have_text(
        "Live, degraded: cache unavailable", timeout=15_000
    )
    # Still live on this instance: a write made during the outage is shown.
    await register_patient(writer, hospital["ED"], "during the outage")
    await expect(cell(page, "patients_waiting", "ED")).to_have_text("2")

    redis_server.start()
    await expect(page.locator("#connection")).to_have_text("Live", timeout=15_000)


async def test_a_page_refused_by_a_full_instance_retries_and_goes_live(
    hospital: dict[str, int],
    serve: Any,
    settings: Settings,
    page: Page,
    token: Any,
    connect: Any,
) -> None:
    server = await serve(settings.model_copy(update={"max_connections": 1}))
    holder = await connect(server, token())  # takes the only place
    await page.goto(f"{server.url}/#token={token()}")
    await expect(page.locator("#connection")).to_contain_text("Reconnecting", timeout=10_000)
    await holder.client.disconnect()
    # The refusal said when to come back; the page does, without a reload.
    await expect(page.locator("#connection")).to_have_text("Live", timeout=20_000)
