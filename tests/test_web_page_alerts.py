"""The page's alerts and notifications in the system's Chromium, against a real service: the
alerts panel (live, acknowledged, silenced, resolved; no buttons for viewers), the bell, the
browser's notifications, the preferences page, a department admin's privacy, and axe-core on
every page.

Screenshots for people land in build/test-artifacts/ (alerts-panel, bell-open, preferences).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from livedash.notifications.push import generate_vapid_keys
from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.alerting import bearer, set_beds, with_rules
from tests.support.browser import (
    Screens,
    Sign,
    axe_violations,
    contrast_failures,
    save_element_screenshot,
    save_screenshot,
    scrolls_sideways,
)
from tests.support.live import LiveServer, Serve
from tests.support.writers import Write

TITLE = "More than one bed occupied"  # tests/support/alerting.py's rule
SEVERITIES = """
rules:
  - name: ward-full
    metric: bed_occupancy_rate
    scope: each_department
    condition: above
    threshold: 0.4
    clear_at: 0.3
    severity: critical
    summary: Bed occupancy above 40 %
  - name: beds-busy
    metric: beds_occupied
    scope: each_department
    condition: above
    threshold: 1
    severity: high
    summary: More than one bed occupied
  - name: waiting
    metric: patients_waiting
    scope: each_department
    condition: above
    threshold: 0
    severity: low
    summary: Patients waiting to be admitted
