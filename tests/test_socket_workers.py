"""LIVEDASH_SOCKET_WORKERS: `livedash serve` on the embedded default serves new WebSocket
clients from worker processes on its own port, and they see what its own clients see.

Real `livedash serve` processes with two workers each, real socket.io clients: WebSocket
clients are handed to the workers, long-polling ones stay on the main process. Below them,
the hand-off's decision (`opens_websocket_session`) and the workers' copies of the main
process's values and update history, without processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from livedash.cluster.mirror import MirroredState, departments_message, values_message
from livedash.metrics.causes import CAUSES_KEPT, Cause, Reason
from livedash.metrics.engine import MetricValue
from livedash.realtime.handoff import opens_websocket_session
from livedash.realtime.stream import (
    MemoryHistory,
    MirroredHistory,
    Position,
    adopt_message,
    entries_message,
)
from livedash.store.models import Role
from livedash.testing.recorder import Recorder, update_of
from livedash.testing.servers import free_port
from tests.support.alerting import BEDS_BUSY, set_beds
from tests.support.instances import READY_LINE, Instance, ServeProcess
from tests.support.prometheus import scrape, scrape_until
from tests.support.socket_workers import (
    Clients,
    clients,
    running,
    stats_until,
    worker_pids,
    workers,
)
from tests.support.tls import write_self_signed
from tests.support.writers import Users, Write, register_patient

WORKERS = {
    "LIVEDASH_SOCKET_WORKERS": "2",
    # The stats are read every 100 ms while awaited: more than a user's REST budget.
    "LIVEDASH_RATE_LIMIT_REST": "10000/minute",
}
ED_PATIENTS = {"metrics": ["patients_total"], "departments": ["ED"]}
HANDSHAKES = "livedash_websocket_handshakes_total"


@pytest.fixture
async def sockets(users: Users) -> AsyncIterator[Clients]:
    """Clients of the test's instances. Listed before `serve_process`, so that the instances
    stop first: a long-polling client's own disconnect waits ~3 s for its pending poll."""
    async with clients(users) as opened:
        yield opened


async def _subscribed(client: Recorder, selection: dict[str, Any]) -> dict[str, Any]:
    ack = await client.call("subscribe_metrics", selection)
    assert ack["ok"] is True, ack
    return dict(ack)


async def _handed_over(service: Instance, count: int) -> None:
    """Wait until `count` WebSocket handshakes went to workers and none to the main process
    (read from /metrics; the realtime stats' figures have a test of their own)."""
    await scrape_until(
        service.url,
        lambda scrape: (
            scrape.get(HANDSHAKES, served_by="worker") == count
            and scrape.get(HANDSHAKES, served_by="main") == 0
        ),
    )


# -- through real processes ------------------------------------------------------------------


async def test_websocket_clients_are_served_by_workers_and_see_the_main_process_updates(
    sockets: Clients,
    serve_process: ServeProcess,
    hospital: dict[str, int],
    token: Any,
    writer: Write,
) -> None:
    service = await serve_process(env=WORKERS)
    # The first takes its updates batched: a send reaches a worker as one message either way.
    on_workers = [await sockets.open(service, token(), batched=n == 0) for n in range(4)]
    polling = await sockets.open(service, token(), transport="polling")

    await _handed_over(service, 4)  # every WebSocket client, none of the polling one
    metrics = await scrape(service.url)
    assert metrics.value("livedash_socket_workers_ready") == 2
    # The workers' sockets count with the main process's once they report them (each second).
    await stats_until(service, lambda s: s["connections"] == 5 and s["authenticated"] == 5)

    for client in [*on_workers, polling]:
        await _subscribed(client, ED_PATIENTS)
        snapshot = await client.next("metrics_snapshot")
        assert [v["value"] for v in snapshot["values"]] == [1]
    await register_patient(writer, hospital["ED"], "seen by every process")
    batch = await on_workers[0].next(
        "dashboard_updates",
        lambda b: any(update_of("patients_total", "ED", 2)(u) for u in b["updates"]),
    )
    updates = [
        *(u for u in batch["updates"] if update_of("patients_total", "ED", 2)(u)),
        *[
            await client.next("dashboard_update", update_of("patients_total", "ED", 2))
            for client in [*on_workers[1:], polling]
        ],
    ]
    assert on_workers[0].received("dashboard_update") == []
    # The same update, with the same version and stream position, from every process.
    assert all(update == updates[-1] for update in updates), updates
    assert updates[-1]["position"]["offset"] >= 1
    stats = await stats_until(service, lambda s: s["tiers"]["critical"]["subscribers"] == 5)

    figures = workers(stats)  # what an operator reads of the workers themselves
    assert figures["configured"] == 2
    assert figures["ready"] == ["worker-1", "worker-2"]
    assert figures["handed_over"] == 4
    assert figures["served_by_main"] == 0
    assert figures["restarts"] == 0


