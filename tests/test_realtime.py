"""The Socket.IO gateway, end to end: a real uvicorn server and real socket.io clients."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from livedash.metrics.definitions import METRIC_NAMES
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.hospital import sql_now as _now
from livedash.testing.oracle import recompute, snapshot_values
from livedash.testing.recorder import Recorder, update_of
from tests.support.live import Connect, LiveServer, Serve
from tests.support.writers import Write, register_patient

pytestmark = pytest.mark.both_backends


async def test_external_write_reaches_subscribed_client(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    client = await connect(server, token())
    ack = await client.call("subscribe_metrics", {"metrics": ["patients_total", "beds_occupied"]})
    assert ack["ok"] is True
    snapshot = await client.next("metrics_snapshot")
    assert snapshot_values(snapshot["values"])["patients_total", "ED"] == 1

    await register_patient(writer, hospital["ED"], "walk-in", emergency=True)
    update = await client.next("dashboard_update", update_of("patients_total", "ED"))
    assert update["value"] == 2
    hospital_update = await client.next("dashboard_update", update_of("patients_total", None))
    assert hospital_update["value"] == 3
    assert update["version"] > max(v["version"] for v in snapshot["values"])
    datetime.fromisoformat(update["timestamp"])

    await writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital["CARD-1A"],))
    occupied = await client.next("dashboard_update", update_of("beds_occupied", "CARD"))
    assert occupied["value"] == 1
    assert not [u for u in client.received("dashboard_update") if u["metric"] == "rooms_total"]


async def test_snapshot_equals_sql_after_many_changes(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
    settings: Settings,
) -> None:
    client = await connect(server, token())
    await client.call("subscribe_metrics")
    for bed, status in (("ED-1A", "occupied"), ("ED-1B", "cleaning"), ("ED-2A", "out_of_service")):
        await writer("UPDATE beds SET status = ? WHERE id = ?", (status, hospital[bed]))
    await writer(
        "INSERT INTO staff (department_id, name, role) VALUES (?, 'Dr. A', 'doctor')",
        (hospital["ED"],),
    )
    await writer(
        "INSERT INTO staff_shifts (staff_id, department_id, clock_in_at) VALUES (1, ?, ?)",
        (hospital["ED"], _now()),
    )
    await writer(
        "INSERT INTO appointments (department_id, scheduled_at, status) VALUES (?, ?, 'completed')",
        (hospital["CARD"], _now()),
    )
    await writer("UPDATE patients SET status = 'active' WHERE department_id = ?", (hospital["ED"],))
    await writer("DELETE FROM beds WHERE id = ?", (hospital["CARD-2B"],))
    # The last write's effect has arrived once beds_free for ED reached 1; then ask for everything.
    await client.next("dashboard_update", update_of("beds_free", "ED", 1))
    await _until_equal(client, settings)


async def _until_equal(client: Recorder, settings: Settings) -> None:
    """Wait until the client's screen (all metrics subscribed) equals a SQL recompute."""
    truth = await recompute(
        settings.database_url, settings.zone, datetime.now(settings.zone).date()
    )

    def screen() -> dict[Any, Any]:
        # Money arrives as an exact decimal string; the service's own health is not in SQL.
        return {
            key: Decimal(value) if isinstance(value, str) else value
            for key, value in client.view().items()
            if key in truth
        }

    try:
        await client.until(lambda: screen() == truth)
    except TimeoutError:
        seen = screen()
        differences = {k: (seen.get(k), v) for k, v in truth.items() if seen.get(k) != v}
        pytest.fail(f"the screen never equalled SQL; (screen, sql): {differences}")