"""
"""Three severities at once: two ED beds occupied (of four), one patient waiting in each."""
# A Notification API that records what the page shows instead of showing it.
RECORD_NOTIFICATIONS = """
window.__shown = [];
class RecordedNotification {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__shown.push({ title, ...options }); }
  close() {}
}
Object.defineProperty(window, "Notification", { value: RecordedNotification });
"""


@pytest.fixture
async def alerting(serve: Serve, settings: Settings, tmp_path: Path) -> LiveServer:
    """A server whose rule raises a HIGH alert in a department with two beds occupied."""
    return await serve(with_rules(settings, tmp_path))


async def open_as(
    screens: Screens, server: LiveServer, token: str, path: str = "/", **options: object
) -> Page:
    page = await screens.open(**options)
    await page.goto(f"{server.url}{path}#token={token}")
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator(".alerts-summary")).not_to_contain_text("loading")
    return page


def panel(page: Page) -> Locator:
    return page.locator("#alerts-panel")


# -- the alerts panel -------------------------------------------------------------------------


async def test_an_alert_appears_within_a_second_and_an_admin_acknowledges_it_with_a_note(
    hospital: dict[str, int],
    alerting: LiveServer,
    sign: Sign,
    writer: Write,
    screens: Screens,
) -> None:
    admin = await open_as(
        screens, alerting, await sign(Role.ADMIN, ("ED",), sub="ed-admin"), "/?department=ED"
    )
    viewer = await open_as(
        screens, alerting, await sign(Role.VIEWER, ("ED",), sub="ed-viewer"), "/?department=ED"
    )
    await expect(panel(admin).locator(".alerts-summary")).to_have_text(
        "The alerts of Emergency: none open"
    )

    await set_beds(writer, hospital, ["ED-1A", "ED-1B"], "occupied")
    written = time.monotonic()
    card = panel(admin).locator(".alert-card")
    await expect(card).to_have_count(1, timeout=1000)
    assert time.monotonic() - written < 1.0
    await expect(card.locator(".severity-badge")).to_have_text("High")
    await expect(card).to_have_attribute("data-severity", "high")
    await expect(card.locator(".alert-title")).to_have_text(TITLE)
    await expect(card.locator(".alert-where")).to_have_text("Emergency")
    await expect(card.locator(".alert-state")).to_have_text("Firing")
    await expect(card.locator(".alert-status")).to_have_text("Not acknowledged")
    await expect(card.locator(".alert-measure")).to_have_text("Value 2 · fires above 1")
    await expect(card.locator(".alert-age")).to_have_text("just now")
    await expect(panel(admin).locator(".alerts-summary")).to_have_text(
        "The alerts of Emergency: 1 open, 1 not acknowledged"
    )
    # The viewer sees the same alert, and no button at all.
    seen = panel(viewer).locator(".alert-card")
    await expect(seen).to_have_count(1, timeout=1000)
    await expect(seen.locator("button")).to_have_count(0)
    await expect(panel(viewer).locator("button:visible")).to_have_count(0)
    await expect(panel(viewer).locator("form")).to_have_count(0)

    # The age ticks.
    await expect(card.locator(".alert-age")).to_have_text(re.compile(r"\d+ sec"), timeout=8000)

    await card.get_by_role("button", name="Acknowledge").click()
    form = card.get_by_role("form", name="Acknowledge the alert")
    await expect(form.get_by_label("Note (optional)")).to_be_focused()
    await form.get_by_label("Note (optional)").fill("two discharges before noon")
    await save_screenshot(admin, "alerts-panel-acknowledging", full_page=False)
    await form.get_by_role("button", name="Acknowledge").click()
    await expect(form).to_have_count(0)
    acknowledged = card.locator(".alert-acknowledged")
    await expect(acknowledged).to_contain_text("Acknowledged by ed-admin at ")
    await expect(acknowledged.locator(".alert-note")).to_have_text("two discharges before noon")
    await expect(card.locator(".alert-status")).to_have_text("Acknowledged")
    await expect(card.get_by_role("button", name="Acknowledge")).to_be_hidden()
    await expect(card.locator(".alert-title")).to_be_focused()
    # The viewer is told at once: who, and why.
    await expect(seen.locator(".alert-acknowledged")).to_contain_text("Acknowledged by ed-admin")
    await expect(seen.locator(".alert-note")).to_have_text("two discharges before noon")
    await expect(seen.locator(".alert-status")).to_have_text("Acknowledged")
    await save_element_screenshot(panel(admin), "alerts-panel")


async def test_an_admin_silences_and_resolves_and_a_refusal_is_shown_as_the_server_says(
    hospital: dict[str, int],
    alerting: LiveServer,
    sign: Sign,
    writer: Write,
    screens: Screens,
) -> None:
    ann = await sign(sub="ann")
    page = await open_as(screens, alerting, await sign(Role.ADMIN, ("ED",), sub="ed-admin"))
    await set_beds(writer, hospital, ["ED-1A", "ED-1B"], "occupied")
    card = panel(page).locator(".alert-card")
    await expect(card).to_have_count(1)

    # Silence: a duration picker; the alert stays, its notifications are held back.
    await card.get_by_role("button", name="Silence").click()
    form = card.get_by_role("form", name="Silence notifications")
    await expect(form).to_contain_text("rule “beds-busy” in Emergency")
    await form.get_by_label("For").select_option(label="4 hours")
    await form.get_by_label("Comment (optional)").fill("ward being refitted")
    await form.get_by_role("button", name="Silence").click()
    silenced = card.locator(".alert-silenced")
    await expect(silenced).to_contain_text("Notifications silenced until ")
    await expect(silenced).to_contain_text("by ed-admin: “ward being refitted”")
    async with httpx.AsyncClient(base_url=alerting.url, headers=bearer(ann)) as client:
        silences = (await client.get("/api/alerts/silences")).json()["items"]
    assert [(s["rule"], s["department"], s["comment"]) for s in silences] == [
        ("beds-busy", "ED", "ward being refitted")
    ]
    hours = (
        time.mktime(time.strptime(silences[0]["ends_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        - time.mktime(time.strptime(silences[0]["starts_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    ) / 3600
    assert 3.9 < hours < 4.1
    await silenced.get_by_role("button", name="End silence").click()
    await expect(silenced).to_be_hidden()

    # A refusal is shown as the service words it (problem details' `detail`).
    refusal = {
        "type": "https://livedash.dev/problems/forbidden",
        "title": "Forbidden",
        "status": 403,
        "detail": "only admins and super_admins resolve alerts",
        "code": "forbidden",
    }
    await page.route(
        "**/api/alerts/*/resolve",
        lambda route: route.fulfill(
            status=403, content_type="application/problem+json", body=json.dumps(refusal)
        ),
    )
    await card.get_by_role("button", name="Resolve").click()
    form = card.get_by_role("form", name="Resolve the alert")
    await form.get_by_role("button", name="Resolve alert").click()
    await expect(form.get_by_role("alert")).to_have_text(
        "Not done: Only admins and super_admins resolve alerts."
    )
    await page.unroute("**/api/alerts/*/resolve")

    await form.get_by_role("button", name="Resolve alert").click()
    await expect(card).to_have_count(0)
    await expect(panel(page).locator(".alerts-summary")).to_have_text(
        "The alerts of Emergency: none open"
    )
    await expect(panel(page).locator(".alerts-empty")).to_be_visible()
    await expect(page.locator("#alerts-title")).to_be_focused()
    async with httpx.AsyncClient(base_url=alerting.url, headers=bearer(ann)) as client:
        resolved = (await client.get("/api/alerts", params={"status": "resolved"})).json()
    assert [(a["status"], a["resolved_by"]) for a in resolved["items"]] == [
        ("resolved", "ed-admin")
    ]

    # The list itself refused: said so, and read again on request.
    unavailable = {
        **refusal,
        "status": 503,
        "code": "unavailable",
        "detail": "the database cannot be reached",
    }
    other = await screens.open()
    await other.route(
        "**/api/alerts?*",
        lambda route: route.fulfill(
            status=503, content_type="application/problem+json", body=json.dumps(unavailable)
        ),
    )
    await other.goto(f"{alerting.url}/#token={await sign(Role.ADMIN, ('ED',), sub='ed-admin')}")
    await expect(other.locator("#view-title")).to_have_text("Emergency")  # names are in
    await expect(other.locator("figure.chart[data-points='24']")).to_have_count(4)
    problem = panel(other).locator(".alerts-problem")
    await expect(problem).to_contain_text(
        "The alerts could not be read: The database cannot be reached."
    )
    await other.unroute("**/api/alerts?*")
    await problem.get_by_role("button", name="Try again").click()
    await expect(problem).to_be_hidden()
    await expect(panel(other).locator(".alerts-summary")).to_have_text(
        "The alerts of Emergency: none open"
    )


async def test_a_department_admin_never_sees_another_departments_alert(
    hospital: dict[str, int],
    alerting: LiveServer,
    sign: Sign,
    writer: Write,
    screens: Screens,
) -> None:
    await writer("INSERT INTO departments (code, name) VALUES (?, ?)", ("ONC", "Oncology"))
    page = await open_as(screens, alerting, await sign(Role.ADMIN, ("ED", "ONC"), sub="ed-admin"))
    await expect(page.locator("#view-title")).to_have_text("My departments")
    await set_beds(writer, hospital, ["CARD-1A", "CARD-1B"], "occupied")
    await set_beds(writer, hospital, ["ED-1A", "ED-1B"], "occupied")
    await expect(panel(page).locator(".alert-card")).to_have_count(1)
    await expect(panel(page).locator(".alert-where")).to_have_text("Emergency")
    ann = await sign(sub="ann")
    async with httpx.AsyncClient(base_url=alerting.url, headers=bearer(ann)) as client:
        every = (await client.get("/api/alerts")).json()["items"]
    assert sorted(alert["department"] for alert in every) == ["CARD", "ED"]
    await page.locator("#bell-button").click()
    await expect(page.locator(".bell-item")).to_have_count(1)
    await expect(page.locator(".bell-meta")).to_contain_text("Emergency")

    # Nowhere on the page: not in the panel, the bell, the filter, nor any view (asking for
    # Cardiology's by its address gets a notice that repeats the code asked for, and nothing).
    await page.wait_for_timeout(500)  # anything late would have come by now
    for view in ("/", "/?department=ED", "/?department=CARD"):
        await page.evaluate(
            f"history.pushState(null, '', '{view}'); dispatchEvent(new PopStateEvent('popstate'))"
        )
        await expect(page.locator(".alerts-summary")).not_to_contain_text("loading")
        for part in (".topbar", "#view"):
            text = await page.locator(part).inner_text()
            html = await page.locator(part).inner_html()
            assert "Cardiology" not in text, view
            assert "CARD" not in html, view
        assert "Cardiology" not in await page.locator("body").inner_text()
    await expect(page.locator("#notice")).to_have_text(
        "You cannot see the department “CARD”: showing the overview."
    )


# -- the bell and the browser's notifications --------------------------------------------------


async def test_the_bell_counts_live_marks_read_and_the_browser_notifies_once_allowed(
    hospital: dict[str, int],
    alerting: LiveServer,
    sign: Sign,
    writer: Write,
    screens: Screens,
) -> None:
    ann = await sign(sub="ann")
    page = await screens.open()
    await page.add_init_script(RECORD_NOTIFICATIONS)
    await page.goto(f"{alerting.url}/#token={ann}")
    await expect(page.locator("#connection")).to_have_text("Live")
    bell = page.locator("#bell-button")
    await expect(bell).to_have_accessible_name("Notifications, no unread")
    await expect(bell.locator(".bell-count")).to_be_hidden()

    # Browser notifications: only once asked for, with a button; Web Push needs a VAPID key.
    await bell.click()
    await expect(bell).to_have_attribute("aria-expanded", "true")
    bell_panel = page.locator(".bell-panel")
    await expect(bell_panel.locator(".bell-empty")).to_have_text("No notifications yet.")
    device = bell_panel.locator(".device")
    await expect(device.locator(".device-status")).to_have_text(
        "Browser notifications are off on this device."
    )
    await expect(device.locator(".device-push")).to_have_text(
        "Web Push is not set up on this server (it has no VAPID key): notifications come only "
        "while this page is open."
    )
    await device.get_by_role("button", name="Turn on browser notifications").click()
    await expect(device.locator(".device-status")).to_have_text(
        "Browser notifications are on while this page is open."
    )
    await expect(device.get_by_role("button", name="Turn off")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(bell_panel).to_be_hidden()
    await expect(bell).to_be_focused()

    await set_beds(writer, hospital, ["ED-1A", "ED-1B"], "occupied")
    await expect(bell).to_have_accessible_name("Notifications, 1 unread")
    await expect(bell.locator(".bell-count")).to_have_text("1")
    shown = await page.evaluate("window.__shown")
    assert [(n["title"], n["body"], n["tag"]) for n in shown] == [
        (f"[HIGH] {TITLE}", "New alert", "alert-1")
    ]
    await set_beds(writer, hospital, ["CARD-1A", "CARD-1B"], "occupied")
    await expect(bell.locator(".bell-count")).to_have_text("2")

    await bell.click()
    items = bell_panel.locator(".bell-item")
    await expect(items).to_have_count(2)
    await expect(items.locator(".bell-meta")).to_contain_text(
        [re.compile("^Raised · Cardiology · "), re.compile("^Raised · Emergency · ")]
    )
    await expect(items.locator(".severity-badge")).to_have_text(["High", "High"])
    await save_element_screenshot(page.locator(".bell"), "bell-open-element")
    await save_screenshot(page, "bell-open", full_page=False)

    await items.nth(1).get_by_role("button", name=re.compile("^Mark read")).click()
    await expect(bell.locator(".bell-count")).to_have_text("1")
    await expect(items.nth(1)).to_have_attribute("data-read", "true")
    await bell_panel.get_by_role("button", name="Mark all read").click()
    await expect(bell).to_have_accessible_name("Notifications, no unread")
    await expect(items.nth(0)).to_have_attribute("data-read", "true")
    async with httpx.AsyncClient(base_url=alerting.url, headers=bearer(ann)) as client:
        assert (await client.get("/api/notifications")).json()["unread"] == 0
    # The count is the service's: a reload shows the same.
    await page.reload()
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(bell).to_have_accessible_name("Notifications, no unread")

    # A notification leads to its alert, picked out in its department's view.
    await bell.click()
    await items.nth(1).get_by_role("link").click()
    await expect(page).to_have_url(re.compile(r"\?department=ED&alert=1$"))
    picked = panel(page).locator(".alert-card.picked")
    await expect(picked).to_have_attribute("data-alert-id", "1")
    await expect(picked.locator(".alert-title")).to_be_focused()
    await expect(bell_panel).to_be_hidden()

    # On a phone the open bell fits the screen.
    phone = await screens.open(width=360, height=780, is_mobile=True, has_touch=True)
    await phone.goto(f"{alerting.url}/#token={ann}")
    await phone.locator("#bell-button").click()
    await expect(phone.locator(".bell-item")).to_have_count(2)
    box = await phone.locator(".bell-panel").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 360
    assert not await scrolls_sideways(phone)
    await save_screenshot(phone, "bell-open-phone", full_page=False)


# -- preferences ------------------------------------------------------------------------------


async def test_preferences_are_saved_and_each_refusal_is_shown_at_its_field(
    hospital: dict[str, int],
    server: LiveServer,
    sign: Sign,
    writer: Write,
    screens: Screens,
) -> None:
    await writer("INSERT INTO departments (code, name) VALUES (?, ?)", ("ONC", "Oncology"))
    ed_admin = await sign(Role.ADMIN, ("ED", "CARD"), sub="ed-admin")
    page = await screens.open()
    await page.goto(f"{server.url}/?page=preferences#token={ed_admin}")
    await expect(page.locator("#view-title")).to_have_text("Notification preferences")
    await expect(page.locator("#nav a[aria-current=page]")).to_have_text("Preferences")
    await expect(page.locator("#filter")).to_be_hidden()
    form = page.locator("form.preferences-fields")
    await expect(form.get_by_label("In the app (the bell)")).to_be_checked()
    await expect(form.get_by_label("Minimum severity")).to_have_value("medium")
    await expect(form.get_by_label("Every department I may see")).to_be_checked()
    await form.get_by_label("Only these:").check()
    # By name, only those this admin may see.
    await expect(form.locator(".department-choices label")).to_have_text(
        ["Cardiology", "Emergency"]
    )

    email = form.get_by_label("E-mail address")
    await form.get_by_label("E-mail (high and critical alerts)").check()
    await form.get_by_role("button", name="Save preferences").click()
    # Each refusal at its field; the focus on the first of them.
    await expect(form.get_by_label("Only these:")).to_be_focused()
    await expect(email).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(f"#{await email.get_attribute('id')}-error")).to_have_text(
        "Give an e-mail address for the e-mail channel."
    )
    await expect(
        form.locator(".field-group").filter(has_text="Departments").locator(".field-error")
    ).to_have_text("Choose at least one department, or every department.")

    # A refusal only the service can make comes back at its field too.
    await email.fill("ann@localhost")
    await form.get_by_label("Emergency").check()
    await form.get_by_label("From").fill("22:00")
    await form.get_by_role("button", name="Save preferences").click()
    quiet = form.locator(".field-group.quiet .field-error").last
    await expect(quiet).to_have_text("Give both times, or neither.")
    await form.get_by_label("Until").fill("06:30")
    await form.get_by_role("button", name="Save preferences").click()
    await expect(page.locator(f"#{await email.get_attribute('id')}-error")).to_contain_text(
        "is not an e-mail address"
    )
    await expect(email).to_be_focused()

    await email.fill("ann@hospital.example")
    await form.get_by_label("Minimum severity").select_option("high")
    await form.get_by_label("At most, per hour").fill("5")
    await form.get_by_role("button", name="Save preferences").click()
    await expect(page.locator(".preferences .page-status")).to_contain_text("Saved at ")
    await expect(form.locator(".field-error:visible")).to_have_count(0)
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ed_admin)) as client:
        saved = (await client.get("/api/notifications/preferences")).json()
    assert saved == {
        "channels": ["email", "in_app"],
        "min_severity": "high",
        "departments": ["ED"],
        "quiet_from": "22:00:00",
        "quiet_until": "06:30:00",
        "max_per_hour": 5,
        "email": "ann@hospital.example",
    }
    # The page shows what is stored.
    await page.reload()
    await expect(form.get_by_label("Only these:")).to_be_checked()
    await expect(form.get_by_label("Emergency")).to_be_checked()
    await expect(form.get_by_label("Cardiology")).not_to_be_checked()
    await expect(form.get_by_label("From")).to_have_value("22:00")
    await expect(form.get_by_label("Minimum severity")).to_have_value("high")
    await expect(page.locator(".device-push")).to_contain_text("Web Push is not set up")
    await save_screenshot(page, "preferences")
    phone = await screens.open(width=360, height=780, is_mobile=True)
    await phone.goto(f"{server.url}/?page=preferences#token={ed_admin}")
    await expect(phone.locator("form.preferences-fields")).to_be_visible()
    assert not await scrolls_sideways(phone)


# -- accessibility ----------------------------------------------------------------------------


async def test_axe_finds_nothing_serious_on_the_dashboard_its_alerts_the_bell_and_preferences(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    sign: Sign,
    writer: Write,
    screens: Screens,
    tmp_path: Path,
) -> None:
    server = await serve(with_rules(settings, tmp_path, SEVERITIES))
    admin = await sign(Role.ADMIN, ("ED", "CARD"), sub="ed-admin")
    viewer = await sign(Role.VIEWER, ("ED", "CARD"), sub="wall")
    await set_beds(writer, hospital, ["ED-1A", "ED-1B"], "occupied")
    # axe is injected as a script: only a context that bypasses the page's CSP takes it.
    page = await screens.open(bypass_csp=True)
    found: dict[str, list[str]] = {}

    async def check(name: str) -> None:
        found[name] = await axe_violations(page)
        assert await contrast_failures(page) == [], name

    for name, path, alerts in (("overview", "/", 4), ("department", "/?department=ED", 3)):
        await page.goto(f"{server.url}{path}#token={admin}")
        await expect(page.locator("#connection")).to_have_text("Live")
        await expect(panel(page).locator(".alert-card")).to_have_count(alerts)
        await check(name)
    cards = panel(page).locator(".alert-card")
    # Most severe first, each in words as well as colour; values written as their metric is.
    await expect(cards.locator(".severity-badge")).to_have_text(["Critical", "High", "Low"])
    await expect(cards.first.locator(".alert-measure")).to_have_text(
        "Value 50.0% · fires above 40.0% · clears at 30.0%"
    )
    await save_element_screenshot(panel(page), "alerts-panel-severities")
    for action in ("Acknowledge", "Resolve", "Silence"):
        await cards.first.get_by_role("button", name=action).click()
        await check(f"alert panel, {action.lower()} open")
    await page.locator("#bell-button").click()
    await expect(page.locator(".bell-item")).to_have_count(2)  # medium and above
    await check("bell open")
    await page.goto(f"{server.url}/?page=preferences")
    await expect(page.locator("form.preferences-fields")).to_be_visible()
    await page.get_by_label("Only these:").check()
    await page.get_by_label("E-mail (high and critical alerts)").check()
    await page.get_by_role("button", name="Save preferences").click()
    await expect(page.locator(".field-error:visible")).to_have_count(2)
    await check("preferences, with an error")

    wall = await screens.open(bypass_csp=True, width=1920, height=1080)
    await wall.goto(f"{server.url}/?wall=1#token={viewer}")
    await expect(wall.locator("#connection")).to_have_text("Live")
    await expect(panel(wall).locator(".alert-card")).to_have_count(4)
    await expect(panel(wall).locator("button:visible")).to_have_count(0)
    # A viewer may not read the rules, yet sees the values written as the admin does.
    await expect(panel(wall).locator(".alert-measure").first).to_have_text(
        "Value 50.0% · fires above 40.0% · clears at 30.0%"
    )
    found["wall"] = await axe_violations(wall)
    await save_screenshot(wall, "wall-alerts", full_page=False)
    assert await contrast_failures(wall) == []
    problems = {name: problems for name, problems in found.items() if problems}
    assert problems == {}, json.dumps(problems, indent=1)


async def test_web_push_is_offered_once_the_server_has_a_vapid_key_and_its_worker_runs(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    sign: Sign,
    screens: Screens,
    tmp_path: Path,
) -> None:
    key = tmp_path / "vapid.pem"
    key.write_text(generate_vapid_keys().private_key_pem)
    server = await serve(settings.model_copy(update={"vapid_private_key_file": key}))
    page = await screens.open()
    await page.context.grant_permissions(["notifications"], origin=server.url)
    await page.goto(f"{server.url}/?page=preferences#token={await sign(sub='ann')}")
    device = page.locator(".device")
    await expect(device).to_have_attribute("data-push", "off")
    await expect(device.locator(".device-push")).to_have_text("Web Push is off for this browser.")
    turn_on = device.get_by_role("button", name="Turn on Web Push")
    await expect(turn_on).to_be_visible()
    await turn_on.click()
    # Headless Chromium here reaches no push service: the refusal is said, nothing breaks.
    await expect(device.locator(".form-error")).to_have_text(
        re.compile(r"^The browser's push service refused: "), timeout=20_000
    )
    # The worker itself: served, parsed, active, in its own scope.
    worker = await page.evaluate(
        """async () => {
          const registration = await navigator.serviceWorker.getRegistration("/static/");
          return { scope: registration.scope, state: registration.active?.state };
        }"""
    )
    assert worker == {"scope": f"{server.url}/static/", "state": "activated"}