async def test_a_client_recovers_what_it_missed_whichever_process_it_reaches(
    sockets: Clients,
    serve_process: ServeProcess,
    hospital: dict[str, int],
    token: Any,
    writer: Write,
) -> None:
    service = await serve_process(env=WORKERS)
    watcher = await sockets.open(service, token())  # a worker's: sees everything sent
    await _subscribed(watcher, ED_PATIENTS)
    leaving = await sockets.open(service, token())  # the other worker's
    await _subscribed(leaving, ED_PATIENTS)
    await register_patient(writer, hospital["ED"], "seen")
    seen = await leaving.next("dashboard_update", update_of("patients_total", "ED", 2))
    await leaving.client.disconnect()

    for number in range(3):  # the screen is away; the hospital goes on
        await register_patient(writer, hospital["ED"], f"missed {number}")
        await register_patient(writer, hospital["CARD"], f"not subscribed {number}")
    await watcher.next("dashboard_update", update_of("patients_total", "ED", 5))
    missed = [
        update
        for update in watcher.received("dashboard_update")
        if update["position"]["offset"] > seen["position"]["offset"]
    ]

    back_on_worker = await sockets.open(service, token(), since=seen["position"])
    back_on_main = await sockets.open(service, token(), transport="polling", since=seen["position"])
    await _handed_over(service, 3)  # the polling one stayed on the main process
    for back in (back_on_worker, back_on_main):
        reply = await _subscribed(back, ED_PATIENTS)
        assert reply["recovered"] is True
        assert not back.received("metrics_snapshot")
        assert back.received("dashboard_update") == missed  # in order, each once
        assert reply["position"]["epoch"] == seen["position"]["epoch"]


async def test_a_worker_keeps_a_viewer_to_its_departments(
    sockets: Clients,
    serve_process: ServeProcess,
    hospital: dict[str, int],
    token: Any,
) -> None:
    service = await serve_process(env=WORKERS)
    viewer = token(Role.VIEWER, ("ED",), sub="ed-viewer")
    on_worker = await sockets.open(service, viewer)
    on_main = await sockets.open(service, viewer, transport="polling")
    await _handed_over(service, 1)

    answers = []
    for client in (on_worker, on_main):
        authenticated = client.received("authenticated")[0]
        assert authenticated["departments"] == ["ED"]
        refused = await client.call("subscribe_metrics", {"departments": ["CARD"]})
        assert refused["code"] == "forbidden", refused
        hospital_wide = await client.call("subscribe_metrics", {"departments": [None]})
        assert hospital_wide["code"] == "forbidden", hospital_wide
        unknown = await client.call("subscribe_metrics", {"departments": ["ICU"]})
        await _subscribed(client, {"metrics": ["patients_total"]})
        snapshot = await client.next("metrics_snapshot")
        seen = {(v["metric"], v["department"], v["value"]) for v in snapshot["values"]}
        answers.append((refused, hospital_wide, unknown, seen))
    assert answers[1][3] == {("patients_total", "ED", 1)}
    assert answers[0] == answers[1]  # a worker answers as the main process does


