"""E-mail and Web Push of HIGH and CRITICAL alerts, through the delivery ledger: received by a
real SMTP server and a stand-in push service (decrypted with the browser's keys), sent once
per idempotency key, and exactly once when the service dies in the middle of a send."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from livedash.auth.tokens import verify_token
from livedash.metrics.clock import ManualClock
from livedash.notifications.push import generate_vapid_keys
from livedash.settings import Settings
from livedash.store.engine import create_engine
from livedash.store.models import Role
from tests.support.alerting import bearer, set_beds, with_rules
from tests.support.instances import Instance
from tests.support.live import Connect, Serve
from tests.support.probes import services_of
from tests.support.push_service import Browser, PushService
from tests.support.smtp import SmtpServer
from tests.support.writers import Write

WAIT = 10.0


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with SmtpServer() as server:
        yield server


@pytest.fixture
async def push() -> AsyncIterator[PushService]:
    async with PushService() as service:
        yield service


@pytest.fixture
def notifying(settings: Settings, tmp_path: Path, smtp: SmtpServer) -> Settings:
    key = tmp_path / "vapid.pem"
    key.write_text(generate_vapid_keys().private_key_pem)
    return with_rules(settings, tmp_path).model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_tls": "none",
            "vapid_private_key_file": key,
            "push_allow_http": True,
            "public_url": "https://dashboard.hospital.test",
            "hospital_name": "St. Test",
        }
    )


async def _deliveries(settings: Settings) -> list[Any]:
    database = create_engine(settings.database_url)
    try:
        async with database.connect() as connection:
            query = "SELECT channel, status, attempts FROM notification_deliveries ORDER BY key"
            return list((await connection.execute(text(query))).all())
    finally:
        await database.dispose()


async def _until(condition: Callable[[], Any]) -> None:
    """Poll `condition` (async) until true: the ledger has no event to await."""
    async with asyncio.timeout(WAIT):
        while not await condition():  # noqa: ASYNC110 - polled, there is nothing to await
            await asyncio.sleep(0.02)


async def _sign_up(url: str, user: str, browser: Browser | None, endpoint: str = "") -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        channels = ["in_app", "email"] + (["push"] if browser else [])
        chosen = await http.put(
            "/api/notifications/preferences",
            headers=bearer(user),
            json={"channels": channels, "email": "ed-admin@hospital.test"},
        )
        assert chosen.status_code == 200, chosen.text
        if browser is not None:
            registered = await http.post(
                "/api/notifications/push/subscriptions",
                headers=bearer(user),
                json=browser.subscription_json(endpoint),
            )
            assert registered.status_code == 200, registered.text


async def _occupy(writer: Write, hospital: dict[str, int]) -> None:
    await set_beds(writer, hospital, ("ED-1A", "ED-1B"), "occupied")


async def test_a_high_alert_is_mailed_and_pushed_once(
    hospital: dict[str, int],
    serve: Serve,
    notifying: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
    smtp: SmtpServer,
    push: PushService,
) -> None:
    server = await serve(notifying)
    admin = token(Role.ADMIN, ("ED",), sub="ed-admin")
    browser = Browser()
    await _sign_up(server.url, admin, browser, push.endpoint())
    screen = await connect(server, admin)

    await _occupy(writer, hospital)
    alert = await screen.next("alert", lambda a: a["state"] == "firing")

    mail = await smtp.next_message()
    assert mail.recipients == ["ed-admin@hospital.test"]
    assert mail.message["Subject"].startswith("[HIGH]")
    body = mail.message.get_body(("plain",))
    assert body is not None
    assert f"https://dashboard.hospital.test/?alert={alert['id']}" in body.get_content()

    request = await push.next_request()
    shown = json.loads(browser.decrypt(request.body))
    assert str(alert["id"]) in json.dumps(shown)
    assert request.headers["authorization"].startswith("vapid ")

    async def both_sent() -> bool:
        return [row[1] for row in await _deliveries(notifying)] == ["sent", "sent"]

    await _until(both_sent)
    # The same event told again (a retry, a second leader): nothing more is sent.
    services = services_of(server)
    message = (await services.alert_desk.listed(_principal(services, admin)))[0]
    await services.alerts._listeners[0](message, "raised", 0)
    assert await services.deliveries.work_once() == 0
    assert len(smtp.received) == 1
    assert len(push.requests) == 1


def _principal(services: Any, token: str) -> Any:
    return verify_token(services.settings, token)


async def test_a_service_killed_while_sending_delivers_exactly_once_after_restarting(
    hospital: dict[str, int],
    serve: Serve,
    notifying: Settings,
    token: Any,
    writer: Write,
    smtp: SmtpServer,
) -> None:
    clock = ManualClock(datetime.now(UTC))
    first = await serve(notifying, clock)
    admin = token(Role.ADMIN, ("ED",), sub="ed-admin")
    await _sign_up(first.url, admin, None)
    smtp.stall()  # the first attempt hangs in DATA: the message is never accepted

    await _occupy(writer, hospital)

    async def sending() -> bool:
        return [row[1] for row in await _deliveries(notifying)] == ["sending"]

    await _until(sending)
    await first.stop()  # dies mid-send, its lease still held
    smtp.resume()

    later = ManualClock(datetime.now(UTC) + timedelta(seconds=61))  # past the lease
    await serve(notifying, later)

    mail = await smtp.next_message()
    assert mail.recipients == ["ed-admin@hospital.test"]

    async def sent() -> bool:
        return [tuple(row[1:]) for row in await _deliveries(notifying)] == [("sent", 2)]

    await _until(sent)
    assert len(smtp.received) == 1


async def test_an_e_mail_only_user_is_mailed_the_raising_and_the_resolution(
    hospital: dict[str, int],
    serve: Serve,
    notifying: Settings,
    token: Any,
    writer: Write,
    smtp: SmtpServer,
) -> None:
    server = await serve(notifying)
    admin = token(Role.ADMIN, ("ED",), sub="ed-admin")
    async with httpx.AsyncClient(base_url=server.url) as http:
        chosen = await http.put(
            "/api/notifications/preferences",
            headers=bearer(admin),
            json={"channels": ["email"], "email": "ed-admin@hospital.test"},
        )
        assert chosen.status_code == 200, chosen.text
    await _occupy(writer, hospital)
    raised = await smtp.next_message()
    for bed in ("ED-1A", "ED-1B"):
        await writer("UPDATE beds SET status = 'free' WHERE id = ?", (hospital[bed],))
    resolved = await smtp.next_message()
    assert raised.message["X-Livedash-Alert"] == resolved.message["X-Livedash-Alert"]
    assert raised.message["Message-ID"] != resolved.message["Message-ID"]


async def test_a_service_killed_9_while_sending_delivers_exactly_once_after_restarting(
    hospital: dict[str, int],
    notifying: Settings,
    token: Any,
    users: Any,
    writer: Write,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    # `livedash serve` in a process of its own, killed with SIGKILL in the middle of DATA: no
    # shutdown runs, its lease is left held, and the next process takes the delivery over.
    admin = token(Role.ADMIN, ("ED",), sub="ed-admin")
    await users.settled()
    env = {
        "LIVEDASH_SMTP_HOST": "127.0.0.1",
        "LIVEDASH_SMTP_PORT": str(smtp.port),
        "LIVEDASH_SMTP_TLS": "none",
        "LIVEDASH_DELIVERY_LEASE_SECONDS": "1",
    }
    first = await Instance(notifying, tmp_path / "first.log", admin, env=env).start()
    try:
        await _sign_up(first.url, admin, None)
        smtp.stall()
        await _occupy(writer, hospital)

        async def sending() -> bool:
            return [row[1] for row in await _deliveries(notifying)] == ["sending"]

        await _until(sending)
    finally:
        await first.kill()
    smtp.resume()

    second = await Instance(notifying, tmp_path / "second.log", admin, env=env).start()
    try:
        mail = await smtp.next_message()
        assert mail.recipients == ["ed-admin@hospital.test"]

        async def sent() -> bool:
            return [tuple(row[1:]) for row in await _deliveries(notifying)] == [("sent", 2)]

        await _until(sent)
        assert len(smtp.received) == 1
    finally:
        await second.stop()
