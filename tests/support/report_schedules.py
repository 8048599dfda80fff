"""What the report schedule, mailing, REST and CLI tests share: the service on a clock that
stands still, a user's e-mail address set as the user sets it, schedules made over REST, a
queued report polled as a client polls it, `/metrics` read as Prometheus reads it, and a mailed
report's attachment and a PDF's text as a reader sees them."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from livedash.settings import Settings
from tests.support.alerting import bearer
from tests.support.smtp import SmtpServer

HOSPITAL = "St. Elisabeth-Krankenhaus Köln"
SENDER = "Livedash reports <reports@hospital.example>"
PUBLIC_URL = "https://dash.hospital.example"
POLL_SECONDS = 0.05
WAIT_SECONDS = 30.0
"""How long a queued report may take before the test fails (a 90-day PDF takes seconds)."""


def reporting(settings: Settings, directory: Path, **changes: Any) -> Settings:
    """`settings` with the hospital's name, its reports as files under `directory`/reports,
    and `changes`."""
    return settings.model_copy(
        update={
            "hospital_name": HOSPITAL,
            "report_dir": directory / "reports",
            "public_url": PUBLIC_URL,
            **changes,
        }
    )


def mailing(settings: Settings, smtp: SmtpServer) -> Settings:
    """`settings` that send e-mail through `smtp`, in clear text."""
    return settings.model_copy(
        update={
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "smtp_tls": "none",
            "smtp_sender": SENDER,
        }
    )


async def give_address(url: str, token: str, email: str | None) -> None:
    """Set (or with None, remove) the e-mail address in the token's user's preferences, as
    the user does on their settings page."""
    body = {} if email is None else {"channels": ["in_app", "email"], "email": email}
    async with httpx.AsyncClient(base_url=url) as http:
        saved = await http.put("/api/notifications/preferences", headers=bearer(token), json=body)
    assert saved.status_code == 200, saved.text


def schedule_body(**fields: Any) -> dict[str, Any]:
    """A daily hospital-wide occupancy PDF at 07:00, with `fields` changed."""
    return {
        "name": "Morning occupancy",
        "report_type": "occupancy",
        "department": None,
        "format": "pdf",
        "cron": "0 7 * * *",
        **fields,
    }


async def create_schedule(http: httpx.AsyncClient, token: str, **fields: Any) -> dict[str, Any]:
    """A schedule created over REST (see `schedule_body`); fails the test if refused."""
    created = await http.post(
        "/api/reports/schedules", headers=bearer(token), json=schedule_body(**fields)
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def schedule_of(http: httpx.AsyncClient, token: str, ident: int) -> dict[str, Any]:
    found = await http.get(f"/api/reports/schedules/{ident}", headers=bearer(token))
    assert found.status_code == 200, found.text
    body: dict[str, Any] = found.json()
    return body


async def finished(
    http: httpx.AsyncClient, location: str, headers: Mapping[str, str]
) -> dict[str, Any]:
    """The report at `location` once it is `done` or `failed`, polled as a client polls it."""
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            response = await http.get(location, headers=headers)
            assert response.status_code == 200, response.text
            report: dict[str, Any] = response.json()
            if report["status"] not in ("queued", "running"):
                return report
            # Polled: the API tells a client nothing until it asks again.
            await asyncio.sleep(POLL_SECONDS)


def attachment(message: EmailMessage) -> tuple[str, str, bytes]:
    """The one attachment of a received message: its file name, media type and bytes."""
    found = list(message.iter_attachments())
    assert len(found) == 1, [part.get_content_type() for part in found]
    part = found[0]
    content = part.get_payload(decode=True)
    assert isinstance(content, bytes)
    return str(part.get_filename()), part.get_content_type(), content


def body_text(message: EmailMessage) -> str:
    """A received message's plain-text body."""
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def pdf_text(content: bytes, directory: Path) -> str:
    """What `pdftotext` reads in a PDF (written under `directory` first)."""
    path = directory / "read.pdf"
    path.write_bytes(content)
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout
