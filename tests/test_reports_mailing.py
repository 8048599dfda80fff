"""Scheduled reports by e-mail, received by a real SMTP server (aiosmtpd): the attachment
opened as its reader opens it, a link above the size limit, recipients checked again when
the report goes out, a relay that refuses, and the schedules refused when they are made."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from livedash.metrics.clock import ManualClock
from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.alerting import bearer
from tests.support.live import LiveServer, Serve
from tests.support.probes import services_of
from tests.support.report_schedules import (
    HOSPITAL,
    PUBLIC_URL,
    attachment,
    body_text,
    create_schedule,
    give_address,
    mailing,
    pdf_text,
    reporting,
    schedule_body,
    schedule_of,
)
from tests.support.rest import problem_of
from tests.support.smtp import SmtpServer
from tests.support.writers import Users

NOW = datetime(2026, 11, 25, 5, 10, tzinfo=UTC)  # a Wednesday, 06:10 in Berlin
RUN = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)  # 07:00 in Berlin: the schedules' daily run


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with SmtpServer() as server:
        yield server


@pytest.fixture
def configured(settings: Settings, tmp_path: Path, smtp: SmtpServer) -> Settings:
    return mailing(reporting(settings, tmp_path), smtp)


@pytest.fixture
async def server(
    serve: Serve, configured: Settings, clock: ManualClock, hospital: dict[str, int]
) -> LiveServer:
    return await serve(configured, clock)


@pytest.fixture
def chief(token: Any) -> str:
    return str(token(Role.SUPER_ADMIN, sub="chief"))


async def person(server: LiveServer, token: Any, name: str, role: Role, *departments: str) -> str:
    """A user with a token and an e-mail address (name@hospital.example)."""
    signed: str = token(role, departments, sub=name)
    await give_address(server.url, signed, f"{name}@hospital.example")
    return signed


async def run_due(server: LiveServer, clock: ManualClock) -> None:
    """Move the clock to the schedules' daily run and run it."""
    clock.set(RUN)
    await services_of(server).report_scheduler.tick()


async def test_the_report_arrives_attached_and_opens(
    server: LiveServer,
    smtp: SmtpServer,
    clock: ManualClock,
    token: Any,
    chief: str,
    tmp_path: Path,
) -> None:
    await person(server, token, "director", Role.SUPER_ADMIN)
    await person(server, token, "cardiologist", Role.ADMIN, "CARD")
    async with httpx.AsyncClient(base_url=server.url) as http:
        hospital_pdf = await create_schedule(http, chief, recipients=["director"])
        card_csv = await create_schedule(
            http,
            chief,
            name="Cardiology figures",
            department="CARD",
            format="csv",
            recipients=["cardiologist"],
        )
        await run_due(server, clock)

        mails = {received.recipients[0]: received.message for received in smtp.received}
        assert sorted(mails) == ["cardiologist@hospital.example", "director@hospital.example"]
        pdf_mail = mails["director@hospital.example"]
        assert pdf_mail["Subject"] == f"{HOSPITAL}: Morning occupancy (2026-11-24)"
        assert pdf_mail["To"] == "director@hospital.example"
        assert pdf_mail["Message-ID"].endswith("@livedash>")
        name, media_type, content = attachment(pdf_mail)
        assert (name, media_type) == ("occupancy-2026-11-24.pdf", "application/pdf")
        assert content.startswith(b"%PDF-")
        text = pdf_text(content, tmp_path)
        assert HOSPITAL in text
        assert "Occupancy and length of stay" in text
        assert f"SHA-256: {hashlib.sha256(content).hexdigest()}" in body_text(pdf_mail)
        # What was mailed is the report the archive keeps.
        report_id = (await schedule_of(http, chief, hospital_pdf["id"]))["last_report_id"]
        download = await http.get(f"/api/reports/{report_id}/download", headers=bearer(chief))
        assert download.content == content

        csv_mail = mails["cardiologist@hospital.example"]
        name, media_type, content = attachment(csv_mail)
        assert (name, media_type) == ("occupancy-2026-11-24.csv", "text/csv")
        assert content.startswith("\N{BYTE ORDER MARK}".encode())
        rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))
        meta = {row[0]: row[1] for row in rows if len(row) == 2}
        assert (meta["hospital"], meta["department"]) == (HOSPITAL, "CARD")
        assert meta["period_start"].startswith("2026-11-24T00:00:00")
        assert "department CARD" in body_text(csv_mail)
        assert (await schedule_of(http, chief, card_csv["id"]))["failures"] == 0


async def test_above_the_size_limit_the_mail_carries_a_link_that_needs_sign_in(
    serve: Serve,
    configured: Settings,
    clock: ManualClock,
    hospital: dict[str, int],
    smtp: SmtpServer,
    token: Any,
    chief: str,
) -> None:
    server = await serve(configured.model_copy(update={"report_attachment_max_bytes": 100}), clock)
    await person(server, token, "director", Role.SUPER_ADMIN)
    async with httpx.AsyncClient(base_url=server.url) as http:
        schedule = await create_schedule(http, chief, recipients=["director"])
        await run_due(server, clock)
        report_id = (await schedule_of(http, chief, schedule["id"]))["last_report_id"]

        message = (await smtp.next_message()).message
        assert list(message.iter_attachments()) == []
        text = body_text(message)
        page = f"{PUBLIC_URL}/?page=reports&report={report_id}"
        assert f"Open it in livedash (sign-in needed): {page}" in text
        link = f"{PUBLIC_URL}/api/reports/{report_id}/download"
        assert f"download it over the API with an access token: {link}" in text
        path = link.removeprefix(PUBLIC_URL)
        anonymous = await http.get(path)
        problem_of(anonymous, 401, "not_authenticated")
        signed_in = await http.get(path, headers=bearer(chief))
        assert signed_in.status_code == 200
        assert signed_in.content.startswith(b"%PDF-")
        assert f"The report ({len(signed_in.content):,} bytes) is too large to attach" in text