async def test_admin_sees_only_own_department(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    admin = await connect(server, token(Role.ADMIN, ("CARD",)))
    authenticated = admin.received("authenticated")[0]
    assert authenticated["departments"] == ["CARD"]
    refused = await admin.call("subscribe_metrics", {"departments": ["ED"]})
    assert refused["code"] == "forbidden"
    refused_hospital = await admin.call("subscribe_metrics", {"departments": [None]})
    assert refused_hospital["code"] == "forbidden"
    await admin.call("subscribe_metrics", {"metrics": list(METRIC_NAMES)})
    await admin.call("request_snapshot")

    super_admin = await connect(server, token())
    await super_admin.call("subscribe_metrics", ["patients_total"])
    for code in ("ED", "CARD"):
        await register_patient(writer, hospital[code], "x")
    await super_admin.next("dashboard_update", update_of("patients_total", "CARD", 2))
    await admin.next("dashboard_update", update_of("patients_total", "CARD", 2))

    departments_seen = {
        value["department"]
        for event, data in admin.events
        if event in ("dashboard_update", "metrics_snapshot")
        for value in (data["values"] if event == "metrics_snapshot" else [data])
    }
    assert departments_seen == {"CARD"}


async def test_handshake_token_and_authenticate_event(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    by_handshake = await connect(server, token(Role.VIEWER, ("ED",)))
    assert by_handshake.received("authenticated")[0]["role"] == "viewer"

    admin_token = token(Role.ADMIN, ("ED",))  # its user is saved before `connect` returns
    by_event = await connect(server)
    assert (await by_event.next("connection_status"))["authenticated"] is False
    reply = await by_event.call("authenticate", {"token": admin_token})
    assert reply["departments"] == ["ED"]
    assert (await by_event.next("authenticated"))["sub"] == "test-admin"


async def test_bad_tokens_get_auth_error_and_no_data(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    client = await connect(server, "not-a-jwt", wait_auth=False)
    assert (await client.next("auth_error"))["code"] == "invalid_token"
    expired = token(minutes=-5)
    failure = await client.call("authenticate", {"token": expired})
    assert failure["code"] == "invalid_token"
    assert "expired" in failure["message"]
    refused = await client.call("subscribe_metrics", ["patients_total"])
    assert refused["code"] == "not_authenticated"
    assert client.received("metrics_snapshot") == []
    assert client.received("dashboard_update") == []


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("subscribe_metrics", {"metrics": "patients_total"}, "invalid_payload"),
        ("subscribe_metrics", {"metrics": [1, 2]}, "invalid_payload"),
        ("subscribe_metrics", {"metric": ["patients_total"]}, "invalid_payload"),
        ("subscribe_metrics", {"metrics": ["patients_total"] * 101}, "invalid_payload"),
        ("subscribe_metrics", {"metrics": ["patients_total", "no_such_metric"]}, "unknown_metric"),
        ("subscribe_metrics", 42, "invalid_payload"),
        ("unsubscribe_metrics", {"departments": "ED"}, "invalid_payload"),
        ("request_snapshot", {"metrics": ["x" * 5000]}, "invalid_payload"),
        ("authenticate", {"token": 7}, "invalid_payload"),
        ("drop_tables", {"please": True}, "unknown_event"),
    ],
)
async def test_bad_input_gets_error_and_changes_nothing(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    event: str,
    payload: Any,
    code: str,
) -> None:
    client = await connect(server, token())
    await client.call("subscribe_metrics", {"metrics": ["beds_free"], "departments": ["ED"]})
    answer = await client.call(event, payload)
    assert answer["ok"] is False
    assert answer["code"] == code
    error_event = "auth_error" if code == "invalid_token" else "error"
    received = await client.next(error_event)
    assert received == answer
    assert received["message"]
    if code == "unknown_metric":
        assert received["details"]["unknown"] == ["no_such_metric"]
        assert set(received["details"]["valid"]) == set(METRIC_NAMES)
    # Nothing changed: still authenticated, same single subscription, service alive.
    await client.call("request_snapshot", {"metrics": ["beds_free"], "departments": ["ED"]})
    assert (await client.next("metrics_snapshot"))["values"][0]["metric"] == "beds_free"
    subscribed = await client.call(
        "subscribe_metrics", {"metrics": ["beds_free"], "departments": ["ED"]}
    )
    assert subscribed["metrics"] == ["beds_free"]


async def test_events_before_authentication_are_refused(
    hospital: dict[str, int], server: LiveServer, connect: Connect
) -> None:
    client = await connect(server)
    for event in ("subscribe_metrics", "unsubscribe_metrics", "request_snapshot"):
        answer = await client.call(event, ["patients_total"])
        assert answer["code"] == "not_authenticated"
    assert len(client.received("error")) == 3
    assert client.received("dashboard_update") == []


async def test_unauthenticated_socket_is_disconnected_after_timeout(
    hospital: dict[str, int], serve: Serve, connect: Connect, settings: Settings
) -> None:
    quick = settings.model_copy(update={"auth_timeout_seconds": 0.2})
    server = await serve(quick)
    client = await connect(server)
    await client.next("auth_error", lambda error: "timed out" in error["message"])
    async with asyncio.timeout(5):
        await client.disconnected.wait()


async def test_unsubscribe_stops_updates(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    client = await connect(server, token())
    await client.call("subscribe_metrics", ["patients_total", "patients_waiting"])
    ack = await client.call("unsubscribe_metrics", {"metrics": ["patients_total"]})
    assert ack["metrics"] == ["patients_total"]
    await register_patient(writer, hospital["ED"], "x")
    await client.next("dashboard_update", update_of("patients_waiting", "ED", 2))
    assert not [u for u in client.received("dashboard_update") if u["metric"] == "patients_total"]


async def test_feed_resumes_after_restart_without_loss(
    hospital: dict[str, int],
    serve: Serve,
    connect: Connect,
    token: Any,
    writer: Write,
    settings: Settings,
) -> None:
    first = await serve()
    client = await connect(first, token())
    await client.call("subscribe_metrics", ["patients_total"])
    await register_patient(writer, hospital["ED"], "before")
    await client.next("dashboard_update", update_of("patients_total", "ED", 2))
    await first.stop()

    for name in ("while down 1", "while down 2"):
        await register_patient(writer, hospital["CARD"], name)
    second = await serve()
    again = await connect(second, token())
    await again.call("subscribe_metrics")
    snapshot = snapshot_values((await again.next("metrics_snapshot"))["values"])
    assert snapshot["patients_total", "CARD"] == 3
    assert snapshot["patients_total", None] == 5
    await writer("DELETE FROM patients WHERE name = 'before'", ())
    await again.next("dashboard_update", update_of("patients_total", "ED", 1))
    await _until_equal(again, settings)


async def test_request_historical_serves_the_rollups(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    client = await connect(server, token())
    # Subscribed before the payment: its update then arrives as one (had the feed applied it
    # before the subscription, it would arrive in the snapshot instead).
    await client.call("subscribe_metrics", {"metrics": ["revenue_today"], "departments": ["CARD"]})
    now = datetime.now(UTC)
    paid = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    bill = await writer(
        "INSERT INTO bills (department_id, amount_cents, created_at, paid_at) VALUES (?, ?, ?, ?)",
        (hospital["CARD"], 12345, paid, paid),
    )
    await writer(
        "INSERT INTO payments (bill_id, department_id, amount_cents, paid_at) VALUES (?, ?, ?, ?)",
        (bill, hospital["CARD"], 12345, paid),
    )
    await client.next("dashboard_update", update_of("revenue_today", "CARD", "123.45"))
    request = {
        "metric": "revenue",
        "department": "CARD",
        "from": (now - timedelta(hours=3)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    answer = await client.call("request_historical", request)
    assert answer == await client.next("historical_data")
    assert answer["granularity"] == "hour"
    assert len(answer["points"]) in (4, 5)  # hours touched by the range
    assert [point["value"] for point in answer["points"]].count("123.45") == 1
    assert {point["value"] for point in answer["points"]} <= {"0.00", "123.45"}

    by_day = await client.call(
        "request_historical", {**request, "department": None, "granularity": "day"}
    )
    assert "123.45" in [point["value"] for point in by_day["points"]]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"metric": "bed_count"}, "unknown_metric"),
        ({"to": "2026-11-01T00:00:00Z"}, "invalid_payload"),  # before `from`
        ({"from": "2025-01-01T00:00:00Z"}, "invalid_payload"),  # too long by hour
        ({"granularity": "minute"}, "invalid_payload"),
        ({"department": "ED"}, "forbidden"),
        ({"department": None}, "forbidden"),
        ({"to": "yesterday"}, "invalid_payload"),
    ],
)
async def test_bad_historical_requests_are_refused(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    change: dict[str, Any],
    code: str,
) -> None:
    admin = await connect(server, token(Role.ADMIN, ("CARD",)))
    request = {
        "metric": "admissions",
        "department": "CARD",
        "from": "2026-11-20T00:00:00Z",
        "to": "2026-11-22T00:00:00Z",
        **change,
    }
    answer = await admin.call("request_historical", request)
    assert answer["code"] == code, answer
    assert (await admin.next("error"))["event"] == "request_historical"
    assert admin.received("historical_data") == []


async def test_a_token_that_expires_while_connected_stops_the_data(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    # A one-minute token issued 58 seconds ago: it runs out while the socket is open.
    soon = token(Role.ADMIN, ("ED",), minutes=1, now=datetime.now(UTC) - timedelta(seconds=58))
    expiring = await connect(server, soon)
    await expiring.call("subscribe_metrics", ["patients_waiting"])
    watcher = await connect(server, token(sub="watcher"))
    await watcher.call(
        "subscribe_metrics", {"metrics": ["patients_waiting"], "departments": ["ED"]}
    )

    ended = await expiring.next("auth_error", within=10)
    assert ended["code"] == "auth_failed"
    assert "expired" in ended["message"]
    await register_patient(writer, hospital["ED"], "after the expiry")
    await watcher.next("dashboard_update", update_of("patients_waiting", "ED", 2))
    assert not [u for u in expiring.received("dashboard_update") if u["value"] == 2]
    refused = await expiring.call("request_snapshot")
    assert refused["code"] == "not_authenticated"
    renewed = await expiring.call("authenticate", {"token": token(Role.ADMIN, ("ED",))})
    assert renewed["departments"] == ["ED"]