async def test_an_alert_raised_by_the_main_process_reaches_sockets_on_every_worker(
    sockets: Clients,
    serve_process: ServeProcess,
    hospital: dict[str, int],
    token: Any,
    writer: Write,
    tmp_path: Path,
) -> None:
    rules = tmp_path / "beds-busy.yaml"
    rules.write_text(BEDS_BUSY)
    service = await serve_process(env={**WORKERS, "LIVEDASH_ALERT_RULES_FILE": str(rules)})
    viewer = token(Role.VIEWER, ("ED",), sub="ed-viewer")
    screens = [await sockets.open(service, viewer) for _ in range(2)]  # one on each worker
    screens.append(await sockets.open(service, viewer, transport="polling"))
    outsider = await sockets.open(service, token(Role.VIEWER, ("CARD",), sub="card-viewer"))
    await _handed_over(service, 3)

    await set_beds(writer, hospital, ("ED-1A", "ED-1B"), "occupied")
    raised = [
        await screen.next("alert", lambda a: a["state"] == "firing", within=20)
        for screen in screens
    ]
    assert all(alert == raised[0] for alert in raised), raised
    assert raised[0]["department"] == "ED"
    # The CARD viewer's worker holds the ED room too, but not this socket in it.
    await set_beds(writer, hospital, ("CARD-1A", "CARD-1B"), "occupied")
    theirs = await outsider.next("alert", lambda a: a["state"] == "firing", within=20)
    assert theirs["department"] == "CARD"
    assert {alert["department"] for alert in outsider.received("alert")} == {"CARD"}


