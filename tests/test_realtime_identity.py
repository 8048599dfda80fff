"""Revocation, deactivation and demotion reach sockets that are already open, on a live server.

Each test changes a user the way an administrator would (the CLI's functions, with their own
connection to the database) while that user's socket is subscribed, then checks what the
socket still receives: nothing of what it may no longer see, from the next check on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livedash.auth.tokens import Principal, verify_token
from livedash.auth.users import Authenticator, run_revoke, run_save_user
from livedash.realtime.fanout import SocketIOFanOut
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.recorder import Recorder, update_of
from tests.support.live import Connect, Serve
from tests.support.writers import Write, register_patient

RECHECK_SECONDS = 0.2


@pytest.fixture
def rechecking(settings: Settings) -> Settings:
    """Settings whose open sockets are checked against the users table five times a second."""
    return settings.model_copy(update={"auth_recheck_seconds": RECHECK_SECONDS})


async def _subscribed(connect: Connect, server: Any, token: str) -> Recorder:
    client = await connect(server, token)
    ack = await client.call("subscribe_metrics", {"metrics": ["patients_total"]})
    assert ack["ok"] is True
    return client


async def _sees_nothing_more(
    client: Recorder, bystander: Recorder, writer: Write, department_id: int, code: str
) -> None:
    """A write in `code` reaches the bystander but not `client`, which is refused data."""
    updates_before = len(client.received("dashboard_update"))
    await register_patient(writer, department_id, "after the change")
    await bystander.next("dashboard_update", update_of("patients_total", code, 2))
    # Anything emitted to the client's rooms was queued before this answer.
    answer = await client.call("request_snapshot", ["patients_total"])
    assert answer["code"] == "not_authenticated"
    assert len(client.received("dashboard_update")) == updates_before


@pytest.mark.parametrize(
    "change",
    ["revoke the user", "revoke the token", "deactivate the user"],
)
async def test_a_revoked_or_deactivated_user_loses_its_open_socket_within_the_bound(
    change: str,
    hospital: dict[str, int],
    serve: Serve,
    rechecking: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    server = await serve(rechecking)
    bystander = await _subscribed(connect, server, token(Role.SUPER_ADMIN, sub="bystander"))
    card_token = token(Role.ADMIN, ("CARD",), sub="carol")
    carol = await _subscribed(connect, server, card_token)
    await carol.next("metrics_snapshot")

    if change == "revoke the user":
        assert await run_revoke(rechecking, user="carol")
    elif change == "revoke the token":
        jti = verify_token(rechecking, card_token).token_id
        assert jti is not None
        assert await run_revoke(rechecking, jti=jti, reason="stolen laptop")
    else:
        await run_save_user(rechecking, "carol", Role.VIEWER, ["CARD"], active=False)

    refusal = await carol.next("auth_error", within=RECHECK_SECONDS * 20)
    assert refusal["code"] == "invalid_token"
    assert "revoked" in refusal["message"] or "inactive" in refusal["message"]
    await _sees_nothing_more(carol, bystander, writer, hospital["CARD"], "CARD")
    assert (await carol.call("request_historical", _day_of("admissions")))["code"] == (
        "not_authenticated"
    )


def _updates(client: Recorder) -> list[Any]:
    """Every metric update `client` received, one by one or in batches."""
    batches = client.received("dashboard_updates")
    return [*client.received("dashboard_update"), *(u for b in batches for u in b["updates"])]


@pytest.mark.parametrize("batched", [False, True], ids=["each", "batched"])
async def test_a_demoted_user_keeps_only_what_its_new_scope_allows(
    batched: bool,
    hospital: dict[str, int],
    serve: Serve,
    rechecking: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    server = await serve(rechecking)
    bystander = await _subscribed(connect, server, token(Role.SUPER_ADMIN, sub="bystander"))
    handshake = {"updates": "batched"} if batched else None
    dana = await connect(server, token(Role.ADMIN, ("CARD", "ED"), sub="dana"), handshake=handshake)
    assert (await dana.call("subscribe_metrics", {"metrics": ["patients_total"]}))["ok"] is True
    assert dana.received("authenticated")[0]["departments"] == ["CARD", "ED"]

    await run_save_user(rechecking, "dana", Role.VIEWER, ["ED"], active=True)

    narrowed = await dana.next("authenticated", within=RECHECK_SECONDS * 20)
    assert (narrowed["role"], narrowed["departments"]) == ("viewer", ["ED"])
    await register_patient(writer, hospital["CARD"], "not for dana any more")
    await bystander.next("dashboard_update", update_of("patients_total", "CARD", 2))
    await register_patient(writer, hospital["ED"], "still for dana")
    ed_update = update_of("patients_total", "ED", 2)
    if batched:
        await dana.next("dashboard_updates", lambda b: any(ed_update(u) for u in b["updates"]))
    else:
        await dana.next("dashboard_update", ed_update)
    assert not [
        update
        for update in _updates(dana)
        if update["department"] == "CARD" and update["value"] == 2
    ]
    refused = await dana.call("request_snapshot", {"departments": ["CARD"]})
    assert refused["code"] == "forbidden"


async def test_a_failed_re_authentication_drops_the_identity_the_socket_had(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    # No periodic check within the test: the refused re-authentication alone must act.
    server = await serve(settings.model_copy(update={"auth_recheck_seconds": 3600}))
    bystander = await _subscribed(connect, server, token(Role.SUPER_ADMIN, sub="bystander"))
    card_token = token(Role.ADMIN, ("CARD",), sub="carol")
    carol = await _subscribed(connect, server, card_token)
    jti = verify_token(settings, card_token).token_id
    assert jti is not None
    assert await run_revoke(settings, jti=jti, reason="stolen laptop")

    answer = await carol.call("authenticate", {"token": card_token})
    assert answer["code"] == "invalid_token"
    assert "revoked" in answer["message"]
    await _sees_nothing_more(carol, bystander, writer, hospital["CARD"], "CARD")

    # A token that is still good gives the socket an identity again.
    again = await carol.call("authenticate", {"token": token(Role.ADMIN, ("CARD",), sub="cy")})
    assert again["sub"] == "cy"


JOIN_YIELDS = 50  # turns of the event loop a subscription spends joining each room


@pytest.mark.both_backends
async def test_subscribing_while_the_identity_changes_joins_no_room_of_the_old_one(
    backend: str,
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The race, made certain: joining a room takes many turns of the loop (as a slow Redis
    # would), and a token's check takes none, so a re-authentication sent right after a
    # subscription would finish while the subscription is still joining the rooms it chose
    # for the identity before. Only the per-socket lock keeps them apart.
    join = SocketIOFanOut.join

    async def slow_join(self: SocketIOFanOut, sid: str, room: str) -> None:
        for _ in range(JOIN_YIELDS):
            await asyncio.sleep(0)
        await join(self, sid, room)

    async def instant_admit(self: Authenticator, claims: Principal) -> Principal:
        return claims  # the tokens here say what the users table says

    monkeypatch.setattr(SocketIOFanOut, "join", slow_join)
    monkeypatch.setattr(Authenticator, "admit", instant_admit)
    server = await serve(settings)
    bystander = await _subscribed(connect, server, token(Role.SUPER_ADMIN, sub="bystander"))
    client = await connect(server, token(Role.ADMIN, ("CARD",), sub="carol"))
    # Sent in this order on one socket: the subscription as CARD's admin, then the switch.
    subscribed = asyncio.create_task(
        client.client.call("subscribe_metrics", {"metrics": ["patients_total"]})
    )
    await asyncio.sleep(0)  # the subscription's packet goes out first
    switched = client.client.call("authenticate", {"token": token(Role.VIEWER, ("ED",), sub="ed")})
    ack, identity = await asyncio.gather(subscribed, switched)
    assert ack["ok"] is True
    assert identity["departments"] == ["ED"]

    await register_patient(writer, hospital["CARD"], "not for the ED viewer")
    await bystander.next("dashboard_update", update_of("patients_total", "CARD", 2))
    assert (await client.call("request_snapshot", ["patients_total"]))["values"]
    assert not [
        update for update in client.received("dashboard_update") if update["department"] == "CARD"
    ]


def _day_of(series: str) -> dict[str, Any]:
    return {
        "metric": series,
        "department": "CARD",
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-02T00:00:00Z",
        "granularity": "hour",
    }
