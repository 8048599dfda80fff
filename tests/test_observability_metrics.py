"""`/metrics` as an operator's Prometheus reads it: every counter and histogram of issue 18
moves with real traffic (sockets signing in and subscribing, rows written, REST calls and
socket events past their limits, an alert mailed, a report generated)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from livedash.metrics.definitions import Tier
from livedash.notifications.push import generate_vapid_keys
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.recorder import update_of
from tests.support.alerting import bearer, set_beds, with_rules
from tests.support.live import Connect, Serve
from tests.support.prometheus import Scrape, scrape, scrape_until
from tests.support.report_schedules import finished, give_address, reporting
from tests.support.smtp import SmtpServer
from tests.support.writers import Write, register_patient

UPDATES = "livedash_dashboard_updates_total"
SIGN_INS = "livedash_socket_authentications_total"
LATENCY = "livedash_update_latency_seconds"
NOTIFICATIONS = "livedash_notifications_total"
QUEUE = "livedash_job_queue_depth"
TIMED_OUT = "authentication timed out"


def _sent_by_tier(scraped: Scrape) -> dict[str, float]:
    return {tier.value: scraped.value(UPDATES, tier=tier.value) for tier in Tier}


def _assert_cumulative(buckets: list[tuple[float, float]], count: float) -> None:
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), buckets
    assert counts[-1] == count


@pytest.mark.both_backends
async def test_sockets_sign_ins_updates_and_their_latency_move_with_traffic(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    server = await serve(settings.model_copy(update={"auth_timeout_seconds": 1.0}))
    before = await scrape(server.url)
    assert before.types["livedash_update_latency_seconds"] == "histogram"
    assert before.value("livedash_socket_connections_total") == 0

    screen = await connect(server, token(Role.VIEWER, ("ED",), sub="ed-viewer"))
    expired = token(Role.VIEWER, sub="late", minutes=5, now=datetime.now(UTC) - timedelta(hours=1))
    refused = [
        await connect(server, expired, wait_auth=False),
        await connect(server, "not-a-token", wait_auth=False),
    ]
    for client in refused:
        assert (await client.next("auth_error"))["code"] == "invalid_token"
    silent = await connect(server, None)  # never signs in: closed after the timeout
    for client in (*refused, silent):
        await client.next("auth_error", lambda e: e["message"] == TIMED_OUT)
        await client.disconnected.wait()
    await screen.call("subscribe_metrics", {"metrics": ["patients_total", "admissions_today"]})

    await register_patient(writer, hospital["ED"], "counted")
    await screen.next("dashboard_update", update_of("patients_total", "ED", 2))
    after = await scrape(server.url)

    assert after.value("livedash_socket_connections_total") == 4
    assert after.value("livedash_sockets") == 1
    assert after.value(SIGN_INS, result="ok", reason="") == 1
    failed = {
        dict(labels)["reason"]: value
        for labels, value in after.series(SIGN_INS).items()
        if ("result", "failed") in labels and value
    }
    assert failed == {"expired": 1, "invalid": 1, "timeout": 3}
    assert {
        tier.value: after.value("livedash_active_subscribers", tier=tier.value) for tier in Tier
    } == {"critical": 1, "standard": 1, "historical": 0}

    sent, sent_before = _sent_by_tier(after), _sent_by_tier(before)
    assert sent["critical"] > sent_before["critical"]
    total = after.value("livedash_updates_total", result="sent")
    assert sum(sent.values()) == total

    # One emit_to_write per update sent; one commit_to_emit per update moved by a commit.
    emitted = after.histogram(LATENCY, stage="emit_to_write")
    assert emitted.count == total
    _assert_cumulative(emitted.buckets, emitted.count)
    committed = after.histogram(LATENCY, stage="commit_to_emit")
    committed_before = before.histogram(LATENCY, stage="commit_to_emit")
    assert committed.count > committed_before.count
    _assert_cumulative(committed.buckets, committed.count)
    waited = (committed.sum - committed_before.sum) / (committed.count - committed_before.count)
    assert 0 < waited < 10  # seconds from the write's commit to the emit: no clock mix-up

    # The cache's lookups keep their name, now with the _total Prometheus expects.
    assert after.types["livedash_cache_requests"] == "counter"
    assert "livedash_cache_requests_total{" in after.text


async def test_rest_calls_and_socket_events_past_their_limits_are_counted(
    serve: Serve, settings: Settings, connect: Connect, token: Any
) -> None:
    server = await serve(
        settings.model_copy(update={"rate_limit_rest": "2/minute", "rate_limit_socket": "3/minute"})
    )
    user = token(Role.VIEWER, ("ED",), sub="busy")
    async with httpx.AsyncClient(base_url=server.url) as http:
        statuses = [
            (await http.get("/api/metrics", headers=bearer(user))).status_code for _ in range(3)
        ]
    assert statuses == [200, 200, 429]

    # The handshake's token is the socket's first event, then two more: the fourth is refused.
    socket = await connect(server, "not-a-token", wait_auth=False)
    await socket.next("auth_error")
    answers = [await socket.call("authenticate", {"token": "still-not"}) for _ in range(3)]
    assert [answer["code"] for answer in answers] == [
        "invalid_token",
        "invalid_token",
        "rate_limited",
    ]

    scraped = await scrape(server.url)
    rejections = {
        dict(labels)["limit"]: value
        for labels, value in scraped.series("livedash_rate_limit_rejections_total").items()
    }
    assert rejections["rest"] == 1
    assert rejections["socket"] == 1
    assert {limit for limit, value in rejections.items() if value} == {"rest", "socket"}
    assert {"user", "address", "history", "login-address", "report-queue"} <= rejections.keys()
    assert scraped.value(SIGN_INS, result="failed", reason="rate_limited") == 1
    assert scraped.value(SIGN_INS, result="failed", reason="invalid") == 3


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with SmtpServer() as server:
        yield server


async def test_alerts_raised_and_their_notifications_are_counted(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    tmp_path: Path,
    connect: Connect,
    token: Any,
    writer: Write,
    smtp: SmtpServer,
) -> None:
    key = tmp_path / "vapid.pem"
    key.write_text(generate_vapid_keys().private_key_pem)
    notifying = with_rules(settings, tmp_path).model_copy(
        update={
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "smtp_tls": "none",
            "vapid_private_key_file": key,
        }
    )
    server = await serve(notifying)
    admin = token(Role.ADMIN, ("ED", "CARD"), sub="ward-admin")
    await give_address(server.url, admin, "ward-admin@hospital.test")
    screen = await connect(server, admin)
    quiet = await scrape(server.url)
    assert quiet.value("livedash_alerts_generated_total", severity="high") == 0
    assert quiet.value(QUEUE, queue="notification_deliveries") == 0

    await set_beds(writer, hospital, ("ED-1A", "ED-1B"), "occupied")
    await screen.next("alert", lambda a: a["state"] == "firing")
    await screen.next("notification", lambda n: n["event"] == "raised")
    await smtp.next_message()

    def mailed(scraped: Scrape) -> bool:
        return (
            scraped.value(NOTIFICATIONS, channel="email", result="sent") == 1
            and scraped.value(QUEUE, queue="notification_deliveries") == 0
        )

    sent = await scrape_until(server.url, mailed)
    assert {
        severity: sent.value("livedash_alerts_generated_total", severity=severity)
        for severity in ("critical", "high", "medium", "low")
    } == {"critical": 0, "high": 1, "medium": 0, "low": 0}
    assert sent.value(NOTIFICATIONS, channel="in_app", result="sent") == 1
    assert sent.value(NOTIFICATIONS, channel="email", result="failed") == 0
    assert sent.value(NOTIFICATIONS, channel="push", result="sent") == 0

    # A relay that says "later": the e-mail waits in the ledger, retried, not given up.
    smtp.refuse("451 4.3.2 Try again later")
    await set_beds(writer, hospital, ("CARD-1A", "CARD-1B"), "occupied")
    await screen.next("alert", lambda a: a["department"] == "CARD")

    def waiting(scraped: Scrape) -> bool:
        return scraped.value(QUEUE, queue="notification_deliveries") == 1

    retrying = await scrape_until(server.url, waiting)
    assert retrying.value("livedash_alerts_generated_total", severity="high") == 2
    assert retrying.value(NOTIFICATIONS, channel="email", result="sent") == 1
    assert retrying.value(NOTIFICATIONS, channel="email", result="failed") == 0


async def test_a_generated_report_is_counted_and_timed(
    hospital: dict[str, int], serve: Serve, settings: Settings, tmp_path: Path, token: Any
) -> None:
    server = await serve(reporting(settings, tmp_path))
    chief = bearer(token(Role.SUPER_ADMIN, sub="chief"))
    before = await scrape(server.url)
    empty = before.histogram("livedash_report_generation_duration_seconds", type="occupancy")
    assert empty.count == 0
    assert before.value(QUEUE, queue="reports") == 0

    async with httpx.AsyncClient(base_url=server.url) as http:
        queued = await http.post(
            "/api/reports",
            headers=chief,
            json={"type": "occupancy", "period": "yesterday", "format": "csv"},
        )
        assert queued.status_code == 202, queued.text
        report = await finished(http, queued.headers["location"], chief)
    assert report["status"] == "done", report["error"]

    after = await scrape(server.url)
    generated = {
        tuple(sorted(dict(labels).items())): value
        for labels, value in after.series("livedash_reports_generated_total").items()
        if value
    }
    assert generated == {(("result", "done"), ("type", "occupancy")): 1}
    assert after.value("livedash_reports_total", result="done") == 1
    timed = after.histogram("livedash_report_generation_duration_seconds", type="occupancy")
    assert timed.count == 1
    assert timed.sum > 0
    _assert_cumulative(timed.buckets, timed.count)
    assert after.histogram("livedash_report_generation_duration_seconds", type="revenue").count == 0
    assert after.value(QUEUE, queue="reports") == 0
