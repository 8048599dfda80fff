""" "Why did this change?" on the page, in the system's Chromium, against a real service: a
number opens a dialog with the rows behind its last change (and never a patient's name), from
the mouse and the keyboard; a department admin's answer and requests stay in their department;
a refusal is said in words; a wall's numbers open nothing; axe-core finds nothing serious.

Screenshot for people: build/test-artifacts/why.png.
"""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.async_api import Locator, Page, Request, WebSocket, expect

from livedash.auth.sessions import hash_password
from livedash.store.models import Role
from livedash.testing.hospital import sql_now
from tests.support.browser import (
    Screens,
    axe_violations,
    cell,
    contrast_failures,
    save_screenshot,
)
from tests.support.live import LiveServer
from tests.support.writers import Users, Write

NAME = "Zebulon Quartermaine"  # a patient's name: never on the page
CLOCK = r"\d{1,2}:\d\d:\d\d(\s?[AP]M)?"  # the hospital's clock, as its locale writes it
EVENT = re.compile(r"^42\d*(\[.*\])$", re.DOTALL)  # a Socket.IO event frame, ack id or not


async def admit(writer: Write, department_id: int, name: str) -> int:
    """A patient under care from now on, written as the hospital's application would."""
    return await writer(
        "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
        "VALUES (?, ?, 'active', 0, ?)",
        (department_id, name, sql_now()),
    )


def seconds_of(clock: str) -> int:
    """Seconds since midnight of a time as the page writes it ("17:45:03", "5:45:03 PM")."""
    found = re.match(r"(\d{1,2}):(\d\d):(\d\d)(?:\s?([AP]M))?", clock)
    assert found, clock
    hours, minutes, seconds = (int(part) for part in found.group(1, 2, 3))
    if found.group(4):
        hours = hours % 12 + (12 if found.group(4) == "PM" else 0)
    return hours * 3600 + minutes * 60 + seconds


def dialog(page: Page) -> Locator:
    return page.get_by_role("dialog", name="Why did this change?")


def record_explains(page: Page) -> list[dict[str, Any]]:
    """Every `explain_metric` the page sends over its sockets, from now on."""
    sent: list[dict[str, Any]] = []

    def frame(payload: str | bytes) -> None:
        found = EVENT.match(payload) if isinstance(payload, str) else None
        if found:
            event, *data = json.loads(found.group(1))
            if event == "explain_metric":
                sent.append(data[0])

    def socket(ws: WebSocket) -> None:
        ws.on("framesent", frame)

    page.on("websocket", socket)
    return sent


async def test_a_number_shows_the_rows_behind_its_last_change_and_never_a_name(
    hospital: dict[str, int],
    server: LiveServer,
    users: Users,
    writer: Write,
    screens: Screens,
) -> None:
    password = "ann battery staple"
    users.save("ann", Role.SUPER_ADMIN, ())
    await users.settled()
    await writer(
        "UPDATE users SET password_hash = ? WHERE username = ?", (hash_password(password), "ann")
    )
    # axe is injected as a script: only a context that bypasses the page's CSP takes it.
    page = await screens.open(bypass_csp=True)
    await page.goto(server.url)
    await page.fill("#username", "ann")
    await page.fill("#password", password)
    await page.click("#password-login button[type=submit]")
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator("#department-rows th a")).to_have_text(["Cardiology", "Emergency"])
    patients = cell(page, "patients_active", None)
    await expect(patients).to_have_text("0")
    await expect(patients).to_have_attribute("role", "button")

    patient = await admit(writer, hospital["ED"], NAME)
    await expect(patients).to_have_text("1")
    await patients.click()
    why = dialog(page)
    await expect(why).to_be_visible()
    await expect(page.locator("#why-title")).to_be_focused()
    await expect(why.locator(".why-what")).to_have_text(
        "Patients under care · Whole hospital · now 1"
    )
    newest = why.locator(".why-change").first
    await expect(newest).to_have_attribute("data-reason", "rows")
    await expect(newest.locator(".why-before")).to_have_text("0")
    await expect(newest.locator(".why-after")).to_have_text("1")
    await expect(newest.locator(".why-delta")).to_have_text("+1")
    await expect(newest.locator(".why-when time")).to_have_text(re.compile(rf"^{CLOCK}$"))
    await expect(newest.locator(".why-ago")).to_have_text(re.compile(r"just now|sec"))
    row = newest.locator(".why-row")
    await expect(row).to_have_count(1)
    await expect(row).to_have_attribute("data-table", "patients")
    await expect(row).to_have_attribute("data-op", "insert")
    await expect(row).to_have_attribute("data-id", str(patient))
    await expect(row).to_have_text(
        re.compile(rf"^Patients: row {patient} added · Emergency · committed {CLOCK}$")
    )
    # The row was committed when the value changed, on the hospital's clock both.
    changed = await newest.locator(".why-when time").inner_text()
    committed = await row.locator("time").inner_text()
    assert abs(seconds_of(changed) - seconds_of(committed)) % 86_400 <= 5, (changed, committed)
    assert NAME not in await why.inner_text()
    assert NAME not in await why.inner_html()
    assert await axe_violations(page) == []
    assert await contrast_failures(page) == []
    await save_screenshot(page, "why", full_page=False)

    # Escape closes it and the focus is back on the number; Enter and Space open it again.
    await page.keyboard.press("Escape")
    await expect(why).to_be_hidden()
    await expect(patients).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(why.locator(".why-delta").first).to_have_text("+1")
    await why.get_by_role("button", name="Close").click()
    await expect(why).to_be_hidden()
    await expect(patients).to_be_focused()
    await page.keyboard.press(" ")
    await expect(why).to_be_visible()
    await page.keyboard.press("Escape")

    # A refusal is said in words (a number the service does not know, as an old page might ask).
    await patients.evaluate("node => { node.dataset.metric = 'no_such_metric'; }")
    await page.locator('[data-metric="no_such_metric"]').click()
    await expect(why.locator(".form-error")).to_have_text(
        "Cannot say why: Unknown metric: no_such_metric."
    )
    await expect(why.locator(".why-change")).to_have_count(0)
    await expect(page.locator("#notice")).to_be_hidden()  # said once, where it was asked


