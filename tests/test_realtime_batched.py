"""`dashboard_updates`: a screen that asks for it in its handshake (`auth.updates: "batched"`)
gets every changed value of one send in one frame, instead of a frame per value.

What it sees is what a screen taking `dashboard_update` sees, value for value (same versions,
same positions), only fewer frames; its department scope, its recovery and its backpressure
hold as before. Screens subscribed to the same things are one group: a send is encoded once per
group, not per screen (realtime/groups.py).
"""

from __future__ import annotations

from typing import Any

from livedash.realtime.rooms import UPDATES_ROOM, room_name
from livedash.realtime.schemas import BATCH_EVENT, UPDATE_EVENT
from livedash.store.models import Role
from livedash.testing.recorder import Recorder
from tests.support.live import Connect, LiveServer
from tests.support.polling import read_until
from tests.support.probes import gateway_of
from tests.support.stalled import StalledSocket
from tests.support.writers import Write, register_patient

BATCHED = {"updates": "batched"}
PATIENTS = ["patients_total", "patients_waiting", "patients_new_today"]
PADDING = "x" * 4000  # a large update fills a stalled screen's buffers in fewer of them


def _keyed(update: dict[str, Any]) -> tuple[str, str | None, int]:
    return update["metric"], update["department"], update["version"]


async def _batch_with(screen: Recorder, metric: str, department: str, value: int) -> list[Any]:
    batch = await screen.next(
        BATCH_EVENT,
        lambda b: any(
            (u["metric"], u["department"], u["value"]) == (metric, department, value)
            for u in b["updates"]
        ),
    )
    return list(batch["updates"])


