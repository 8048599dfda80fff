"""The administrators' page in Debian's Firefox ESR, against a real service: signing in, a change
reaching its tile, a department view, phone width; no script or console error on the way.

Driven by puppeteer-core over WebDriver BiDi; tests/support/firefox.py says why not Playwright.
The screenshot for people lands in build/test-artifacts/firefox-overview.png.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from livedash.auth.sessions import hash_password
from livedash.store.models import Role
from tests.support.browser import Sign
from tests.support.firefox import Firefox, firefox
from tests.support.live import LiveServer
from tests.support.writers import Users, Write, register_patient

LIVE = "Live"


@pytest.fixture
async def firefox_esr() -> AsyncIterator[Firefox]:
    """Debian's Firefox ESR; every page it opened must end without a script, console or CSP
    error."""
    async with firefox() as browser:
        yield browser
        problems = [found for page in browser.pages for found in await page.problems()]
        assert problems == [], problems


def tile(metric: str, department: str | None = None) -> str:
    """The selector of the element showing `metric` for `department` (None: the hospital)."""
    return f'[data-metric="{metric}"][data-department="{department or ""}"]'


async def with_password(users: Users, writer: Write, name: str, role: Role) -> str:
    """A user `name` who signs in with the password returned."""
    password = f"{name} battery staple"
    users.save(name, role, ())
    await users.settled()
    await writer(
        "UPDATE users SET password_hash = ? WHERE username = ?", (hash_password(password), name)
    )
    return password


async def test_signing_in_with_a_password_shows_live_tiles_that_follow_the_database(
    hospital: dict[str, int],
    server: LiveServer,
    users: Users,
    writer: Write,
    firefox_esr: Firefox,
) -> None:
    password = await with_password(users, writer, "ann", Role.SUPER_ADMIN)
    page = await firefox_esr.open(width=1440, height=900)

    await page.goto(server.url)
    await page.fill("#username", "ann")
    await page.fill("#password", password)
    await page.click("#password-login button[type=submit]")
    await page.expect_text("#connection", LIVE)
    await page.expect_text("#user", "ann · super admin")
    await page.expect_count(".now .tile", 5)
    await page.expect_count(".today .tile", 3)
    await page.expect_texts("#department-rows th a", ["Cardiology", "Emergency"])
    await page.expect_text(tile("patients_waiting"), "2")
    await page.expect_text(tile("bed_occupancy_rate", "CARD"), "0.0%")

    await register_patient(writer, hospital["ED"], "walk-in")
    written = time.monotonic()
    await page.expect_text(tile("patients_waiting"), "3", within_ms=1000)
    assert time.monotonic() - written < 1.0
    await page.expect_text(tile("patients_waiting", "ED"), "2", within_ms=1000)
    await page.expect_text(tile("patients_waiting", "CARD"), "1")

    await writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital["CARD-1A"],))
    written = time.monotonic()
    await page.expect_text(tile("bed_occupancy_rate", "CARD"), "25.0%", within_ms=1000)
    assert time.monotonic() - written < 1.0
    await page.expect_count('figure.chart[data-points="24"]', 4)
    await page.screenshot("firefox-overview")


async def test_a_department_view_by_address_lists_only_the_allowed_departments_by_name(
    hospital: dict[str, int], server: LiveServer, sign: Sign, writer: Write, firefox_esr: Firefox
) -> None:
    await writer("INSERT INTO departments (code, name) VALUES (?, ?)", ("ONC", "Oncology"))
    page = await firefox_esr.open()

    await page.goto(f"{server.url}/?department=ED#token={await sign(Role.ADMIN, ('ED', 'CARD'))}")
    await page.expect_text("#connection", LIVE)
    await page.expect_text("#view-title", "Emergency")
    await page.expect_texts(
        "#department-filter option", ["All my departments", "Cardiology", "Emergency"]
    )
    assert await page.evaluate("document.querySelector('#department-filter').value") == "ED"
    await page.expect_text(tile("patients_waiting", "ED"), "1")
    await page.expect_count("#department-table", 0)
    assert "Oncology" not in await page.evaluate("document.querySelector('#view').textContent")

    await page.select("#department-filter", "CARD")
    await page.expect_text("#view-title", "Cardiology")
    assert await page.url() == f"{server.url}/?department=CARD"


async def test_at_phone_width_nothing_scrolls_sideways(
    hospital: dict[str, int], server: LiveServer, sign: Sign, firefox_esr: Firefox
) -> None:
    page = await firefox_esr.open(width=360, height=780)

    await page.goto(f"{server.url}/#token={await sign()}")
    await page.expect_text("#connection", LIVE)
    await page.expect_count("#department-rows tr", 2)
    await page.expect_count('figure.chart[data-points="24"]', 4)
    assert await page.evaluate("innerWidth") == 360
    # Firefox's scrollbar takes its width from the screen: the page must fit what is left.
    wide, room = await page.evaluate(
        "[document.scrollingElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert wide <= room, f"the page is {wide} px wide in {room} px"
    display = "getComputedStyle(document.querySelector('#department-rows tr')).display"
    assert await page.evaluate(display) == "grid"
