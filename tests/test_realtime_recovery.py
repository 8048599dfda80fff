"""Recovery: every update has a stream position; a client that names the last one it saw gets
exactly what it missed, or a fresh snapshot marked `recovered: false`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import socketio

from livedash.settings import Settings
from livedash.testing.recorder import Recorder, update_of
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import services_of
from tests.support.writers import Write, register_patient

pytestmark = pytest.mark.both_backends

ED_PATIENTS = {"metrics": ["patients_total"], "departments": ["ED"]}


def _offsets(client: Recorder, epoch: str | None = None) -> list[int]:
    return [
        update["position"]["offset"]
        for update in client.received("dashboard_update")
        if update.get("position") and (epoch is None or update["position"]["epoch"] == epoch)
    ]


async def _subscribed(client: Recorder, selection: dict[str, Any]) -> dict[str, Any]:
    ack = await client.call("subscribe_metrics", selection)
    assert ack["ok"] is True, ack
    return dict(ack)


async def test_updates_carry_positions_that_grow_by_one_per_update_sent(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    client = await connect(server, token())
    ack = await _subscribed(client, {"metrics": ["patients_total", "patients_waiting"]})
    start = ack["position"]
    for number in range(3):
        await register_patient(writer, hospital["ED"], f"p{number}")
    await client.next("dashboard_update", update_of("patients_total", "ED", 4))
    updates = [u for u in client.received("dashboard_update")]
    positions = [u["position"] for u in updates]
    assert {p["epoch"] for p in positions} == {start["epoch"]}
    offsets = [p["offset"] for p in positions]
    assert offsets == sorted(set(offsets))
    assert offsets[0] > start["offset"]


async def test_a_client_that_comes_back_gets_exactly_what_it_missed(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    watcher = await connect(server, token())  # stays connected: what the other one missed
    await _subscribed(watcher, ED_PATIENTS)
    leaving = await connect(server, token())
    ack = await _subscribed(leaving, ED_PATIENTS)
    await register_patient(writer, hospital["ED"], "seen")
    seen = await leaving.next("dashboard_update", update_of("patients_total", "ED", 2))
    await leaving.client.disconnect()

    for number in range(4):  # the screen is away; the hospital goes on
        await register_patient(writer, hospital["ED"], f"missed {number}")
        await register_patient(writer, hospital["CARD"], f"not subscribed {number}")
    await watcher.next("dashboard_update", update_of("patients_total", "ED", 6))
    missed = [
        u
        for u in watcher.received("dashboard_update")
        if u["position"]["offset"] > seen["position"]["offset"]
    ]

    back = await connect(server, token())
    reply = await _subscribed(back, {**ED_PATIENTS, "since": seen["position"]})
    assert reply["recovered"] is True
    assert not back.received("metrics_snapshot")
    replayed = back.received("dashboard_update")
    assert replayed == missed  # in order, each once, only the subscribed scope
    assert replayed[-1]["value"] == 6  # updates of one metric within 25 ms are coalesced
    assert reply["position"]["offset"] >= replayed[-1]["position"]["offset"]
    assert ack["position"]["epoch"] == reply["position"]["epoch"]


async def test_since_in_the_handshake_is_used_by_the_first_subscription(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    first = await connect(server, token())
    ack = await _subscribed(first, ED_PATIENTS)
    await first.client.disconnect()
    watcher = await connect(server, token())
    await _subscribed(watcher, ED_PATIENTS)
    await register_patient(writer, hospital["ED"], "while away")
    await watcher.next("dashboard_update", update_of("patients_total", "ED", 2))

    client = socketio.AsyncClient(reconnection=False)
    back = Recorder(client)
    auth = {"token": token(), "since": ack["position"]}
    await client.connect(server.url, auth=auth, transports=["websocket"], wait_timeout=10)
    try:
        await back.next("authenticated")
        reply = await _subscribed(back, ED_PATIENTS)
        assert reply["recovered"] is True
        assert [u["value"] for u in back.received("dashboard_update")] == [2]
    finally:
        await client.disconnect()


@pytest.mark.parametrize(
    "since",
    [
        {"epoch": "another-epoch", "offset": 1},  # the service restarted, or a new leader
        {"epoch": None, "offset": 10**9},  # ahead of the stream: not from this service
    ],
)
async def test_an_unknown_position_gets_a_snapshot_marked_not_recovered(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
    since: dict[str, Any],
) -> None:
    probe = await connect(server, token())
    top = (await _subscribed(probe, ED_PATIENTS))["position"]
    position = {"epoch": since["epoch"] or top["epoch"], "offset": since["offset"]}
    client = await connect(server, token())
    reply = await _subscribed(client, {**ED_PATIENTS, "since": position})
    assert reply["recovered"] is False
    snapshot = await client.next("metrics_snapshot")
    assert snapshot["recovered"] is False
    assert {(v["metric"], v["department"], v["value"]) for v in snapshot["values"]} == {
        ("patients_total", "ED", 1)
    }
    assert not client.received("dashboard_update")


async def test_a_gap_longer_than_the_history_gets_a_snapshot(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    server = await serve(settings.model_copy(update={"history_size": 3}))
    client = await connect(server, token())
    ack = await _subscribed(client, ED_PATIENTS)
    await client.client.disconnect()
    watcher = await connect(server, token())
    await _subscribed(watcher, ED_PATIENTS)
    for number in range(5):  # more updates than the history keeps
        await register_patient(writer, hospital["ED"], f"p{number}")
    await watcher.next("dashboard_update", update_of("patients_total", "ED", 6))

    back = await connect(server, token())
    reply = await _subscribed(back, {**ED_PATIENTS, "since": ack["position"]})
    assert reply["recovered"] is False
    snapshot = await back.next("metrics_snapshot")
    assert snapshot["values"][0]["value"] == 6


async def test_no_update_after_the_acknowledged_position_is_missed(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    # A reference client sees every update; others subscribe while writes keep coming. Each
    # must receive every update after the position its subscription was acknowledged at.
    reference = await connect(server, token())
    await _subscribed(reference, ED_PATIENTS)
    writes = 30

    async def write_all() -> None:
        for number in range(writes):
            await register_patient(writer, hospital["ED"], f"p{number}")

    writing = asyncio.create_task(write_all())
    late: list[tuple[Recorder, int]] = []
    while not writing.done() and len(late) < 8:
        client = await connect(server, token())
        late.append((client, (await _subscribed(client, ED_PATIENTS))["position"]["offset"]))
    await writing
    final = 1 + writes
    await reference.next("dashboard_update", update_of("patients_total", "ED", final))
    everything = _offsets(reference)
    for client, acknowledged in late:
        # Not "until the screen shows the final value": a snapshot read after the stream's
        # top may already carry a value whose update is still on its way (seen: the last
        # offset missing when checked, there 0.5 s later).
        expected = {offset for offset in everything if offset > acknowledged}
        with contextlib.suppress(TimeoutError):
            await client.until(lambda c=client, e=expected: e <= set(_offsets(c)))  # type: ignore[misc]
        assert sorted(expected - set(_offsets(client))) == []
        assert client.view().get(("patients_total", "ED")) == final


async def test_a_resync_sends_each_subscribed_socket_its_values_and_retries_a_failed_pass(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = services_of(server)
    gateway, view = services.gateway, services.view
    emergency = await connect(server, token())
    await _subscribed(emergency, ED_PATIENTS)
    both = await connect(server, token())
    await _subscribed(both, {"metrics": ["beds_total"], "departments": ["ED", "CARD"]})
    await connect(server, token())  # authenticated, subscribed to nothing: sent nothing
    await register_patient(writer, hospital["ED"], "before the resync")
    update = await emergency.next("dashboard_update", update_of("patients_total", "ED", 2))

    reads: list[tuple[list[str], set[str | None]]] = []
    real_snapshot = view.snapshot

    async def failing_once(metrics: Any, departments: Any, *, fresh: bool = False) -> Any:
        reads.append((sorted(metrics), set(departments)))
        if len(reads) == 1:
            raise ConnectionError("the database went away")
        return await real_snapshot(metrics, departments, fresh=fresh)

    monkeypatch.setattr(view, "snapshot", failing_once)
    monkeypatch.setattr("livedash.realtime.gateway.RESYNC_RETRY_SECONDS", 0.0)
    gateway.resync("asked by the test")
    gateway.resync("asked again before the pass began: the same pass answers both")

    def resent(snapshot: dict[str, Any]) -> bool:
        return snapshot["recovered"] is False

    snapshot = await emergency.next("metrics_snapshot", resent)
    # The stream's top when the pass began: every later update reaches the socket live.
    assert snapshot["position"]["epoch"] == update["position"]["epoch"]
    assert snapshot["position"]["offset"] >= update["position"]["offset"]
    assert [(v["metric"], v["department"], v["value"]) for v in snapshot["values"]] == [
        ("patients_total", "ED", 2)
    ]
    snapshot = await both.next("metrics_snapshot", resent)
    assert {(v["metric"], v["department"]) for v in snapshot["values"]} == {
        ("beds_total", "ED"),
        ("beds_total", "CARD"),
    }
    # One read per distinct subscription; the failed pass was retried once.
    assert len(reads) == 3
    # Compared as sorted lists: a set's repr follows string hashing, random per process.
    assert sorted((metrics, sorted(departments)) for metrics, departments in reads[1:]) == [
        (["beds_total"], ["CARD", "ED"]),
        (["patients_total"], ["ED"]),
    ]
    assert len([s for s in emergency.received("metrics_snapshot") if resent(s)]) == 1