async def test_a_batched_screen_gets_a_sends_every_value_in_one_frame_as_the_others_get_them(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    batched = await connect(server, token(sub="batched"), handshake=BATCHED)
    each = await connect(server, token(sub="each"))
    selection = {"metrics": PATIENTS, "departments": ["ED", "CARD"]}
    for screen in (batched, each):
        assert (await screen.call("subscribe_metrics", selection))["ok"] is True

    await register_patient(writer, hospital["ED"], "Ada")

    updates = await _batch_with(batched, "patients_total", "ED", 2)
    # One commit moved the three figures of ED: one frame, three values, in stream order.
    assert sorted((u["metric"], u["department"]) for u in updates) == sorted(
        (metric, "ED") for metric in PATIENTS
    )
    offsets = [u["position"]["offset"] for u in updates]
    assert offsets == sorted(offsets)
    for update in updates:  # exactly what the other screen gets, one frame each
        key = _keyed(update)
        assert await each.next(UPDATE_EVENT, lambda u, k=key: _keyed(u) == k) == update
    assert batched.received(UPDATE_EVENT) == []
    assert each.received(BATCH_EVENT) == []


async def test_a_batched_screen_gets_only_its_departments(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    ed = await connect(server, token(Role.ADMIN, ("ED",), sub="ed-admin"), handshake=BATCHED)
    card = await connect(server, token(Role.ADMIN, ("CARD",), sub="card-admin"), handshake=BATCHED)
    for screen in (ed, card):
        assert (await screen.call("subscribe_metrics", {"metrics": PATIENTS}))["ok"] is True

    await register_patient(writer, hospital["ED"], "Ada")
    await register_patient(writer, hospital["CARD"], "Ben")

    await _batch_with(ed, "patients_total", "ED", 2)
    await _batch_with(card, "patients_total", "CARD", 2)
    for screen, department in ((ed, "ED"), (card, "CARD")):
        seen = {u["department"] for b in screen.received(BATCH_EVENT) for u in b["updates"]}
        assert seen == {department}


async def test_screens_subscribed_to_the_same_things_share_one_group_until_they_differ(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    screens = [await connect(server, token(sub=f"wall-{n}"), handshake=BATCHED) for n in range(3)]
    selection = {"metrics": PATIENTS, "departments": ["ED"]}
    for screen in screens:
        await screen.call("subscribe_metrics", selection)
    gateway = gateway_of(server)
    groups = gateway.server.manager.groups
    assert len(groups) == 1
    written = gateway.frames.written

    await register_patient(writer, hospital["ED"], "Ada")

    batches = [await _batch_with(screen, "patients_total", "ED", 2) for screen in screens]
    assert batches[0] == batches[1] == batches[2]
    assert gateway.frames.written - written == 3  # one frame per screen for the whole send

    # One screen narrows what it watches: a group of its own, and only that in its frames.
    narrowed = {"metrics": ["patients_waiting", "patients_new_today"], "departments": ["ED"]}
    await screens[0].call("unsubscribe_metrics", narrowed)
    assert len(groups) == 2
    await register_patient(writer, hospital["ED"], "Ben")
    assert [u["metric"] for u in await _batch_with(screens[0], "patients_total", "ED", 3)] == [
        "patients_total"
    ]
    assert len(await _batch_with(screens[1], "patients_total", "ED", 3)) == 3

    # Groups are left as screens go, and forgotten with their last screen.
    async def count() -> int:
        return len(groups)

    await screens[0].client.disconnect()
    await read_until(count, lambda n: n == 1, what="the groups", every=0.01)
    await screens[1].call("unsubscribe_metrics", selection)
    await screens[2].client.disconnect()
    await read_until(count, lambda n: n == 0, what="the groups", every=0.01)


async def test_a_batched_screen_recovers_what_it_missed_in_one_batch(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    selection = {"metrics": ["patients_total"], "departments": ["ED"]}
    watcher = await connect(server, token(sub="watcher"))
    await watcher.call("subscribe_metrics", selection)
    leaving = await connect(server, token(sub="leaving"), handshake=BATCHED)
    await leaving.call("subscribe_metrics", selection)
    await register_patient(writer, hospital["ED"], "seen")
    (seen,) = await _batch_with(leaving, "patients_total", "ED", 2)
    await leaving.client.disconnect()

    for number in range(3):
        await register_patient(writer, hospital["ED"], f"missed {number}")
        await watcher.next(UPDATE_EVENT, lambda u, n=number: u["value"] == 3 + n)
    missed = [
        u
        for u in watcher.received(UPDATE_EVENT)
        if u["position"]["offset"] > seen["position"]["offset"]
    ]

    back = await connect(server, token(sub="leaving"), handshake=BATCHED)
    reply = await back.call("subscribe_metrics", {**selection, "since": seen["position"]})
    assert reply["recovered"] is True
    assert back.received(BATCH_EVENT) == [{"updates": missed}]  # in order, each once
    assert back.received(UPDATE_EVENT) == []


async def test_a_batched_screen_that_stops_reading_gets_the_newest_of_each_value_in_one_batch(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    selection = {"metrics": ["patients_total"], "departments": ["ED", "CARD"]}
    reading = await connect(server, token(sub="reading"), handshake=BATCHED)
    await reading.call("subscribe_metrics", selection)
    gateway = gateway_of(server)
    sio, frames = gateway.server, gateway.frames
    async with StalledSocket.open(server.url, token(sub="stalled"), batched=True) as stalled:
        assert (await stalled.call("subscribe_metrics", selection))["ok"] is True
        skipped = frames.skipped

        version = 0
        while frames.skipped - skipped < 20:
            version += 1
            assert version <= 5000, "the stalled screen was never skipped"
            send = [
                {
                    "metric": "patients_total",
                    "department": department,
                    "value": version,
                    "version": version,
                    "timestamp": "2026-12-06T09:00:00+00:00",
                    "note": PADDING,
                }
                for department in ("ED", "CARD")
            ]
            await sio.emit("updates", send, room=UPDATES_ROOM)
            await reading.next(BATCH_EVENT, lambda b, v=version: b["updates"][0]["version"] == v)
        last = version

        received = await stalled.versions_until(last, ["ED", "CARD"], batched=True)

    for seen in received.values():
        assert seen == sorted(set(seen)), "an older value arrived after a newer one"
        assert seen[-1] == last
    assert sum(len(seen) for seen in received.values()) < 2 * last  # some were skipped
    assert frames.caught_up > 0


async def test_a_handshake_asking_for_updates_in_a_way_we_do_not_send_is_refused(
    server: LiveServer, connect: Connect, token: Any
) -> None:
    refused = await connect(server, token(), wait_auth=False, handshake={"updates": "zipped"})
    error = await refused.next("error")
    assert error["code"] == "invalid_payload"
    assert error["event"] == "connect"
    assert error["details"] == {"valid": ["each", "batched"]}
    assert "auth.updates" in error["message"]
    assert refused.received("authenticated") == []


async def test_from_a_leader_that_sends_no_batches_a_batched_screen_gets_each_value(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    """During a rolling deploy the leader may be an instance from before batched updates: it
    sends each value to its room only, and the batched screens here still get them."""
    screen = await connect(server, token(), handshake=BATCHED)
    selection = {"metrics": ["patients_total"], "departments": ["ED"]}
    assert (await screen.call("subscribe_metrics", selection))["ok"] is True
    sio = gateway_of(server).server
    sio.manager.heard_batches = False  # no batched send heard yet, as from such a leader
    update = {
        "metric": "patients_total",
        "department": "ED",
        "value": 41,
        "version": 10**15,
        "timestamp": "2026-12-06T09:00:00+00:00",
    }

    room = room_name("patients_total", "ED")

    await sio.emit(UPDATE_EVENT, "not an update", room=room)  # passed on to no group
    await sio.emit(UPDATE_EVENT, update, room=room)
    assert await screen.next(BATCH_EVENT) == {"updates": [update]}

    # From the first batched send heard, the rooms' emits no longer reach the groups.
    later = [{**update, "value": value, "version": 10**15 + value} for value in (42, 43, 44)]
    await sio.emit("updates", [later[0]], room=UPDATES_ROOM)
    await sio.emit(UPDATE_EVENT, later[1], room=room)
    await sio.emit("updates", [later[2]], room=UPDATES_ROOM)
    await screen.next(BATCH_EVENT, lambda b: b == {"updates": [later[2]]})
    values = [u["value"] for b in screen.received(BATCH_EVENT) for u in b["updates"]]
    assert values == [41, 42, 44]