async def test_a_killed_worker_is_restarted_its_clients_come_back_and_stop_leaves_none(
    sockets: Clients,
    serve_process: ServeProcess,
    hospital: dict[str, int],
    token: Any,
    writer: Write,
) -> None:
    service = await serve_process(env=WORKERS)
    started = worker_pids(service)
    assert sorted(started) == ["worker-1", "worker-2"]
    pair = [await sockets.open(service, token(), reconnect=True) for _ in range(2)]
    for client in pair:
        await _subscribed(client, ED_PATIENTS)
    await _handed_over(service, 2)

    os.kill(started["worker-1"], signal.SIGKILL)
    gone = [asyncio.create_task(client.disconnected.wait()) for client in pair]
    done, waiting = await asyncio.wait(gone, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1, "no client of the killed worker was disconnected"
    victim = pair[gone.index(done.pop())]
    survivor = next(client for client in pair if client is not victim)
    await victim.next("authenticated")  # reconnected on its own, and signed in again
    await _subscribed(victim, ED_PATIENTS)

    await register_patient(writer, hospital["ED"], "after the crash")
    for client in pair:
        await client.next("dashboard_update", update_of("patients_total", "ED", 2))
    assert not survivor.disconnected.is_set()
    for task in waiting:
        task.cancel()

    await scrape_until(
        service.url,
        lambda scrape: (
            scrape.get("livedash_socket_worker_restarts_total") == 1
            and scrape.get("livedash_socket_workers_ready") == 2
        ),
    )
    stats = await stats_until(service, lambda s: s["connections"] == 2)
    now = worker_pids(service)
    assert sorted(now) == ["worker-1", "worker-2"]
    assert now["worker-1"] != started["worker-1"]
    assert now["worker-2"] == started["worker-2"]

    await service.stop()  # SIGTERM
    assert service.process is not None
    assert service.process.returncode == 0
    left = [pid for pid in {*started.values(), *now.values()} if running(pid)]
    assert left == [], f"socket workers outlived the main process: {left}"
    # What the operator read of the restart, checked last: the stop does not depend on it.
    assert workers(stats)["restarts"] == 1
    assert workers(stats)["ready"] == ["worker-1", "worker-2"]


async def test_connection_attempts_from_one_address_add_up_over_the_processes(
    sockets: Clients,
    serve_process: ServeProcess,
    hospital: dict[str, int],
    token: Any,
) -> None:
    service = await serve_process(
        env={**WORKERS, "LIVEDASH_RATE_LIMIT_CONNECTIONS_PER_IP": "3/minute"}
    )
    accepted = [
        await sockets.open(service, token(), transport="polling"),  # the main process
        await sockets.open(service, token()),  # worker-1
        await sockets.open(service, token()),  # worker-2
    ]
    # Each process has seen at most two attempts: only their sum is past the limit.
    refused = await sockets.open(service, token(), wait_auth=False)
    error = await refused.next("error")
    assert (error["code"], error["event"], error["details"]["per"]) == (
        "rate_limited",
        "connect",
        "address",
    )
    async with asyncio.timeout(5):
        await refused.disconnected.wait()
    assert [event for event, _ in refused.events] == ["error"]
    await _handed_over(service, 3)
    for client in accepted:
        assert (await client.call("request_snapshot", ["beds_free"]))["values"]


@pytest.mark.parametrize("conflict", ["postgresql", "tls"])
async def test_socket_workers_refuse_what_they_cannot_serve(
    conflict: str, database_url: str, tmp_path: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIVEDASH_")}
    env |= {
        "LIVEDASH_SOCKET_WORKERS": "2",
        "LIVEDASH_DATABASE_URL": database_url,
        "LIVEDASH_JWT_SECRET_FILE": str(tmp_path / "secret"),
    }
    if conflict == "postgresql":
        # Refused before anything connects: nothing listens there.
        env["LIVEDASH_DATABASE_URL"] = "postgresql+asyncpg://livedash@127.0.0.1:9/hospital"
    else:
        certfile, keyfile = write_self_signed(tmp_path)
        env |= {"LIVEDASH_TLS_CERTFILE": str(certfile), "LIVEDASH_TLS_KEYFILE": str(keyfile)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livedash", "serve", "--port", str(free_port()),
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("livedash serve kept running with socket workers it cannot serve")
    text = " ".join(output.decode(errors="replace").split())
    assert process.returncode != 0, text
    assert READY_LINE not in text
    assert "LIVEDASH_SOCKET_WORKERS" in text, text
    assert ("SQLite" if conflict == "postgresql" else "TLS") in text, text
    assert "Traceback" not in text


# -- the hand-off's decision -----------------------------------------------------------------

HANDSHAKE = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8000\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


@pytest.mark.parametrize(
    ("head", "handed"),
    [
        pytest.param(HANDSHAKE, True, id="new-websocket-session"),
        pytest.param(
            HANDSHAKE.replace(b"Upgrade: websocket", b"upgrade:  WebSocket "),
            True,
            id="header-case",
        ),
        pytest.param(
            HANDSHAKE.replace(b"transport=websocket", b"transport=websocket&sid=abc123"),
            False,
            id="upgrade-of-a-session",
        ),
        pytest.param(HANDSHAKE.replace(b"EIO=4&", b"sid=abc123&EIO=4&"), False, id="sid-first"),
        pytest.param(
            HANDSHAKE.replace(b"transport=websocket", b"transport=polling"), False, id="polling"
        ),
        pytest.param(
            HANDSHAKE.replace(b"transport=websocket", b"transport=websocketx"),
            False,
            id="another-transport",
        ),
        pytest.param(HANDSHAKE[:-2], False, id="incomplete-head"),
        pytest.param(HANDSHAKE[:40], False, id="first-bytes-only"),
        pytest.param(
            HANDSHAKE + b"GET /api/metrics HTTP/1.1\r\nHost: x\r\n\r\n", False, id="pipelined"
        ),
        pytest.param(HANDSHAKE + b"\x81\x05hello", False, id="bytes-after-the-head"),
        pytest.param(
            HANDSHAKE.replace(b"Upgrade: websocket\r\n", b""), False, id="no-upgrade-header"
        ),
        pytest.param(
            HANDSHAKE.replace(b"Upgrade: websocket", b"Upgrade: h2c"), False, id="other-upgrade"
        ),
        pytest.param(
            HANDSHAKE.replace(b"GET /socket.io/", b"GET /api/socket.io/"), False, id="other-path"
        ),
        pytest.param(HANDSHAKE.replace(b"GET ", b"POST "), False, id="post"),
        pytest.param(b"", False, id="nothing"),
    ],
)
def test_only_a_whole_handshake_of_a_new_websocket_session_is_handed_over(
    head: bytes, handed: bool
) -> None:
    assert opens_websocket_session(head) is handed


def test_a_head_past_the_size_limit_is_kept() -> None:
    padding = b"X-Padding: " + b"a" * (16 * 1024) + b"\r\n"
    head = HANDSHAKE.replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\r\n" + padding)
    assert opens_websocket_session(head) is False


# -- a worker's copies of the main process's state ------------------------------------------

_AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _value(department: str | None, value: int, version: int) -> MetricValue:
    return MetricValue("patients_total", department, value, version, _AT, None)


def _cause(version: int, before: int, after: int) -> Cause:
    return Cause("patients_total", "ED", version, _AT, before, after, Reason.ROWS)


def _bus(message: dict[str, Any]) -> dict[str, Any]:
    """`message` as the other end of a link reads it."""
    loaded: dict[str, Any] = json.loads(json.dumps(message, separators=(",", ":")))
    return loaded


async def test_the_mirrored_state_keeps_the_newest_value_and_each_cause_once() -> None:
    mirror = MirroredState()
    assert mirror.apply(_bus(values_message([_value("ED", 3, 7), _value(None, 3, 7)])))
    assert mirror.apply(_bus(values_message([_value("ED", 2, 5)])))  # late: older
    assert mirror.apply(_bus(values_message([_value(None, 4, 9)])))
    read = await mirror.read([("patients_total", "ED"), ("patients_total", None)])
    assert {key: (v.value, v.version) for key, v in read.items()} == {
        ("patients_total", "ED"): (3, 7),
        ("patients_total", None): (4, 9),
    }
    assert await mirror.read([("patients_total", "CARD")]) == {}

    first, second = _cause(5, 1, 2), _cause(7, 2, 3)
    # The sync a worker starts from and the broadcast after it may carry the same cause.
    mirror.apply(_bus(values_message([], [first, second])))
    mirror.apply(_bus(values_message([_value("ED", 3, 7)], [second])))
    causes = await mirror.causes("patients_total", "ED")
    assert [(c.version, c.before, c.after, c.reason) for c in causes] == [
        (7, 2, 3, Reason.ROWS),
        (5, 1, 2, Reason.ROWS),
    ]
    assert await mirror.causes("patients_total", "CARD") == []
    many = [_cause(version, version - 1, version) for version in range(8, 8 + CAUSES_KEPT)]
    mirror.apply(_bus(values_message([], many)))
    kept = [c.version for c in await mirror.causes("patients_total", "ED")]
    assert kept == list(range(7 + CAUSES_KEPT, 7, -1))  # the newest kept, newest first

    assert await mirror.departments() is None
    assert mirror.apply(_bus(departments_message({1: "ED", 2: "CARD"})))
    assert await mirror.departments() == {"ED": 1, "CARD": 2}
    assert mirror.apply({"t": "sio", "m": {}}) is False


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_the_mirrored_history_answers_as_the_main_process_history() -> None:
    clock = _Clock()
    primary = MemoryHistory(5, 60.0, clock=clock)
    mirror = MirroredHistory(5, 60.0, clock=clock)
    # Before anything was sent, a worker already holds the primary's (empty) history.
    adopt_message(mirror, _bus(entries_message(primary.epoch, primary.kept())))
    primary.on_append = lambda epoch, entries: adopt_message(
        mirror, _bus(entries_message(epoch, entries))
    )

    async def agree(*offsets: int, epoch: str | None = None) -> None:
        assert await mirror.top() == await primary.top()
        for offset in offsets:
            position = Position(epoch or primary.epoch, offset)
            assert await mirror.since(position) == await primary.since(position), position

    first = await primary.append([{"n": 1}, {"n": 2}, {"n": 3}])
    assert [p.offset for p in first] == [1, 2, 3]
    await agree(0, 1, 2, 3, 4, -1)
    assert [e.payload for e in await mirror.since(first[0]) or []] == [{"n": 2}, {"n": 3}]
    # A broadcast that overlaps the sync it followed adds nothing twice.
    adopt_message(mirror, _bus(entries_message(primary.epoch, primary.kept())))
    await agree(0, 1, 2, 3)

    clock.now += 30
    await primary.append([{"n": n} for n in range(4, 8)])  # past the size: 1 and 2 dropped
    await agree(0, 1, 2, 3, 5, 7, 8)
    assert await mirror.since(Position(primary.epoch, 1)) is None
    assert mirror.kept() == primary.kept()
    await agree(3, epoch="another-epoch")

    clock.now += 45  # offset 3, kept from the first batch, is older than the history keeps
    await agree(2, 3, 4, 6, 7)
    assert await mirror.since(Position(primary.epoch, 2)) is None
    assert [e.offset for e in await mirror.since(Position(primary.epoch, 3)) or []] == [4, 5, 6, 7]

    old = primary.epoch
    primary.rotate()  # the main process may have lost entries: a new epoch
    await primary.append([{"n": "fresh"}])
    assert mirror.epoch == primary.epoch != old
    assert [e.payload for e in mirror.kept()] == [{"n": "fresh"}]
    assert await mirror.since(Position(old, 7)) is None
    await agree(0, 1)
    with pytest.raises(RuntimeError):
        await mirror.append([{"n": "never"}])