async def test_recipients_who_may_no_longer_receive_it_get_nothing(
    server: LiveServer,
    smtp: SmtpServer,
    clock: ManualClock,
    token: Any,
    users: Users,
    chief: str,
) -> None:
    for name in ("head", "moved", "gone", "mute"):
        await person(server, token, name, Role.ADMIN, "CARD")
    await person(server, token, "nurse", Role.VIEWER, "CARD")
    async with httpx.AsyncClient(base_url=server.url) as http:
        schedule = await create_schedule(
            http,
            chief,
            department="CARD",
            recipients=["head", "moved", "gone", "mute", "nurse"],
        )
    users.save("moved", Role.ADMIN, ("ED",))  # now works in the emergency department
    users.save("gone", Role.ADMIN, ("CARD",), active=False)  # left the hospital
    await users.settled()
    mute = token(Role.ADMIN, ("CARD",), sub="mute")
    await give_address(server.url, mute, None)  # took their address out

    with capture_logs() as logs:
        await run_due(server, clock)

    assert sorted(r for received in smtp.received for r in received.recipients) == [
        "head@hospital.example",
        "nurse@hospital.example",
    ]
    skipped = [event for event in logs if event["event"] == "report_recipients_skipped"]
    assert [event["why"] for event in skipped] == [
        [
            "gone: is not an active user",
            "moved: may not see CARD",
            "mute: has no e-mail address in their notification preferences",
        ]
    ]
    async with httpx.AsyncClient(base_url=server.url) as http:
        ran = await schedule_of(http, chief, schedule["id"])
    assert (ran["failures"], ran["last_error"]) == (0, None)  # delivered to who may have it


async def test_a_relay_that_refuses_fails_the_run_and_it_is_retried(
    server: LiveServer, smtp: SmtpServer, clock: ManualClock, token: Any, chief: str
) -> None:
    await person(server, token, "director", Role.SUPER_ADMIN)
    smtp.refuse("451 4.3.2 Try again later")
    async with httpx.AsyncClient(base_url=server.url) as http:
        schedule = await create_schedule(http, chief, recipients=["director"])
        await run_due(server, clock)
        failed = await schedule_of(http, chief, schedule["id"])
    assert failed["failures"] == 1
    assert failed["last_error"].startswith("e-mail not delivered")
    assert "451" in failed["last_error"]
    assert datetime.fromisoformat(failed["retry_at"]) == RUN + timedelta(
        seconds=server.settings.report_retry_seconds
    )
    assert smtp.received == []


async def test_a_schedule_naming_what_cannot_be_is_refused(
    server: LiveServer, token: Any, chief: str
) -> None:
    await person(server, token, "cardiologist", Role.ADMIN, "CARD")
    await person(server, token, "triage", Role.ADMIN, "ED")
    token(Role.ADMIN, ("CARD",), sub="no-address")
    card_admin = token(Role.ADMIN, ("CARD",), sub="card-admin")
    refused: list[tuple[dict[str, Any], int, str, str]] = [
        ({"cron": "61 7 * * *"}, 422, "invalid_payload", "the minute field '61' is out of range"),
        ({"cron": "0 7 * * * *"}, 422, "invalid_payload", "a seconds field is not supported"),
        ({"cron": "@fortnightly"}, 422, "invalid_payload", "unknown preset '@fortnightly'"),
        ({"cron": "0 7 30 2 *"}, 422, "invalid_payload", "never runs"),
        (
            {"recipients": ["nobody"]},
            422,
            "invalid_payload",
            "recipient 'nobody' is not an active user",
        ),
        (
            {"department": "CARD", "recipients": ["triage"]},
            422,
            "invalid_payload",
            "recipient 'triage' may not see CARD",
        ),
        (
            {"recipients": ["cardiologist"]},
            422,
            "invalid_payload",
            "recipient 'cardiologist' may not see the whole hospital",
        ),
        (
            {"department": "CARD", "recipients": ["no-address"]},
            422,
            "invalid_payload",
            "recipient 'no-address' has no e-mail address",
        ),
        (
            {"name": "Morning\nBcc: everyone@hospital.example"},
            422,
            "invalid_payload",
            "name: Value error, one line of text",
        ),
        ({"report_type": "beds"}, 422, "invalid_payload", "unknown report type 'beds'"),
        ({"format": "docx"}, 422, "invalid_payload", "format"),
        ({"misfire": "later"}, 422, "invalid_payload", "misfire"),
        ({"department": "XRAY"}, 404, "unknown_department", "no department"),
    ]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for fields, status, code, detail in refused:
            answer = await http.post(
                "/api/reports/schedules", headers=bearer(chief), json=schedule_body(**fields)
            )
            assert detail in problem_of(answer, status, code).detail, fields
        # A department admin asking for a department that does not exist learns nothing.
        elsewhere = await http.post(
            "/api/reports/schedules",
            headers=bearer(card_admin),
            json=schedule_body(department="XRAY"),
        )
        problem_of(elsewhere, 403, "forbidden")
        listed = await http.get("/api/reports/schedules", headers=bearer(chief))
    assert listed.json() == {"items": [], "next": None}
