"""The gateway's defences, end to end: who may see what, rate limits, size limits, forged events.

Every test captures everything each client receives and checks that no payload holds data of
a department outside that client's scope.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from livedash.errors import RateLimited
from livedash.realtime.limiter import SocketLimiter
from livedash.realtime.schemas import (
    ErrorPayload,
    HistoricalData,
    MetricsSnapshot,
    SubscriptionAck,
)
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.recorder import Recorder, update_of
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import services_of
from tests.support.security import GENEROUS, assert_no_foreign_data
from tests.support.writers import Write, register_patient

EVERYONE = frozenset({"ED", "CARD", None})
INCOMING = ("subscribe_metrics", "unsubscribe_metrics", "request_snapshot", "request_historical")
TARGETS: tuple[str | None, ...] = ("ED", "CARD", None)

pytestmark = pytest.mark.both_backends


def _request(event: str, department: str | None) -> dict[str, Any]:
    if event == "request_historical":
        now = datetime.now(UTC)
        return {
            "metric": "admissions",
            "department": department,
            "from": (now - timedelta(hours=2)).isoformat(),
            "to": now.isoformat(),
        }
    return {"metrics": ["patients_total"], "departments": [department]}


def _served(event: str, department: str | None, answer: Any) -> bool:
    """Whether `answer` is the event's proper answer for `department` (not a refusal)."""
    if answer.get("ok") is False:
        return False
    if event == "request_historical":
        return HistoricalData.model_validate(answer).department == department
    if event == "request_snapshot":
        snapshot = MetricsSnapshot.model_validate(answer)
        return {value.department for value in snapshot.values} == {department}
    return SubscriptionAck.model_validate(answer).departments == [department]