async def test_a_department_admin_sees_only_their_departments_changes(
    hospital: dict[str, int],
    server: LiveServer,
    token: Any,
    users: Users,
    writer: Write,
    screens: Screens,
) -> None:
    page = await screens.open(bypass_csp=True, width=390, height=844, is_mobile=True)
    explained = record_explains(page)
    asked_over_rest: list[str] = []

    def over_rest(request: Request) -> None:
        if "/changes" in request.url:
            asked_over_rest.append(request.url)

    page.on("request", over_rest)
    signed = token(Role.ADMIN, ("ED",), sub="ed-admin")
    await users.settled()
    await page.goto(f"{server.url}/#token={signed}")
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator("#view-title")).to_have_text("Emergency")
    patients = cell(page, "patients_active", "ED")
    await expect(patients).to_have_text("0")

    elsewhere = await admit(writer, hospital["CARD"], "Cora Cardiac")
    ours = await admit(writer, hospital["ED"], NAME)
    await expect(patients).to_have_text("1")
    await patients.focus()
    await page.keyboard.press("Enter")
    why = dialog(page)
    await expect(why.locator(".why-what")).to_have_text("Patients under care · Emergency · now 1")
    rows = why.locator(".why-row")
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-id", str(ours))
    await expect(rows).to_contain_text("· Emergency ·")
    await expect(why.locator(f'.why-row[data-id="{elsewhere}"]')).to_have_count(0)
    for text in (await page.locator("body").inner_text(), await why.inner_html()):
        assert "Cardiology" not in text
        assert "Cora" not in text
        assert NAME not in text
    assert "CARD" not in await page.locator("#view").inner_html()
    assert await axe_violations(page) == []
    await save_screenshot(page, "why-phone", full_page=False)
    await page.keyboard.press("Escape")
    await expect(patients).to_be_focused()

    # Every question the page asked was about a number it shows: this department's.
    assert explained, "the page asked nothing over its socket"
    assert {(ask["metric"], ask.get("department")) for ask in explained} == {
        ("patients_active", "ED")
    }
    assert asked_over_rest == []


async def test_a_walls_numbers_open_nothing(
    hospital: dict[str, int], server: LiveServer, token: Any, users: Users, screens: Screens
) -> None:
    signed = token(Role.VIEWER, ("ED", "CARD"), sub="wall")
    await users.settled()
    page = await screens.open(width=1920, height=1080)
    await page.goto(f"{server.url}/?wall=1#token={signed}")
    await expect(page.locator("#connection")).to_have_text("Live")
    patients = cell(page, "patients_active", "ED")
    await expect(patients).to_have_text("0")
    await expect(page.locator("[data-metric][role=button]")).to_have_count(0)
    await expect(page.locator("[data-metric][tabindex]")).to_have_count(0)
    await patients.click()
    await expect(page.locator("dialog")).to_have_count(0)
