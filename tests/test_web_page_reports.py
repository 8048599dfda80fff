"""The reports page in the system's Chromium, against a real service: a report generated on
demand, followed to the end, downloaded and verified; one opened by its address (as the
e-mails link it); a failure and a refusal shown as the service words them; schedules made,
paused, resumed and deleted by an admin and absent for a viewer; axe-core on the page.

Screenshots for people land in build/test-artifacts/ (reports, reports-phone).
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from livedash.reports.generation import ReportRequest
from livedash.reports.periods import resolve_period
from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.alerting import bearer
from tests.support.browser import (
    Screens,
    Sign,
    axe_violations,
    contrast_failures,
    save_screenshot,
    scrolls_sideways,
)
from tests.support.live import LiveServer, Serve
from tests.support.probes import services_of
from tests.support.report_schedules import reporting


@pytest.fixture
async def server(
    serve: Serve, settings: Settings, tmp_path: Path, hospital: dict[str, int]
) -> LiveServer:
    return await serve(reporting(settings, tmp_path))


async def reports_page(
    screens: Screens, server: LiveServer, token: str, query: str = "", **options: object
) -> Page:
    page = await screens.open(**options)
    await page.goto(f"{server.url}/?page=reports{query}#token={token}")
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator("#view-title")).to_have_text("Reports")
    await expect(page.locator("form.generate-form")).to_be_visible()
    return page


async def failed_report(server: LiveServer, department: str | None, error: str) -> int:
    """A report that failed with `error`, as the archive records one."""
    reports = services_of(server).reports
    zone = server.settings.zone
    now = datetime.now(zone)
    request = ReportRequest(
        "revenue",
        await reports.scope(department),
        resolve_period("yesterday", zone=zone, now=now),
        "pdf",
        "someone",
    )
    info = await reports.archive.open(request, now, generator="test", schedule_id=None)
    await reports.archive.fail(info.id, error, now)
    return info.id


async def test_a_report_is_generated_followed_downloaded_and_verified(
    server: LiveServer, sign: Sign, screens: Screens
) -> None:
    ed_admin = await sign(Role.ADMIN, ("ED",), sub="ed-admin")
    page = await reports_page(screens, server, ed_admin)
    await expect(page.locator("#nav a[aria-current=page]")).to_have_text("Reports")
    form = page.locator("form.generate-form")
    # Only the departments this admin may see: not the hospital, not Cardiology.
    await expect(form.get_by_label("Scope").locator("option")).to_have_text(["Emergency"])
    await expect(page.locator(".report-list .list-empty")).to_have_text("No reports yet.")

    await form.get_by_label("Report").select_option(label="Occupancy and length of stay")
    await form.get_by_label("Period").select_option(label="Yesterday")
    await form.get_by_label("CSV").check()
    await form.get_by_role("button", name="Generate").click()
    progress = page.locator(".report-progress")
    await expect(progress).to_have_attribute("data-status", "done", timeout=30_000)
    await expect(progress).to_contain_text(
        re.compile(
            r"^Ready: Occupancy and length of stay, Emergency, \d{4}-\d\d-\d\d "
            r"\(CSV, [\d.]+ (B|KB)\)\."
        )
    )
    download_button = progress.get_by_role("button", name=re.compile("^Download report"))
    await expect(download_button).to_be_focused()

    async with page.expect_download() as downloading:
        await download_button.click()
    download = await downloading.value
    assert re.fullmatch(r"occupancy-ED-\d{4}-\d\d-\d\d\.csv", download.suggested_filename)
    saved = await asyncio.to_thread(Path(await download.path()).read_bytes)
    row = page.locator(".report-table tbody tr")
    await expect(row).to_have_count(1)
    report_id = int(await row.get_attribute("data-report") or 0)
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ed_admin)) as client:
        served = await client.get(f"/api/reports/{report_id}/download")
    assert saved == served.content
    assert saved.startswith("\ufeff".encode())  # the CSV's BOM: it opens cleanly in a spreadsheet

    await expect(row.locator("[data-label=Status]")).to_have_text("Ready")
    await expect(row.locator("[data-label=Scope]")).to_have_text("Emergency")
    await expect(row.locator("[data-label=Requested]")).to_contain_text("ed-admin, ")
    await row.get_by_role("button", name=f"Verify report {report_id}").click()
    await expect(row.locator(".verify-result")).to_have_text(
        "Verified: the same figures.", timeout=30_000
    )

    # The filters ask the service again.
    await page.locator(".report-filters").get_by_label("Status").select_option(label="Failed")
    await expect(row).to_have_count(0)
    await expect(page.locator(".report-list .list-empty")).to_have_text(
        "No reports match these filters."
    )
    await page.locator(".report-filters").get_by_label("Status").select_option(label="Any")
    await expect(row).to_have_count(1)
    await save_screenshot(page, "reports")

    # Opened by its address, as the e-mails link it.
    await row.get_by_role("link", name="Occupancy and length of stay").click()
    await expect(page).to_have_url(f"{server.url}/?page=reports&report={report_id}")
    opened = page.locator(".report-opened")
    await expect(opened.locator("#opened-title")).to_have_text(
        f"Occupancy and length of stay · report {report_id}"
    )
    await expect(opened.locator("#opened-title")).to_be_focused()
    await expect(opened).to_contain_text("Europe/Berlin")
    await expect(
        opened.get_by_role("button", name=f"Download report {report_id} (CSV)")
    ).to_be_visible()


async def test_a_failure_a_refusal_and_a_report_out_of_sight_are_said_plainly(
    server: LiveServer, sign: Sign, screens: Screens
) -> None:
    failed = await failed_report(server, "ED", "the disk is full")
    elsewhere = await failed_report(server, "CARD", "the disk is full")
    ed_admin = await sign(Role.ADMIN, ("ED",), sub="ed-admin")

    page = await reports_page(screens, server, ed_admin, f"&report={failed}")
    opened = page.locator(".report-opened")
    await expect(opened).to_contain_text("Failed: the disk is full")
    row = page.locator(f".report-table tr[data-report='{failed}']")
    await expect(row.locator("[data-label=Status]")).to_have_text("Failed: the disk is full")
    await expect(row.get_by_role("button")).to_have_count(0)
    # Another department's report is no report at all to this admin; nor is a made-up one.
    await expect(page.locator(f".report-table tr[data-report='{elsewhere}']")).to_have_count(0)
    for missing in (elsewhere, 999):
        await page.evaluate(
            f"history.pushState(null, '', '/?page=reports&report={missing}');"
            "dispatchEvent(new PopStateEvent('popstate'))"
        )
        await expect(page.locator(".report-opened [role=alert]")).to_have_text(
            f"There is no report {missing} among those you may see."
        )

    # A period the service refuses: its reason, at the field it is about.
    form = page.locator("form.generate-form")
    await form.get_by_label("Period").select_option(label="Dates…")
    await form.get_by_role("button", name="Generate").click()
    first_day = form.get_by_label("First day")
    await expect(first_day).to_be_focused()
    tomorrow = (datetime.now(server.settings.zone) + timedelta(days=1)).date()
    await first_day.fill(tomorrow.isoformat())
    await form.get_by_label("Last day").fill(tomorrow.isoformat())
    await form.get_by_role("button", name="Generate").click()
    error = page.locator(f"#{await first_day.get_attribute('id')}-error")
    await expect(error).to_contain_text("The period starts in the future")
    await expect(first_day).to_be_focused()

    # A report that fails while it is followed: its error, as the service gives it.
    async def fail(route: object) -> None:
        answer = await route.fetch()  # type: ignore[attr-defined]
        body = await answer.json()
        body.update(status="failed", error="the renderer ran out of memory")
        await route.fulfill(response=answer, json=body)  # type: ignore[attr-defined]

    await page.route(re.compile(r"/api/reports/\d+$"), fail)
    await form.get_by_label("Period").select_option(label="Yesterday")
    await form.get_by_role("button", name="Generate").click()
    progress = page.locator(".report-progress")
    await expect(progress).to_have_attribute("data-status", "failed", timeout=30_000)
    await expect(progress).to_have_text("The report failed: the renderer ran out of memory")


async def test_an_admin_makes_pauses_resumes_and_deletes_a_schedule_and_a_viewer_sees_none(
    server: LiveServer, sign: Sign, screens: Screens
) -> None:
    ed_admin = await sign(Role.ADMIN, ("ED",), sub="ed-admin")
    page = await reports_page(screens, server, ed_admin)
    schedules = page.locator(".schedules")
    await expect(schedules.locator(".list-empty")).to_have_text("No schedules yet.")
    form = schedules.locator("form.schedule-form")
    await form.get_by_label("Name").fill("ED morning")
    await form.get_by_label("Report").select_option(label="Emergency department")
    await expect(form.get_by_label("Scope").locator("option")).to_have_text(["Emergency"])
    await expect(form.get_by_label("When")).to_have_value("0 6 * * *")

    # Refusals at their fields: recipients need e-mail, an expression must be one.
    await form.get_by_label("Send to (optional)").fill("ed-admin")
    await form.get_by_role("button", name="Make schedule").click()
    recipients = form.get_by_label("Send to (optional)")
    await expect(page.locator(f"#{await recipients.get_attribute('id')}-error")).to_contain_text(
        "E-mail is not configured"
    )
    await expect(recipients).to_be_focused()
    await recipients.fill("")
    await form.get_by_label("When").select_option(label="Other: a cron expression…")
    cron = form.get_by_label("Cron expression")
    await cron.fill("0 6 * * * *")
    await form.get_by_role("button", name="Make schedule").click()
    await expect(page.locator(f"#{await cron.get_attribute('id')}-error")).to_contain_text(
        "has 6 fields"
    )
    await form.get_by_label("When").select_option(label="Every day at 06:00 (the day before)")
    await form.get_by_role("button", name="Make schedule").click()

    row = schedules.locator("tbody tr")
    await expect(row).to_have_count(1)
    await expect(row.locator("th")).to_have_text("ED morning")
    await expect(row.locator("[data-label=Report]")).to_have_text(
        "Emergency department, Emergency, PDF"
    )
    await expect(row.locator("[data-label=When]")).to_have_text(
        "Every day at 06:00 (the day before)"
    )
    await expect(row.locator("[data-label=State]")).to_have_text("Active")
    await expect(row.locator("[data-label='Last run']")).to_have_text("not yet")
    await expect(schedules.locator(".page-status")).to_contain_text(
        "Schedule “ED morning” made: next run "
    )
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ed_admin)) as client:
        listed = (await client.get("/api/reports/schedules")).json()["items"]
    assert [(s["name"], s["report_type"], s["department"], s["cron"]) for s in listed] == [
        ("ED morning", "emergency", "ED", "0 6 * * *")
    ]

    await row.get_by_role("button", name="Pause ED morning").click()
    await expect(row.locator("[data-label=State]")).to_have_text("Paused")
    await expect(row.locator("[data-label='Next run']")).to_have_text("—")
    await row.get_by_role("button", name="Resume ED morning").click()
    await expect(row.locator("[data-label=State]")).to_have_text("Active")
    await save_screenshot(page, "reports-schedules")
    await row.get_by_role("button", name="Delete ED morning").click()
    await expect(row).to_have_count(1)  # asked to confirm first
    await row.get_by_role("button", name=re.compile("press again to confirm")).click()
    await expect(row).to_have_count(0)
    await expect(schedules.locator(".page-status")).to_have_text("Schedule “ED morning” deleted.")

    viewer = await reports_page(screens, server, await sign(Role.VIEWER, ("ED",), sub="ed-viewer"))
    await expect(viewer.locator(".report-list")).to_be_visible()
    await expect(viewer.locator(".schedules")).to_have_count(0)
    assert "Schedules" not in await viewer.locator("#view").inner_text()


async def test_axe_finds_nothing_serious_on_the_reports_page_at_any_width(
    server: LiveServer, sign: Sign, screens: Screens
) -> None:
    failed = await failed_report(server, None, "the disk is full")
    chief = await sign(sub="chief")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(chief)) as client:
        made = await client.post(
            "/api/reports/schedules",
            json={"name": "Hospital morning", "report_type": "occupancy", "cron": "@daily"},
        )
        assert made.status_code == 201, made.text
    # axe is injected as a script: only a context that bypasses the page's CSP takes it.
    page = await reports_page(screens, server, chief, f"&report={failed}", bypass_csp=True)
    await expect(page.locator(".report-table tbody tr")).to_have_count(1)
    await expect(page.locator(".schedules tbody tr")).to_have_count(1)
    await expect(page.locator(".report-opened")).to_contain_text("Failed")
    form = page.locator("form.generate-form")
    await form.get_by_label("Period").select_option(label="Dates…")
    await form.get_by_role("button", name="Generate").click()
    await expect(form.locator(".field-error:visible")).to_have_count(2)
    found = {"reports": await axe_violations(page)}
    assert await contrast_failures(page) == []

    phone = await reports_page(
        screens, server, chief, width=360, height=780, is_mobile=True, bypass_csp=True
    )
    await expect(phone.locator(".schedules tbody tr")).to_have_count(1)
    assert not await scrolls_sideways(phone)
    found["reports at phone width"] = await axe_violations(phone)
    await save_screenshot(phone, "reports-phone")
    problems = {name: problems for name, problems in found.items() if problems}
    assert problems == {}, json.dumps(problems, indent=1)
