"""The administrators' page in the system's Chromium, against a real service: tiles, trends,
department views, the connection's honesty through a restart, wall mode and phone width.

Screenshots for people land in build/test-artifacts/ (overview, department, wall, phone).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from livedash.auth.sessions import hash_password
from livedash.settings import Settings
from livedash.simulator import HospitalSimulator, seed_hospital
from livedash.store.models import Role
from livedash.testing.hospital import sql_now
from livedash.testing.oracle import recompute
from tests.support.browser import (
    Screen,
    cell,
    contrast_failures,
    open_screen,
    save_screenshot,
    scrolls_sideways,
)
from tests.support.instances import Instance, ServeProcess
from tests.support.live import LiveServer, Serve
from tests.support.main_app import MainApp
from tests.support.writers import Users, Write, register_patient

OpenPage = Callable[..., Awaitable[Page]]
RESTART_SECONDS = 30_000  # ms: a `livedash serve` process stopping, starting, and the page back


@pytest.fixture
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """Open pages (`width`, `height`, `locale`, `timezone_id`); any script error fails the test."""
    screens: list[Screen] = []

    async def open_one(**options: Any) -> Page:
        screen = await open_screen(browser, **options)
        screens.append(screen)
        return screen.page

    yield open_one
    for screen in screens:
        await screen.context.close()
    errors = [error for screen in screens for error in screen.errors]
    assert not errors, f"the page threw: {errors}"


@pytest.fixture
async def instance(serve_process: ServeProcess) -> Instance:
    """`livedash serve` in its own process: stopped and started again on the same port."""
    return await serve_process()


async def with_password(
    users: Users, writer: Write, name: str, role: Role, departments: tuple[str, ...] = ()
) -> str:
    """A user `name` who signs in with the password returned."""
    password = f"{name} battery staple"
    users.save(name, role, departments)
    await users.settled()
    await writer(
        "UPDATE users SET password_hash = ? WHERE username = ?", (hash_password(password), name)
    )
    return password


async def sign_in(page: Page, url: str, name: str, password: str) -> None:
    await page.goto(url)
    await page.fill("#username", name)
    await page.fill("#password", password)
    await page.click("#password-login button[type=submit]")
    await expect(page.locator("#connection")).to_have_text("Live")


async def pay(writer: Write, department: int, cents: int) -> None:
    """A bill of `cents`, paid now."""
    now = sql_now()
    bill = await writer(
        "INSERT INTO bills (department_id, amount_cents, created_at, paid_at) VALUES (?, ?, ?, ?)",
        (department, cents, now, now),
    )
    await writer(
        "INSERT INTO payments (bill_id, department_id, amount_cents, paid_at) VALUES (?, ?, ?, ?)",
        (bill, department, cents, now),
    )


def without_nbsp(text: str | None) -> str:
    return (text or "").replace("\u00a0", " ").replace("\u202f", " ")


# -- the overview -----------------------------------------------------------------------------


async def test_signing_in_shows_the_tiles_written_the_hospitals_way(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    users: Users,
    writer: Write,
    open_page: OpenPage,
) -> None:
    # The hospital writes German, in Berlin; this screen's own browser is American, in New York.
    server = await serve(settings.model_copy(update={"locale": "de-DE", "currency": "EUR"}))
    await writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital["ED-1A"],))
    await writer("UPDATE beds SET status = 'cleaning' WHERE id = ?", (hospital["CARD-2B"],))
    await pay(writer, hospital["ED"], 123450)
    password = await with_password(users, writer, "ann", Role.SUPER_ADMIN)
    page = await open_page(locale="en-US", timezone_id="America/New_York")

    await sign_in(page, server.url, "ann", password)
    await expect(page.locator("#user")).to_have_text("ann · super admin")
    await expect(page.locator("#view-title")).to_have_text("Whole hospital")
    await expect(page.locator(".now .tile")).to_have_count(5)
    await expect(page.locator(".today .tile")).to_have_count(3)
    await expect(page.locator("#department-rows tr")).to_have_count(2)

    truth = await recompute(
        settings.database_url, settings.zone, datetime.now(settings.zone).date()
    )
    for metric in (
        "patients_active",
        "patients_waiting",
        "beds_free",
        "beds_cleaning",
        "staff_on_duty",
    ):
        await expect(cell(page, metric, None)).to_have_text(
            f"{truth[metric, None]:,}".replace(",", ".")
        )
    await expect(cell(page, "bed_occupancy_rate", None)).to_have_text(re.compile(r"^12,5\s%$"))
    await expect(cell(page, "bed_occupancy_rate", "ED")).to_have_text(re.compile(r"^25,0\s%$"))
    await expect(cell(page, "revenue_today", None)).to_have_text(re.compile(r"^1\.234,50\s€$"))
    # Department names, not codes; and the clock is the hospital's, not New York's.
    await expect(page.locator("#department-rows th a")).to_have_text(["Cardiology", "Emergency"])
    berlin = datetime.now(ZoneInfo("Europe/Berlin"))
    hours, minutes = map(int, (await page.locator("#clock").inner_text()).split(":"))
    assert abs(hours * 60 + minutes - (berlin.hour * 60 + berlin.minute)) % 1439 <= 1
    # Each tile says how fresh it is.
    for age in await page.locator(".now .tile .tile-age").all_text_contents():
        assert re.search(r"changed|waiting for data", age), age
    await expect(page.locator(".now .tile[data-stale='true']")).to_have_count(0)
    assert await contrast_failures(page) == []


async def test_a_change_written_to_the_database_reaches_its_tile_within_a_second(
    hospital: dict[str, int],
    server: LiveServer,
    token: Callable[..., str],
    writer: Write,
    open_page: OpenPage,
) -> None:
    page = await open_page()
    updates: list[tuple[str, Any]] = []  # (event, payload) of every update frame received

    def record(frame: str | bytes) -> None:
        text = str(frame)
        if text.startswith('42["dashboard_update'):
            event, payload = json.loads(text[2:])
            updates.append((event, payload))

    page.on("websocket", lambda socket: socket.on("framereceived", record))
    await page.goto(f"{server.url}/#token={token()}")
    await expect(page.locator("#connection")).to_have_text("Live")
    waiting = cell(page, "patients_waiting", None)
    await expect(waiting).to_have_text("2")
    await expect(cell(page, "bed_occupancy_rate", "CARD")).to_have_text("0.0%")

    await register_patient(writer, hospital["ED"], "walk-in")
    written = time.monotonic()
    await expect(waiting).to_have_text("3", timeout=1000)
    assert time.monotonic() - written < 1.0
    await expect(waiting).to_have_class(re.compile(r"\bchanged\b"))
    await expect(cell(page, "patients_waiting", "ED")).to_have_text("2", timeout=1000)
    await expect(cell(page, "patients_waiting", "CARD")).to_have_text("1")
    # The page asks for batched updates: the patient's every figure, ED's and the hospital's,
    # came in one frame.
    assert {event for event, _ in updates} == {"dashboard_updates"}
    (batch,) = [
        payload["updates"]
        for _, payload in updates
        if ("patients_waiting", None, 3)
        in {(u["metric"], u["department"], u["value"]) for u in payload["updates"]}
    ]
    assert {(u["metric"], u["department"]) for u in batch} >= {
        ("patients_waiting", None),
        ("patients_waiting", "ED"),
        ("patients_total", None),
        ("patients_total", "ED"),
    }

    await writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital["CARD-1A"],))
    written = time.monotonic()
    await expect(cell(page, "bed_occupancy_rate", "CARD")).to_have_text("25.0%", timeout=1000)
    await expect(cell(page, "bed_occupancy_rate", None)).to_have_text("12.5%", timeout=1000)
    assert time.monotonic() - written < 1.0


async def test_a_service_that_sends_each_value_on_its_own_still_updates_the_page(
    hospital: dict[str, int],
    server: LiveServer,
    token: Callable[..., str],
    writer: Write,
    open_page: OpenPage,
) -> None:
    """As during a rolling deploy, when an instance from before `dashboard_updates` serves
    the page: the handshake reaches it without `updates: "batched"`."""
    page = await open_page()
    events: list[str] = []

    def route(page_side: WebSocketRoute) -> None:
        service = page_side.connect_to_server()

        def to_service(message: str | bytes) -> None:
            if isinstance(message, str) and message.startswith("40"):
                auth = json.loads(message[2:])
                assert auth.pop("updates") == "batched"  # what the page asks for
                message = "40" + json.dumps(auth)
            service.send(message)

        def to_page(message: str | bytes) -> None:
            if isinstance(message, str) and message.startswith('42["dashboard_update'):
                events.append(json.loads(message[2:])[0])
            page_side.send(message)

        page_side.on_message(to_service)
        service.on_message(to_page)

    await page.route_web_socket(re.compile(r"/socket\.io/"), route)
    await page.goto(f"{server.url}/#token={token()}")
    await expect(page.locator("#connection")).to_have_text("Live")
    waiting = cell(page, "patients_waiting", None)
    await expect(waiting).to_have_text("2")

    await register_patient(writer, hospital["ED"], "walk-in")
    await expect(waiting).to_have_text("3")
    await expect(cell(page, "patients_waiting", "ED")).to_have_text("2")
    assert set(events) == {"dashboard_update"}


async def test_the_page_says_when_the_main_application_stops_answering_and_when_it_is_back(
    hospital: dict[str, int],
    settings: Settings,
    serve: Serve,
    token: Callable[..., str],
    main_app: MainApp,
    open_page: OpenPage,
) -> None:
    polled = {"main_app_health_url": main_app.url, "main_app_poll_seconds": 0.1}
    server = await serve(settings.model_copy(update=polled))
    page = await open_page()
    await page.goto(f"{server.url}/?department=ED#token={token(Role.VIEWER, ('ED',))}")
    await expect(page.locator("#connection")).to_have_text("Live")
    banner = page.locator("#connection-banner")
    await expect(banner).to_be_hidden()

    main_app.mode = "error"
    await expect(banner).to_contain_text("main application is not answering", timeout=10_000)
    # Still live: livedash itself is fine, and its figures are the database's.
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(cell(page, "patients_waiting", "ED")).to_have_text("1")

    main_app.mode = "ok"
    await expect(banner).to_be_hidden(timeout=10_000)


async def test_a_trend_chart_has_a_point_for_every_hour_requested(
    hospital: dict[str, int], server: LiveServer, token: Callable[..., str], open_page: OpenPage
) -> None:
    page = await open_page()
    history: list[dict[str, Any]] = []

    def record(frame: str | bytes) -> None:
        # Socket.IO frames: 42["historical_data", answer], and 43<id>[answer] acknowledging.
        text = str(frame)
        if text.startswith("42") and '"points"' in text:
            history.append(json.loads(text[2:])[1])

    page.on("websocket", lambda socket: socket.on("framereceived", record))
    await page.goto(f"{server.url}/#token={token()}")
    await expect(page.locator("#connection")).to_have_text("Live")
    charts = page.locator("figure.chart")
    await expect(charts).to_have_count(4)
    for series in ("occupancy", "admissions", "emergency_arrivals", "revenue"):
        await expect(page.locator(f'figure.chart[data-series="{series}"]')).to_have_attribute(
            "data-points", "24"
        )
    assert {answer["metric"] for answer in history} == {
        "occupancy",
        "admissions",
        "emergency_arrivals",
        "revenue",
    }
    assert all(len(answer["points"]) == 24 for answer in history)
    plot = page.locator('figure.chart[data-series="admissions"] .chart-plot')
    await expect(plot).to_have_attribute(
        "aria-label", re.compile(r"^Admissions by hour, last 24 hours")
    )
    await expect(plot.locator("canvas")).to_have_count(1)
    # The growth figures and the trend label are the service's, pushed like any other.
    trend = cell(page, "admissions_trend", None)
    await expect(trend).to_have_text(re.compile(r"^(↑ Rising|↓ Falling|→ Steady|—)$"))

    await page.get_by_role("link", name="7 days").click()
    await expect(page).to_have_url(f"{server.url}/?range=7d")
    await expect(page.locator("#trends-title")).to_have_text("Trends, last 7 days")
    for series in ("occupancy", "admissions", "emergency_arrivals", "revenue"):
        await expect(page.locator(f'figure.chart[data-series="{series}"]')).to_have_attribute(
            "data-points", "168"
        )
    await page.go_back()
    await expect(page.locator('figure.chart[data-series="admissions"]')).to_have_attribute(
        "data-points", "24"
    )


# -- department views -------------------------------------------------------------------------


async def test_the_filter_lists_departments_by_name_and_the_address_keeps_the_choice(
    hospital: dict[str, int],
    server: LiveServer,
    token: Callable[..., str],
    writer: Write,
    open_page: OpenPage,
) -> None:
    await writer("INSERT INTO departments (code, name) VALUES (?, ?)", ("ONC", "Oncology"))
    page = await open_page()
    await page.goto(f"{server.url}/#token={token()}")
    await expect(page.locator("#connection")).to_have_text("Live")
    options = page.locator("#department-filter option")
    await expect(options).to_have_text(["Whole hospital", "Cardiology", "Emergency", "Oncology"])

    await page.select_option("#department-filter", label="Emergency")
    await expect(page).to_have_url(f"{server.url}/?department=ED")
    await expect(page.locator("#view-title")).to_have_text("Emergency")
    await expect(cell(page, "patients_waiting", "ED")).to_have_text("1")
    await expect(page.locator("#department-table")).to_have_count(0)
    await expect(page.locator('figure.chart[data-series="admissions"]')).to_have_attribute(
        "data-points", "24"
    )
    await expect(page.locator("#alerts-panel")).to_contain_text("The alerts of Emergency")

    # Bookmarkable: a reload (the token is kept for the tab) shows the same view.
    await page.reload()
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator("#view-title")).to_have_text("Emergency")
    await expect(page.locator("#department-filter")).to_have_value("ED")
    # Back and forward move between the views, without a reload.
    await page.evaluate("window.stayed = true")
    await page.go_back()
    await expect(page.locator("#view-title")).to_have_text("Whole hospital")
    await expect(page.locator("#department-filter")).to_have_value("")
    await page.go_forward()
    await expect(page.locator("#view-title")).to_have_text("Emergency")
    # A department's name in the overview opens its view.
    await page.go_back()
    await page.get_by_role("link", name="Cardiology").click()
    await expect(page).to_have_url(f"{server.url}/?department=CARD")
    await expect(page.locator("#view-title")).to_have_text("Cardiology")
    assert await page.evaluate("window.stayed") is True

    # An admin of two departments sees those two, by name, and nothing of the third.
    admin = await open_page()
    await admin.goto(f"{server.url}/?department=ONC#token={token(Role.ADMIN, ('ED', 'CARD'))}")
    await expect(admin.locator("#connection")).to_have_text("Live")
    await expect(admin.locator("#notice")).to_contain_text("cannot see")
    await expect(admin.locator("#view-title")).to_have_text("My departments")
    await expect(admin.locator("#department-filter option")).to_have_text(
        ["All my departments", "Cardiology", "Emergency"]
    )
    await expect(admin.locator("#department-rows tr")).to_have_count(2)
    await expect(admin.locator('[data-department=""]')).to_have_count(0)
    content = await admin.locator("#view").inner_text()
    assert "Oncology" not in content
    assert "ONC" not in await admin.locator("#department-filter").inner_html()


# -- the connection ---------------------------------------------------------------------------


async def test_a_reconnection_attempt_that_hangs_is_given_up_and_the_next_one_goes_through(
    server: LiveServer, token: Callable[..., str], open_page: OpenPage
) -> None:
    page = await open_page()
    opened: list[WebSocketRoute] = []
    attempts = 0

    def route(page_side: WebSocketRoute) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 2:
            # Neither passed on nor closed: the page's WebSocket waits for the service's first
            # packet, as behind a proxy that swallowed the upgrade.
            return
        page_side.connect_to_server()
        opened.append(page_side)

    await page.route_web_socket(re.compile(r"/socket\.io/"), route)
    await page.goto(f"{server.url}/#token={token()}")
    status = page.locator("#connection")
    await expect(status).to_have_text("Live")

    await opened[0].close()
    await expect(status).to_contain_text("Reconnecting")
    # The hung attempt is given up after 8 s (socket.io-client's default is 20 s), then the
    # next one, a second or two later, reaches the service.
    await expect(status).to_have_text("Live", timeout=14_000)
    assert attempts == 3


async def test_a_restart_shows_reconnecting_then_the_figures_catch_up_without_a_reload(
    hospital: dict[str, int],
    instance: Instance,
    token: Callable[..., str],
    writer: Write,
    open_page: OpenPage,
) -> None:
    page = await open_page()
    await page.goto(f"{instance.url}/#token={token()}")
    status = page.locator("#connection")
    await expect(status).to_have_text("Live")
    waiting = cell(page, "patients_waiting", None)
    await expect(waiting).to_have_text("2")
    await page.evaluate("window.stayed = true")

    await instance.stop()
    await expect(status).to_contain_text("Reconnecting", timeout=10_000)
    await expect(page.locator("#connection-banner")).to_contain_text("Connection lost")
    # The hospital goes on meanwhile.
    await register_patient(writer, hospital["ED"], "during the restart")
    await writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital["ED-2B"],))
    # Past the critical tier's 10 s, the tiles say their figures are stale, and as of when.
    occupancy = page.locator(".now .tile.occupancy")
    await expect(occupancy).to_have_attribute("data-stale", "true", timeout=15_000)
    await expect(occupancy.locator(".stale-badge")).to_be_visible()
    await expect(occupancy.locator(".age-text")).to_have_text(re.compile(r"^as of "))
    await expect(waiting).to_have_text("2")
    await save_screenshot(page, "overview-reconnecting")

    await instance.start()
    await expect(status).to_have_text("Live", timeout=RESTART_SECONDS)
    await expect(waiting).to_have_text("3")
    await expect(cell(page, "bed_occupancy_rate", "ED")).to_have_text("25.0%")
    await expect(occupancy).to_have_attribute("data-stale", "false")
    await expect(page.locator("#connection-banner")).to_be_hidden()
    assert await page.evaluate("window.stayed") is True, "the page was reloaded"


async def test_a_refused_session_token_is_renewed_with_nobody_asked(
    hospital: dict[str, int], server: LiveServer, users: Users, writer: Write, open_page: OpenPage
) -> None:
    password = await with_password(users, writer, "ann", Role.ADMIN, ("ED",))
    page = await open_page()
    async with page.expect_response("**/api/auth/login") as login:
        await sign_in(page, server.url, "ann", password)
    access = (await (await login.value).json())["access_token"]
    claims = json.loads(base64.urlsafe_b64decode(access.split(".")[1] + "=="))
    # The access token is refused (as after an outage longer than its life): the page trades its
    # refresh token for a new one and carries on, without asking anyone to sign in.
    async with page.expect_response("**/api/auth/refresh", timeout=15_000) as refreshed:
        await writer(
            "INSERT INTO revoked_tokens (jti, revoked_at, reason) VALUES (?, ?, ?)",
            (claims["jti"], sql_now(), "test"),
        )
    assert (await refreshed.value).ok
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator("#login")).to_be_hidden()
    await register_patient(writer, hospital["ED"], "after the renewal")
    await expect(cell(page, "patients_waiting", "ED")).to_have_text("2")


# -- wall mode --------------------------------------------------------------------------------


async def test_wall_mode_rotates_and_survives_a_restart_with_nobody_signing_in(
    hospital: dict[str, int],
    instance: Instance,
    token: Callable[..., str],
    writer: Write,
    open_page: OpenPage,
) -> None:
    wall = await open_page(width=1920, height=1080)
    await wall.goto(f"{instance.url}/?wall=1&rotate=5#token={token(Role.VIEWER, ('ED', 'CARD'))}")
    status = wall.locator("#connection")
    await expect(status).to_have_text("Live")
    assert await wall.evaluate("document.body.classList.contains('wall')")
    background = await wall.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(map(int, re.findall(r"\d+", background)[:3])) < 3 * 60, background  # dark
    # No pointer needed: no filter, no navigation, no sign-out; the clock is large.
    await expect(wall.locator("#filter")).to_be_hidden()
    await expect(wall.locator("#sign-out")).to_be_hidden()
    await expect(wall.locator("#wall-next")).to_contain_text("Next: Cardiology")
    assert not await scrolls_sideways(wall)
    assert await contrast_failures(wall) == []

    # The rotation: my departments together, then each by name, in place (no history).
    entries = await wall.evaluate("history.length")
    await expect(wall.locator("#view-title")).to_have_text("Cardiology", timeout=8_000)
    await expect(wall).to_have_url(re.compile(r"department=CARD"))
    await expect(wall.locator("#view-title")).to_have_text("Emergency", timeout=8_000)
    assert await wall.evaluate("history.length") == entries

    await wall.evaluate("window.stayed = true")
    await instance.stop()
    await expect(status).to_contain_text("Reconnecting", timeout=10_000)
    await register_patient(writer, hospital["ED"], "while the wall was alone")
    await instance.start()
    await expect(status).to_have_text("Live", timeout=RESTART_SECONDS)
    await expect(wall.locator("#login")).to_be_hidden()
    # ED's figures are in the overview and ED's own view (not Cardiology's): one comes round.
    await expect(cell(wall, "patients_waiting", "ED")).to_have_text("2", timeout=12_000)
    assert await wall.evaluate("window.stayed") is True, "the wall was reloaded"

    # A browser restarted by the wall's kiosk: the wall's credential is kept, no sign-in.
    again = await wall.context.new_page()
    await wall.close()
    await again.goto(f"{instance.url}/?wall=1&department=CARD")
    await expect(again.locator("#connection")).to_have_text("Live")
    await expect(again.locator("#login")).to_be_hidden()
    await expect(cell(again, "patients_waiting", "CARD")).to_have_text("1")


# -- phones, keyboards ------------------------------------------------------------------------


async def test_at_phone_width_nothing_scrolls_sideways_and_the_departments_are_cards(
    hospital: dict[str, int], server: LiveServer, token: Callable[..., str], open_page: OpenPage
) -> None:
    page = await open_page(width=360, height=780, is_mobile=True, has_touch=True)
    await page.goto(f"{server.url}/#token={token()}")
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator("#department-rows tr")).to_have_count(2)
    await expect(page.locator('figure.chart[data-series="admissions"]')).to_have_attribute(
        "data-points", "24"
    )
    assert not await scrolls_sideways(page)
    await expect(page.locator("#department-table thead")).to_be_hidden()
    row = page.locator("#department-rows tr").first
    assert await row.evaluate("row => getComputedStyle(row).display") == "grid"
    box = await row.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 360


async def test_the_page_is_operable_from_the_keyboard_with_a_visible_focus(
    hospital: dict[str, int], server: LiveServer, token: Callable[..., str], open_page: OpenPage
) -> None:
    page = await open_page()
    await page.goto(f"{server.url}/#token={token()}")
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator("#department-rows tr")).to_have_count(2)

    await page.keyboard.press("Tab")
    await expect(page.locator(".skip-link")).to_be_focused()
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    # To the filter, and choose a department with the arrow keys.
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "department-filter":
            break
    await expect(page.locator("#department-filter")).to_be_focused()
    await page.keyboard.press("ArrowDown")
    await expect(page).to_have_url(f"{server.url}/?department=CARD")
    await expect(page.locator("#view-title")).to_have_text("Cardiology")
    # The trends' range is a link like any other.
    await page.locator(".range a", has_text="7 days").focus()
    assert await page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{server.url}/?department=CARD&range=7d")


# -- what people see ----------------------------------------------------------------------------


async def test_screenshots_of_a_busy_hospital(
    serve: Serve, settings: Settings, token: Callable[..., str], open_page: OpenPage
) -> None:
    """The seeded hospital (three days of history) with the simulator running: the overview,
    a department, a wall and a phone, saved for people to look at, and readable (contrast)."""
    await seed_hospital(settings.database_url, zone=settings.zone)
    server = await serve()
    stop = asyncio.Event()
    async with HospitalSimulator(settings.database_url, seed=7, zone=settings.zone) as simulator:
        running = asyncio.create_task(simulator.run(speed=120, stop=stop))
        try:
            link = f"#token={token()}"
            views = (
                ("overview", "/", {"width": 1440, "height": 900}, True),
                ("department", "/?department=ED", {"width": 1440, "height": 900}, True),
                ("wall", "/?wall=1", {"width": 1920, "height": 1080}, False),
                ("wall-4k", "/?wall=1&department=CARD", {"width": 3840, "height": 2160}, False),
                ("phone", "/", {"width": 360, "height": 780, "is_mobile": True}, True),
            )
            for name, path, size, full_page in views:
                page = await open_page(**size)
                await page.goto(f"{server.url}{path}{link}")
                await expect(page.locator("#connection")).to_have_text("Live")
                await expect(page.locator('figure.chart[data-points="24"]')).to_have_count(4)
                # The simulator's next change arrives and flashes its figure.
                await expect(page.locator(".changed").first).to_be_attached(timeout=15_000)
                assert not await scrolls_sideways(page), name
                assert await contrast_failures(page) == [], name
                await save_screenshot(page, name, full_page=full_page)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await running