async def test_authorization_matrix(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    server = await serve(settings.model_copy(update=GENEROUS))
    roles: dict[str, tuple[Recorder, frozenset[str | None]]] = {
        "super_admin": (await connect(server, token()), EVERYONE),
        "admin of ED": (await connect(server, token(Role.ADMIN, ("ED",))), frozenset({"ED"})),
        "viewer of CARD": (
            await connect(server, token(Role.VIEWER, ("CARD",))),
            frozenset({"CARD"}),
        ),
    }
    expected: dict[tuple[str, str, str | None], str] = {}
    seen: dict[tuple[str, str, str | None], str] = {}
    for role, (client, visible) in roles.items():
        for event in INCOMING:
            for department in TARGETS:
                cell = (role, event, department)
                expected[cell] = "served" if department in visible else "forbidden"
                answer = await client.call(event, _request(event, department))
                seen[cell] = "served" if _served(event, department, answer) else answer["code"]
                if answer.get("ok") is False:
                    assert await client.next("error", lambda e, a=answer: e == a) == answer
    assert seen == expected

    # Everyone subscribes to all they may see, then both departments change.
    for client, _ in roles.values():
        assert (await client.call("subscribe_metrics", ["patients_total"]))["ok"] is True
    for code in ("ED", "CARD"):
        await register_patient(writer, hospital[code], f"matrix {code}")
    super_admin = roles["super_admin"][0]
    for department, total in (("ED", 2), ("CARD", 2), (None, 4)):
        await super_admin.next("dashboard_update", update_of("patients_total", department, total))
    await roles["admin of ED"][0].next("dashboard_update", update_of("patients_total", "ED", 2))
    await roles["viewer of CARD"][0].next(
        "dashboard_update", update_of("patients_total", "CARD", 2)
    )
    # One more round trip each, so that anything sent before it has arrived.
    for client, visible in roles.values():
        await client.call("request_snapshot")
        assert_no_foreign_data(client, visible)


# -- rate limits -------------------------------------------------------------------------------


async def _burst(client: Recorder, n: int, event: str = "request_snapshot") -> list[Any]:
    return list(
        await asyncio.gather(*(client.call(event, {"metrics": ["beds_free"]}) for _ in range(n)))
    )


def _limited(answers: Iterable[Any], per: str) -> list[ErrorPayload]:
    refusals = [ErrorPayload.model_validate(a) for a in answers if a.get("ok") is False]
    for refusal in refusals:
        assert refusal.code == "rate_limited", refusal
        assert refusal.details["per"] == per
        assert refusal.retry_after is not None
        assert 0 < refusal.retry_after <= 60
    return refusals


async def test_socket_rate_limit_refuses_the_excess_and_changes_nothing(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    limited = settings.model_copy(
        update={"rate_limit_socket": "5/minute;1000/second", "rate_limit_user": "1000/minute"}
    )
    server = await serve(limited)
    noisy = await connect(server, token(Role.ADMIN, ("ED",), sub="noisy"))  # handshake: 1 event
    answers = await _burst(noisy, 10)
    assert len(_limited(answers, per="socket")) == 6
    assert len([a for a in answers if "values" in a]) == 4

    # Over the limit, a subscription is refused and nothing is subscribed.
    refused = await noisy.call("subscribe_metrics", {"metrics": ["patients_total"]})
    assert refused["code"] == "rate_limited"
    assert (await noisy.next("error", lambda e: e["event"] == "subscribe_metrics")) == refused
    assert "retry after" in refused["message"]

    # Another user, and another socket of the same user, are not affected.
    other = await connect(server, token(Role.ADMIN, ("ED",), sub="quiet"))
    same_user = await connect(server, token(Role.ADMIN, ("ED",), sub="noisy"))
    assert (await same_user.call("request_snapshot"))["values"]
    assert (await other.call("subscribe_metrics", ["patients_total"]))["ok"] is True
    await register_patient(writer, hospital["ED"], "after the burst")
    await other.next("dashboard_update", update_of("patients_total", "ED", 2))
    # The update went to its room in one emit; a later answer to `noisy` arrives after it.
    assert (await noisy.call("request_snapshot"))["code"] == "rate_limited"
    assert noisy.received("dashboard_update") == []
    assert_no_foreign_data(noisy, {"ED"})


async def test_user_rate_limit_counts_all_of_a_users_sockets(
    hospital: dict[str, int], serve: Serve, settings: Settings, connect: Connect, token: Any
) -> None:
    limited = settings.model_copy(
        update={
            "rate_limit_socket": "1000/minute",
            "rate_limit_user": "6/minute;1000/second",
            "rate_limit_user_per_socket": "0/minute",  # the user's own budget, not its sockets'
        }
    )
    server = await serve(limited)
    first = await connect(server, token(Role.VIEWER, ("CARD",), sub="carol"))
    second = await connect(server, token(Role.VIEWER, ("CARD",), sub="carol"))
    stranger = await connect(server, token(Role.VIEWER, ("CARD",), sub="dave"))
    assert len(_limited(await _burst(first, 4), per="user")) == 0
    assert len(_limited(await _burst(second, 4), per="user")) == 2
    assert len(_limited(await _burst(first, 1), per="user")) == 1
    assert len(_limited(await _burst(stranger, 6), per="user")) == 0


async def test_events_before_authentication_count_against_the_socket_only(
    hospital: dict[str, int], serve: Serve, settings: Settings, connect: Connect, token: Any
) -> None:
    limited = settings.model_copy(
        update={
            "rate_limit_socket": "5/minute",
            "rate_limit_user": "3/minute",
            "rate_limit_user_per_socket": "0/minute",
        }
    )
    server = await serve(limited)
    erin = token(sub="erin")  # her user is saved before `connect` returns
    anonymous = await connect(server)
    for _ in range(4):
        assert (await anonymous.call("request_snapshot"))["code"] == "not_authenticated"
    authenticated = await anonymous.call("authenticate", {"token": erin})
    assert authenticated["sub"] == "erin"  # the 5th event on this socket
    assert (await anonymous.call("request_snapshot"))["details"]["per"] == "socket"

    # None of those five counted against erin: her three events on another socket pass.
    again = await connect(server, token(sub="erin"))
    assert len(_limited(await _burst(again, 4), per="user")) == 1


async def test_connection_attempts_per_address_are_refused_with_a_reason(
    hospital: dict[str, int], serve: Serve, settings: Settings, connect: Connect, token: Any
) -> None:
    server = await serve(settings.model_copy(update={"rate_limit_connections_per_ip": "3/minute"}))
    accepted = [await connect(server, token()) for _ in range(3)]
    refused = await connect(server, token(), wait_auth=False)
    error = ErrorPayload.model_validate(await refused.next("error"))
    assert (error.code, error.event, error.details["per"]) == ("rate_limited", "connect", "address")
    assert error.retry_after is not None
    assert 0 < error.retry_after <= 60
    async with asyncio.timeout(5):
        await refused.disconnected.wait()
    assert [event for event, _ in refused.events] == ["error"]  # no status, no data
    for client in accepted:
        assert (await client.call("request_snapshot", ["beds_free"]))["values"]


async def test_limiter_keeps_addresses_and_users_apart(settings: Settings) -> None:
    limiter = SocketLimiter(
        settings.model_copy(
            update={
                "rate_limit_connections_per_ip": "2/minute",
                "rate_limit_user": "2/minute",
                "rate_limit_user_per_socket": "0/minute",
                "rate_limit_socket": "100/minute",
            }
        )
    )
    for _ in range(2):
        await limiter.connection("10.0.0.1")
        await limiter.event("sid-1", "alice")
    with pytest.raises(RateLimited):
        await limiter.connection("10.0.0.1")
    with pytest.raises(RateLimited):
        await limiter.event("sid-2", "alice")
    await limiter.connection("10.0.0.2")
    await limiter.event("sid-1", "bob")
    await limiter.aclose()


# -- size limits -------------------------------------------------------------------------------


async def test_oversized_payload_closes_only_that_socket_and_changes_nothing(
    hospital: dict[str, int],
    server: LiveServer,
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    bystander = await connect(server, token(Role.ADMIN, ("ED",), sub="bystander"))
    await bystander.call("subscribe_metrics", {"metrics": ["patients_total"]})
    sender = await connect(server, token(Role.ADMIN, ("ED",), sub="sender"))
    await sender.call("subscribe_metrics", {"metrics": ["beds_free"]})

    # Just under the buffer size: validated and refused, the socket stays.
    names = ["m" * 60] * (settings.max_payload_bytes // 70)
    answer = await sender.call("subscribe_metrics", {"metrics": names})
    assert answer["code"] == "invalid_payload"
    assert len(json.dumps(answer)) < 4096  # the refusal does not echo the payload

    # Over it: Engine.IO drops the connection before anything parses the payload.
    huge = {"metrics": ["patients_total"], "departments": ["ED"] * settings.max_payload_bytes}
    await sender.client.emit("subscribe_metrics", huge)
    async with asyncio.timeout(5):
        await sender.disconnected.wait()

    await register_patient(writer, hospital["ED"], "after the flood")
    await bystander.next("dashboard_update", update_of("patients_total", "ED", 2))
    assert (await bystander.call("request_snapshot", ["patients_total"]))["values"]
    again = await connect(server, token(Role.ADMIN, ("ED",), sub="sender"))
    assert (await again.call("subscribe_metrics", ["beds_free"]))["ok"] is True
    for client in (bystander, sender, again):
        assert_no_foreign_data(client, {"ED"})


async def test_subscriptions_per_socket_are_capped(
    hospital: dict[str, int], serve: Serve, settings: Settings, connect: Connect, token: Any
) -> None:
    server = await serve(settings.model_copy(update={"max_subscriptions": 5}))
    client = await connect(server, token())
    three = {"metrics": ["beds_free", "beds_total", "beds_occupied"], "departments": ["ED"]}
    assert (await client.call("subscribe_metrics", three))["ok"] is True
    too_many = {**three, "departments": ["CARD"]}
    refused = await client.call("subscribe_metrics", too_many)
    assert refused["code"] == "invalid_payload"
    assert refused["details"] == {"limit": 5, "held": 3, "asked": 3}
    assert "at most 5 subscriptions per socket" in refused["message"]
    # Nothing of the refused request was joined: two more fit, and the same three are no news.
    assert (await client.call("subscribe_metrics", three))["ok"] is True
    two = {"metrics": ["beds_free", "beds_total"], "departments": [None]}
    assert (await client.call("subscribe_metrics", two))["ok"] is True
    full = await client.call("subscribe_metrics", {"metrics": ["rooms_total"]})
    assert full["details"]["held"] == 5


# -- forged events -----------------------------------------------------------------------------


async def test_forged_connect_and_disconnect_events_are_refused(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    """A client's *event* named "connect" or "disconnect" must not reach the lifecycle.

    python-socketio dispatches such events to the connect and disconnect handlers. Obeyed, a
    forged "disconnect" would make the gateway forget the socket (and its token's expiry)
    while it stays in its rooms, receiving updates forever.
    """
    client = await connect(server, token(Role.ADMIN, ("ED",)))
    await client.call("subscribe_metrics", ["patients_total"])
    forged = [
        ["disconnect", "client namespace disconnect"],
        ["connect", {"asgi.scope": {"client": ["203.0.113.9", 1]}}, {"token": token()}],
        [7, {}],
        [None],
    ]
    for packet in forged:
        await client.client.eio.send("2" + json.dumps(packet))  # a raw Socket.IO EVENT
        refusal = await client.next("error")
        assert refusal["code"] == "unknown_event", refusal
    # An event name python-socketio cannot even look up fails inside the library: no answer,
    # but the server and this socket carry on.
    await client.client.eio.send('2[["a"],{}]')

    assert (await client.call("request_snapshot"))["values"]
    await register_patient(writer, hospital["ED"], "still watched")
    await client.next("dashboard_update", update_of("patients_total", "ED", 2))
    assert client.received("authenticated")[-1]["role"] == "admin"
    assert len(client.received("authenticated")) == 1
    assert_no_foreign_data(client, {"ED"})


# -- history's cost --------------------------------------------------------------------------


def _history(start: str, end: str, granularity: str = "hour") -> dict[str, Any]:
    return {
        "metric": "admissions",
        "department": "ED",
        "from": start,
        "to": end,
        "granularity": granularity,
    }


async def test_history_is_charged_by_the_hours_it_spans_per_user(
    hospital: dict[str, int], serve: Serve, settings: Settings, connect: Connect, token: Any
) -> None:
    budget = {
        "rate_limit_history_hours": "100/minute",
        "rate_limit_history_hours_per_socket": "0/minute",
    }
    server = await serve(settings.model_copy(update=budget))
    greedy = await connect(server, token(Role.ADMIN, ("ED",), sub="greedy"))
    four_days = _history("2026-11-01T00:00:00Z", "2026-11-05T00:00:00Z")  # 96 hours
    assert len((await greedy.call("request_historical", four_days))["points"]) == 96
    refused = await greedy.call("request_historical", four_days)
    assert (refused["code"], refused["details"]["per"]) == ("rate_limited", "history")
    assert 0 < refused["retry_after"] <= 60
    # What is left of the budget still buys a shorter range; other users have their own.
    assert len((await greedy.call("request_historical", _day("2026-11-01")))["points"]) == 1
    other = await connect(server, token(Role.ADMIN, ("ED",), sub="other"))
    assert len((await other.call("request_historical", four_days))["points"]) == 96
    # A year by day costs 8,784 hours: more than the whole budget, it is still served once
    # the budget is unused (charged at most the budget), never refused for ever.
    year = _history("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "day")
    third = await connect(server, token(Role.ADMIN, ("ED",), sub="third"))
    assert len((await third.call("request_historical", year))["points"]) == 366


def _day(date: str) -> dict[str, Any]:
    return _history(f"{date}T00:00:00Z", f"{date}T01:00:00Z")


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("9999-12-30T00:00:00Z", "9999-12-31T00:00:00Z"),
        ("9999-12-30T00:00:00-05:00", "9999-12-31T23:00:00-05:00"),
        ("0001-01-01T00:00:00+05:00", "0001-01-02T00:00:00Z"),
    ],
)
async def test_history_at_the_ends_of_the_calendar_is_a_validation_error(
    start: str, end: str, hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    client = await connect(server, token())
    answer = await client.call("request_historical", _history(start, end))
    assert answer["code"] == "invalid_payload"
    assert "1970" in answer["message"]


async def test_history_is_read_a_few_requests_at_a_time_and_others_are_still_served(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await serve(settings.model_copy(update={"history_reads_at_once": 1}))
    view = services_of(server).view
    read = view.history
    reading, most = 0, 0
    first = asyncio.Event()
    release = asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        nonlocal reading, most
        reading += 1
        most = max(most, reading)
        first.set()
        try:
            await release.wait()
            return await read(*args, **kwargs)
        finally:
            reading -= 1

    monkeypatch.setattr(view, "history", held)
    askers = [await connect(server, token(Role.ADMIN, ("ED",), sub=f"asker-{n}")) for n in range(3)]
    asked = [
        asyncio.create_task(asker.call("request_historical", _day("2026-11-01")))
        for asker in askers
    ]
    async with asyncio.timeout(10):
        await first.wait()
    # While one read holds the only slot, the others wait for it and everything else goes on.
    bystander = await connect(server, token(sub="bystander"))
    assert (await bystander.call("request_snapshot", ["beds_free"]))["values"]
    assert reading == 1
    release.set()
    answers = await asyncio.gather(*asked)
    assert [len(answer["points"]) for answer in answers] == [1, 1, 1]
    assert most == 1
