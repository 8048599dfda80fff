""" "Why did this change?" on the page, in the system's Chromium, against a real service: a
number opens a dialog with the rows behind its last change (and never a patient's name), from
the mouse and the keyboard; a department admin's answer and requests stay in their department;
a refusal is said in words; a wall's numbers open nothing; axe-core finds nothing serious.
While the socket is away (reconnecting, or lost while the question waited), the same answer
comes over REST; a new day and the roll-ups are said as causes without rows.

Screenshot for people: build/test-artifacts/why.png.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.async_api import Locator, Page, Request, Route, WebSocket, WebSocketRoute, expect

from livedash.auth.sessions import hash_password
from livedash.metrics.causes import CHANGES_PER_CAUSE
from livedash.metrics.clock import ManualClock
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.hospital import sql_now
from tests.support.browser import (
    Screens,
    axe_violations,
    cell,
    contrast_failures,
    save_screenshot,
)
from tests.support.live import LiveServer, Serve
from tests.support.writers import Users, Write, register_patient

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


async def admit_at(writer: Write, patient: int, department_id: int, at: datetime) -> int:
    """An admission that began `at` (aware), written as the hospital's application would."""
    return await writer(
        "INSERT INTO admissions (patient_id, department_id, admitted_at, discharged_at) "
        "VALUES (?, ?, ?, NULL)",
        (patient, department_id, at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")),
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


class Socket:
    """The page's socket, through Playwright to the service: recorded, and cut at will (the
    service and its REST API stay up, as when a proxy drops WebSockets)."""

    def __init__(self) -> None:
        self.cut = False
        self.cut_on_explain = False  # drop the next `explain_metric` and cut the socket
        self.explained: list[dict[str, Any]] = []
        self._open: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self._dropping: set[asyncio.Task[None]] = set()

    async def install(self, page: Page) -> None:
        await page.route_web_socket(re.compile(r"/socket\.io/"), self._route)
        await page.route(re.compile(r"/socket\.io/\?"), self._polling)

    async def _route(self, page_side: WebSocketRoute) -> None:
        if self.cut:
            await page_side.close()
            return
        service = page_side.connect_to_server()
        self._open.append((page_side, service))

        def sent(message: str | bytes) -> None:
            found = EVENT.match(message) if isinstance(message, str) else None
            if found:
                event, *data = json.loads(found.group(1))
                if event == "explain_metric":
                    if self.cut_on_explain:
                        self.cut_on_explain = False
                        dropping = asyncio.get_running_loop().create_task(self.drop())
                        self._dropping.add(dropping)
                        dropping.add_done_callback(self._dropping.discard)
                        return  # never reaches the service: no answer comes
                    self.explained.append(data[0])
            service.send(message)

        page_side.on_message(sent)

    async def _polling(self, route: Route) -> None:
        await (route.abort() if self.cut else route.continue_())

    async def drop(self) -> None:
        """Cut every open socket, and refuse the page's attempts to reconnect."""
        self.cut = True
        opened, self._open = self._open, []
        for page_side, service in opened:
            await page_side.close()
            await service.close()


async def shows_the_batch(why: Locator, batch: range) -> None:
    """The dialog shows the one update of a batch of patients: its last rows, and "more"."""
    newest = why.locator(".why-change").first
    await expect(why.locator(".why-status")).to_have_text("Its last update:")
    await expect(newest.locator(".why-delta")).to_have_text(f"+{len(batch)}")
    await expect(newest.locator(".why-row")).to_have_count(CHANGES_PER_CAUSE)
    ids = [await row.get_attribute("data-id") for row in await newest.locator(".why-row").all()]
    assert ids == [str(n) for n in batch[-CHANGES_PER_CAUSE:]]
    await expect(newest.locator(".why-more")).to_have_text("…and more rows in the same batch.")
    await expect(why.locator(".form-error")).to_be_hidden()
    assert NAME not in await why.inner_html()


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


async def test_while_the_socket_is_away_the_dialog_asks_over_rest(
    hospital: dict[str, int],
    server: LiveServer,
    token: Any,
    users: Users,
    writer: Write,
    screens: Screens,
) -> None:
    page = await screens.open()
    socket = Socket()
    await socket.install(page)
    asked_over_rest: list[str] = []
    page.on("request", lambda r: asked_over_rest.append(r.url) if "/changes" in r.url else None)
    signed = token(Role.ADMIN, ("ED",), sub="ed-admin")
    await users.settled()
    await page.goto(f"{server.url}/#token={signed}")
    status = page.locator("#connection")
    await expect(status).to_have_text("Live")
    patients = cell(page, "patients_active", "ED")
    await expect(patients).to_have_text("0")
    # Seven patients under care in one commit: one update, its last five rows, "and more".
    batch = range(901, 908)
    values = ", ".join(["(?, ?, ?, 'active', 0, ?)"] * len(batch))
    await writer(
        "INSERT INTO patients (id, department_id, name, status, emergency, registered_at) "
        f"VALUES {values}",
        tuple(part for n in batch for part in (n, hospital["ED"], f"{NAME} {n}", sql_now())),
    )
    await expect(patients).to_have_text("7")

    why = dialog(page)
    # Reconnecting: the socket cannot ask, so the page asks GET /api/metrics/…/changes.
    await socket.drop()
    await expect(status).to_contain_text("Reconnecting", timeout=10_000)
    async with page.expect_response(re.compile(r"/api/metrics/patients_active/changes")) as got:
        await patients.click()
    answer = await got.value
    assert answer.ok
    assert answer.url.endswith("/api/metrics/patients_active/changes?department=ED")
    await shows_the_batch(why, batch)
    await page.keyboard.press("Escape")
    assert socket.explained == []

    # Back, then lost while the question waits: the service never sees it, the socket.io
    # client fails it at once, and REST answers instead of "did not answer in time".
    socket.cut = False
    await expect(status).to_have_text("Live", timeout=15_000)
    socket.cut_on_explain = True
    async with page.expect_response(re.compile(r"/api/metrics/patients_active/changes")):
        await patients.click()
    await shows_the_batch(why, batch)
    await page.keyboard.press("Escape")
    assert socket.explained == []
    assert len(asked_over_rest) == 2

    # Live again: the socket answers, and REST is not asked.
    socket.cut = False
    await expect(status).to_have_text("Live", timeout=15_000)
    await patients.click()
    await shows_the_batch(why, batch)
    assert socket.explained == [{"metric": "patients_active", "department": "ED"}]
    assert len(asked_over_rest) == 2


MIDNIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
"""Midnight in Berlin, the test hospital's zone."""


async def test_a_new_day_and_the_roll_ups_are_said_without_rows(
    hospital: dict[str, int],
    settings: Settings,
    serve: Serve,
    token: Any,
    users: Users,
    writer: Write,
    screens: Screens,
) -> None:
    clock = ManualClock(MIDNIGHT - timedelta(minutes=2))
    quick = {"time_refresh_seconds": 0.05, "history_refresh_seconds": 0.2}
    server = await serve(settings.model_copy(update=quick), clock)
    signed = token()
    await users.settled()
    page = await screens.open()
    await page.goto(f"{server.url}/#token={signed}")
    await expect(page.locator("#connection")).to_have_text("Live")
    today = cell(page, "admissions_today", None)
    growth = cell(page, "admissions_growth_day", None).first  # the panel's; a chart's too
    await expect(today).to_have_text("0")

    # An admission yesterday at this hour and one today: "vs yesterday" moves on the
    # roll-ups; then midnight, and the day's admissions start over.
    patient = await register_patient(writer, hospital["ED"], NAME)
    await admit_at(writer, patient, hospital["ED"], clock.now() - timedelta(days=1, seconds=30))
    await expect(growth).to_have_text("-100%")
    await admit_at(writer, patient, hospital["ED"], clock.now() - timedelta(seconds=30))
    await expect(today).to_have_text("1")
    await expect(growth).to_have_text("0%")
    clock.advance(timedelta(minutes=3))
    await expect(today).to_have_text("0")

    why = dialog(page)
    await today.click()
    changes = why.locator(".why-change")
    await expect(changes.first).to_have_attribute("data-reason", "new_day")
    await expect(changes.first.locator(".why-reason")).to_have_text(
        "A new day began (midnight): the day's figures started over."
    )
    await expect(changes.first.locator(".why-before")).to_have_text("1")
    await expect(changes.first.locator(".why-after")).to_have_text("0")
    minus = "\u2212"  # as the page writes a fall
    await expect(changes.first.locator(".why-delta")).to_have_text(f"{minus}1")
    await expect(changes.first.locator(".why-row")).to_have_count(0)
    # The admission that counted before midnight is the update below it.
    await expect(changes.nth(1)).to_have_attribute("data-reason", "rows")
    await expect(changes.nth(1).locator(".why-row")).to_have_attribute("data-table", "admissions")
    await page.keyboard.press("Escape")

    await growth.click()
    level = why.locator('.why-change[data-reason="roll_ups"]').filter(
        has=page.locator(".why-delta", has_text="+100")
    )
    await expect(level).to_have_count(1)
    await expect(level.locator(".why-reason")).to_have_text("Recomputed from the hourly roll-ups.")
    await expect(level.locator(".why-row")).to_have_count(0)
    await expect(why.locator(".why-more")).to_have_count(0)
    assert NAME not in await why.inner_html()
