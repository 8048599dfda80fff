"""'Why did this change?': each value's last updates and the rows behind them, in scope.

Rows are written as the hospital's own programs write them (the `writer` fixture); a screen's
`explain_metric` and `GET /api/metrics/{metric}/changes` then name each row by table,
operation, id, commit time and department, never by its content; a department admin or viewer
sees only its own departments; a batch lists its last five rows and says there were more; each
key keeps its last ten updates; a new day and the roll-ups are causes without rows (on a
`ManualClock`); and with PostgreSQL and Redis a follower answers with what the leader
recorded, and a new leader with what its predecessor recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import httpx
import pytest
from redis.asyncio import Redis

from livedash.changefeed import Change, Op
from livedash.metrics.causes import CAUSES_KEPT, CHANGES_PER_CAUSE, CauseLog, Reason, newest
from livedash.metrics.clock import ManualClock
from livedash.metrics.engine import MetricEngine
from livedash.realtime.schemas import MAX_NAME_LENGTH, MetricChanges
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.hospital import sql_now
from livedash.testing.recorder import Recorder, update_of
from livedash.testing.servers import RedisServer
from tests.support.alerting import bearer
from tests.support.instances import Instance
from tests.support.live import Connect, LiveServer, Serve
from tests.support.operations import NOW, ZONE
from tests.support.rest import problem_of
from tests.support.writers import Write, register_patient

NAME = "Zebedee Quillfeather-Marchbanks"
"""A patient's name no answer may hold."""


async def explain(screen: Recorder, metric: str, department: str | None) -> dict[str, Any]:
    """`explain_metric`'s answer, checked against its model."""
    answer = await screen.call("explain_metric", {"metric": metric, "department": department})
    assert isinstance(answer, dict), answer
    if answer.get("ok") is False:
        return answer
    MetricChanges.model_validate(answer)
    return answer


def summary(changes: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Each update as (before, after, delta, reason, [(table, op, id, department)])."""
    return [
        (
            change["before"],
            change["after"],
            change["delta"],
            change["reason"],
            [(row["table"], row["op"], row["id"], row["department"]) for row in change["rows"]],
        )
        for change in changes["changes"]
    ]


def assert_recent(changes: dict[str, Any]) -> None:
    """Every row was committed within the last minute, in UTC, and each update was sent after
    it."""
    now = datetime.now(UTC)
    for change in changes["changes"]:
        sent = datetime.fromisoformat(change["timestamp"])
        for row in change["rows"]:
            committed = datetime.fromisoformat(row["committed_at"])
            assert committed.utcoffset() == timedelta(0), row  # a browser reads it as it says
            assert now - timedelta(minutes=1) < committed <= sent + timedelta(seconds=1), row


@pytest.mark.both_backends
async def test_a_value_says_which_rows_moved_it_when_and_by_how_much(
    hospital: dict[str, int],
    backend: str,
    settings: Settings,
    server: LiveServer,
    connect: Connect,
    token: Callable[..., str],
    writer: Write,
    request: pytest.FixtureRequest,
) -> None:
    chief = await connect(server, token())
    await chief.call("subscribe_metrics", {"metrics": ["patients_total"]})

    # Registered in ED, moved to CARD, then deleted: each a commit of the hospital's own.
    patient = await register_patient(writer, hospital["ED"], NAME)
    inserted = await chief.next("dashboard_update", update_of("patients_total", "ED", 2))
    await writer("UPDATE patients SET department_id = ? WHERE id = ?", (hospital["CARD"], patient))
    moved_out = await chief.next("dashboard_update", update_of("patients_total", "ED", 1))
    moved_in = await chief.next("dashboard_update", update_of("patients_total", "CARD", 2))
    await writer("DELETE FROM patients WHERE id = ?", (patient,))
    deleted = await chief.next("dashboard_update", update_of("patients_total", "CARD", 1))
    await chief.next("dashboard_update", update_of("patients_total", None, 2))

    ed_token = token(Role.ADMIN, ("ED",), sub="ed-admin")
    ed_admin = await connect(server, ed_token)
    in_ed = await explain(ed_admin, "patients_total", "ED")
    assert summary(in_ed) == [
        (2, 1, -1, "rows", [("patients", "update", patient, "ED")]),
        (1, 2, 1, "rows", [("patients", "insert", patient, "ED")]),
    ]
    assert [c["version"] for c in in_ed["changes"]] == [moved_out["version"], inserted["version"]]
    assert_recent(in_ed)

    in_card = await explain(chief, "patients_total", "CARD")
    assert summary(in_card) == [
        (2, 1, -1, "rows", [("patients", "delete", patient, "CARD")]),
        (1, 2, 1, "rows", [("patients", "update", patient, "CARD")]),
    ]
    assert [c["version"] for c in in_card["changes"]] == [deleted["version"], moved_in["version"]]
    # Hospital-wide, a row is named with its own department; the move changed no total.
    assert summary(await explain(chief, "patients_total", None)) == [
        (3, 2, -1, "rows", [("patients", "delete", patient, "CARD")]),
        (2, 3, 1, "rows", [("patients", "insert", patient, "ED")]),
    ]

    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get(
            "/api/metrics/patients_total/changes",
            headers=bearer(ed_token),
            params={"department": "ED"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == in_ed
        hospital_wide = await http.get(
            "/api/metrics/patients_total/changes", headers=bearer(token())
        )
        assert hospital_wide.json() == await explain(chief, "patients_total", None)

    # No answer, no event and nothing kept in Redis holds the patient's name.
    for screen in (chief, ed_admin):
        assert NAME not in json.dumps(screen.events)
    assert NAME not in answer.text + hospital_wide.text
    if backend == "postgres":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        client = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            kept = [
                await client.lrange(key, 0, -1) async for key in client.scan_iter("livedash:c:*")
            ]
        finally:
            await client.aclose()
        assert kept
        assert NAME not in json.dumps(kept)


async def test_an_admin_sees_only_its_own_departments_changes(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Callable[..., str],
    writer: Write,
) -> None:
    chief = await connect(server, token())
    await chief.call("subscribe_metrics", {"metrics": ["patients_total"]})
    await register_patient(writer, hospital["CARD"], NAME)
    await register_patient(writer, hospital["ED"], "someone in ED")
    await chief.next("dashboard_update", update_of("patients_total", "CARD", 2))
    await chief.next("dashboard_update", update_of("patients_total", "ED", 2))

    ed_token = token(Role.ADMIN, ("ED",), sub="ed-admin")
    ed_admin = await connect(server, ed_token)
    for department in ("CARD", None, "NOPE"):
        refused = await explain(ed_admin, "patients_total", department)
        assert refused["code"] == "forbidden", refused
        assert refused["event"] == "explain_metric"
    # An unknown department is refused like another's: its existence is not told.
    assert (await explain(ed_admin, "patients_total", "NOPE"))["message"].startswith(
        "not allowed for this token"
    )
    assert (await explain(ed_admin, "bed_count", "ED"))["code"] == "unknown_metric"
    own = await explain(ed_admin, "patients_total", "ED")
    assert summary(own)[0][4][0][3] == "ED"

    async with httpx.AsyncClient(base_url=server.url) as http:
        path = "/api/metrics/patients_total/changes"
        for department in ("CARD", "hospital", "NOPE"):
            asked = {"department": department}
            problem_of(
                await http.get(path, headers=bearer(ed_token), params=asked), 403, "forbidden"
            )
        unknown = await http.get(path, headers=bearer(token()), params={"department": "NOPE"})
        problem_of(unknown, 404, "unknown_department")
        problem_of(
            await http.get("/api/metrics/bed_count/changes", headers=bearer(token())),
            404,
            "unknown_metric",
        )
        problem_of(await http.get(path), 401, "not_authenticated")
        cardiology = await http.get(path, headers=bearer(token()), params={"department": "CARD"})
        assert summary(cardiology.json())[0][4][0][3] == "CARD"

    # Nothing of the other department reached the admin, in any answer or event (but the
    # refusals that repeat what it asked for).
    seen = json.dumps([own, *(event for event in ed_admin.events if event[0] != "error")])
    assert "CARD" not in seen
    assert NAME not in json.dumps(ed_admin.events)


async def test_each_value_keeps_its_last_ten_updates(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Callable[..., str],
    writer: Write,
) -> None:
    chief = await connect(server, token())
    await chief.call("subscribe_metrics", {"metrics": ["patients_total"], "departments": ["ED"]})
    written, sent = [], []
    for number in range(CAUSES_KEPT + 2):
        written.append(await register_patient(writer, hospital["ED"], f"{NAME} {number}"))
        update = await chief.next("dashboard_update", update_of("patients_total", "ED", number + 2))
        sent.append(update["version"])
    kept = await explain(chief, "patients_total", "ED")
    assert len(kept["changes"]) == CAUSES_KEPT
    # Newest first: the last ten patients, each its own commit and update.
    assert [c["after"] for c in kept["changes"]] == list(range(CAUSES_KEPT + 3, 3, -1))
    assert [c["rows"][0]["id"] for c in kept["changes"]] == written[::-1][:CAUSES_KEPT]
    # Exactly the last ten updates the screen was sent: none missing, none twice.
    assert [c["version"] for c in kept["changes"]] == sent[::-1][:CAUSES_KEPT]
    assert NAME not in json.dumps(kept)


async def test_over_rest_a_viewer_reads_a_batchs_last_rows_and_bad_questions_are_refused(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Callable[..., str],
    writer: Write,
) -> None:
    chief = await connect(server, token())
    await chief.call("subscribe_metrics", {"metrics": ["patients_total"], "departments": ["ED"]})
    # Seven patients in one commit (ids given: the listed ones are known): one update.
    batch = range(901, 908)
    values = ", ".join(["(?, ?, ?, 'registered', 0, ?)"] * len(batch))
    parameters = [(n, hospital["ED"], f"{NAME} {n}", sql_now()) for n in batch]
    await writer(
        "INSERT INTO patients (id, department_id, name, status, emergency, registered_at) "
        f"VALUES {values}",
        tuple(part for row in parameters for part in row),
    )
    update = await chief.next("dashboard_update", update_of("patients_total", "ED", 8))

    viewer = token(Role.VIEWER, ("ED",), sub="ed-viewer")
    path = "/api/metrics/patients_total/changes"
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(viewer)) as http:
        answer = await http.get(path, params={"department": "ED"})
        assert answer.status_code == 200, answer.text
        [newest, *_] = MetricChanges.model_validate_json(answer.content).changes
        assert (newest.version, newest.before, newest.after, newest.delta) == (
            update["version"], 1, 8, 7,
        )  # fmt: skip
        # The last five of the batch, in commit order, and word that there were more.
        assert [(r.table, r.op, r.id, r.department) for r in newest.rows] == [
            ("patients", "insert", n, "ED") for n in batch[-CHANGES_PER_CAUSE:]
        ]
        assert newest.more_rows is True
        assert answer.json() == await explain(chief, "patients_total", "ED")
        assert NAME not in answer.text
        assert_recent(answer.json())

        # A viewer is held to its departments as an admin is.
        for department in ("CARD", "hospital"):
            refused = await http.get(path, params={"department": department})
            problem_of(refused, 403, "forbidden")
            assert "changes" not in refused.json()
        # Names too long to be a metric or a department: refused before anything is read.
        too_long = "x" * (MAX_NAME_LENGTH + 1)
        problem_of(await http.get(f"/api/metrics/{too_long}/changes"), 422, "invalid_payload")
        refused = await http.get(path, params={"department": too_long})
        problem_of(refused, 422, "invalid_payload")
        unknown = await http.get("/api/metrics/bed_count/changes", params={"department": "ED"})
        problem_of(unknown, 404, "unknown_metric")


MIDNIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
"""Midnight in Berlin (the test hospital's zone), from Monday 23 to Tuesday 24 November."""


async def admit(writer: Write, patient: int, department: int, at: datetime) -> int:
    """An admission that began `at`, written as the hospital's application would."""
    return await writer(
        "INSERT INTO admissions (patient_id, department_id, admitted_at, discharged_at) "
        "VALUES (?, ?, ?, NULL)",
        (patient, department, at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")),
    )


async def test_a_new_day_and_the_roll_ups_are_causes_without_rows(
    hospital: dict[str, int],
    settings: Settings,
    serve: Serve,
    connect: Connect,
    token: Callable[..., str],
    writer: Write,
) -> None:
    clock = ManualClock(MIDNIGHT - timedelta(minutes=2))
    quick = {"time_refresh_seconds": 0.05, "history_refresh_seconds": 0.2}
    server = await serve(settings.model_copy(update=quick), clock)
    chief = await connect(server, token())
    watched = ["admissions_today", "admissions_growth_day", "admissions_trend"]
    await chief.call("subscribe_metrics", {"metrics": watched})
    patient = await register_patient(writer, hospital["ED"], NAME)

    # Yesterday's admission at this hour, then today's: the roll-ups' "vs yesterday" goes
    # from -100 % to level, with no row behind either figure.
    await admit(writer, patient, hospital["ED"], clock.now() - timedelta(days=1, seconds=30))
    fell = await chief.next("dashboard_update", update_of("admissions_growth_day", None, -1.0))
    admission = await admit(writer, patient, hospital["ED"], clock.now() - timedelta(seconds=30))
    counted = await chief.next("dashboard_update", update_of("admissions_today", "ED", 1))
    level = await chief.next("dashboard_update", update_of("admissions_growth_day", None, 0.0))

    growth = await explain(chief, "admissions_growth_day", None)
    assert summary(growth)[:2] == [
        (-1.0, 0.0, 1.0, "roll_ups", []),
        (None, -1.0, None, "roll_ups", []),
    ]
    assert [c["version"] for c in growth["changes"][:2]] == [level["version"], fell["version"]]
    assert all(change["more_rows"] is False for change in growth["changes"])

    # Midnight in Berlin: the day's admissions start over; the hour of today's admission is
    # over, so the six-hour trend now counts it.
    clock.advance(timedelta(minutes=3))
    reset = await chief.next("dashboard_update", update_of("admissions_today", "ED", 0))
    rising = await chief.next("dashboard_update", update_of("admissions_trend", None, "increasing"))
    today = await explain(chief, "admissions_today", "ED")
    assert summary(today)[:2] == [
        (1, 0, -1, "new_day", []),
        (0, 1, 1, "rows", [("admissions", "insert", admission, "ED")]),
    ]
    assert [c["version"] for c in today["changes"][:2]] == [reset["version"], counted["version"]]
    # The new day is stamped with the service's clock, past midnight.
    assert datetime.fromisoformat(today["changes"][0]["timestamp"]) >= MIDNIGHT

    trend = await explain(chief, "admissions_trend", None)
    [moved] = [c for c in trend["changes"] if c["version"] == rising["version"]]
    assert (moved["before"], moved["after"], moved["delta"], moved["reason"], moved["rows"]) == (
        "stable", "increasing", None, "roll_ups", [],
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(token())) as http:
        over_rest = await http.get(
            "/api/metrics/admissions_today/changes", params={"department": "ED"}
        )
    assert over_rest.json()["changes"][0] == today["changes"][0]


# -- the engine's record ------------------------------------------------------------------------


def _change(
    position: int,
    table: str,
    new: dict[str, Any] | None,
    old: dict[str, Any] | None = None,
) -> Change:
    op = Op.DELETE if new is None else Op.INSERT if old is None else Op.UPDATE
    return Change(position, table, op, old, new, NOW.replace(tzinfo=None))


def _patient(identifier: int, department: int) -> dict[str, Any]:
    registered = NOW.replace(tzinfo=None)
    return {
        "id": identifier,
        "department_id": department,
        "name": f"{NAME} {identifier}",
        "status": "registered",
        "registered_at": registered,
    }


def test_a_batch_lists_its_last_rows_and_a_new_day_is_a_cause_of_its_own() -> None:
    clock = ManualClock(NOW)
    engine = MetricEngine(ZONE, clock)
    engine.finish_loading(0)
    engine.apply(
        [
            _change(1, "departments", {"id": 1, "code": "ED", "name": "Emergency"}),
            _change(2, "rooms", {"id": 1, "department_id": 1, "number": "1"}),
            _change(3, "beds", {"id": 7, "room_id": 1, "status": "free"}),
        ]
    )
    # Seven patients in one batch: the cause lists the last five and says there were more.
    engine.apply([_change(10 + n, "patients", _patient(n, 1)) for n in range(7)])
    [cause] = engine.causes.recent("patients_total", "ED")[:1]
    assert (cause.before, cause.after, cause.reason) == (0, 7, Reason.ROWS)
    assert [row.row_id for row in cause.changes] == [2, 3, 4, 5, 6]
    assert len(cause.changes) == CHANGES_PER_CAUSE
    assert cause.more_changes is True
    assert NAME not in repr(engine.causes.recent("patients_total", None))

    # A bed reaches its department through its room; hospital-wide it is named by it too.
    bed = {"id": 7, "room_id": 1, "status": "free"}
    engine.apply([_change(20, "beds", {**bed, "status": "occupied"}, old=bed)])
    for department in ("ED", None):
        [latest, *_] = engine.causes.recent("beds_occupied", department)
        assert (latest.before, latest.after) == (0, 1)
        assert [(r.table, r.op, r.row_id, r.department) for r in latest.changes] == [
            ("beds", "update", 7, "ED")
        ]
        assert latest.more_changes is False

    # Midnight in Berlin: the day's figures start over, with no row behind them.
    clock.advance(timedelta(hours=9))
    engine.refresh_time()
    [new_day, *_] = engine.causes.recent("patients_new_today", "ED")
    assert (new_day.before, new_day.after, new_day.reason) == (7, 0, Reason.NEW_DAY)
    assert new_day.changes == ()

    # Only the newest are kept.
    for n in range(CAUSES_KEPT + 5):
        engine.apply([_change(100 + n, "patients", _patient(100 + n, 1))])
    assert len(engine.causes.recent("patients_total", "ED")) == CAUSES_KEPT


def test_the_log_finds_each_published_versions_cause_and_merges_two_leaders_logs() -> None:
    log = CauseLog(kept=3)
    at = NOW.replace(tzinfo=None)
    for version in range(1, 6):  # the oldest two are dropped
        log.record(
            ("patients_total", "ED"), (version, at, version - 1, version, Reason.ROWS, (), False)
        )

    class Value(NamedTuple):
        metric: str
        department: str | None
        version: int

    asked = [Value("patients_total", "ED", v) for v in (5, 3, 1)]
    asked.append(Value("patients_total", "CARD", 5))  # nothing recorded there
    assert [cause.version for cause in log.of(asked)] == [5, 3]
    assert [cause.version for cause in log.recent("patients_total", "ED")] == [5, 4, 3]

    # A new leader's own causes and its predecessors' (in Redis), which may hold its newest
    # too: each once, newest first, the newest kept.
    own = log.recent("patients_total", "ED")
    shared = [own[0], *(own[-1]._replace(version=v) for v in (2, 1))]
    assert [cause.version for cause in newest(shared, own)] == [5, 4, 3, 2, 1]
    assert [cause.version for cause in newest(shared, own, kept=2)] == [5, 4]
    assert newest([], []) == []


# -- a follower answers with the leader's record ------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_follower_answers_with_the_leaders_record(
    two_instances: list[Instance],
    hospital: dict[str, int],
    connect: Connect,
    token: Callable[..., str],
    writer: Write,
) -> None:
    roles = {(await i.health())["role"]: i for i in two_instances}
    leader, follower = roles["leader"], roles["follower"]
    ed_token = token(Role.ADMIN, ("ED",), sub="ed-admin")
    on_follower = await connect(follower, ed_token)
    await on_follower.call("subscribe_metrics", {"metrics": ["patients_total"]})
    batched = await connect(follower, ed_token, handshake={"updates": "batched"})
    await batched.call("subscribe_metrics", {"metrics": ["patients_total"]})
    patient = await register_patient(writer, hospital["ED"], NAME)
    update = await on_follower.next("dashboard_update", update_of("patients_total", "ED", 2))
    # Through Redis, the leader's send reaches the follower's batched screen as one batch.
    assert (await batched.next("dashboard_updates")) == {"updates": [update]}

    # The leader wrote the update's cause to Redis before it sent the update.
    there = await explain(on_follower, "patients_total", "ED")
    assert summary(there) == [(1, 2, 1, "rows", [("patients", "insert", patient, "ED")])]
    assert there["changes"][0]["version"] == update["version"]
    on_leader = await connect(leader, ed_token)
    assert await explain(on_leader, "patients_total", "ED") == there
    async with httpx.AsyncClient() as http:
        answers = [
            await http.get(
                f"{instance.url}/api/metrics/patients_total/changes",
                headers=bearer(ed_token),
                params={"department": "ED"},
            )
            for instance in (follower, leader)
        ]
    assert [answer.json() for answer in answers] == [there, there]
    assert all(NAME not in answer.text for answer in answers)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_new_leader_answers_with_its_predecessors_record(
    two_instances: list[Instance],
    hospital: dict[str, int],
    connect: Connect,
    token: Callable[..., str],
    writer: Write,
) -> None:
    roles = {(await i.health())["role"]: i for i in two_instances}
    leader, follower = roles["leader"], roles["follower"]
    ed_token = token(Role.ADMIN, ("ED",), sub="ed-admin")
    screen = await connect(follower, ed_token)
    await screen.call("subscribe_metrics", {"metrics": ["patients_total"]})
    first = await register_patient(writer, hospital["ED"], NAME)
    await screen.next("dashboard_update", update_of("patients_total", "ED", 2))
    before = await explain(screen, "patients_total", "ED")
    assert summary(before) == [(1, 2, 1, "rows", [("patients", "insert", first, "ED")])]

    await leader.kill()
    # The follower takes over; its /health says so once it reads the feed itself (its
    # first updates may reach the screen a moment before: they are no sign to await).
    async with asyncio.timeout(30):
        while "feed_position" not in await follower.health():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    # Before any new change, the new leader explains the value with what its predecessor
    # recorded (kept in Redis), as the follower it was did.
    assert await explain(screen, "patients_total", "ED") == before
    second = await register_patient(writer, hospital["ED"], f"{NAME} again")
    update = await screen.next("dashboard_update", update_of("patients_total", "ED", 3))
    after = await explain(screen, "patients_total", "ED")
    assert summary(after) == [
        (2, 3, 1, "rows", [("patients", "insert", second, "ED")]),
        *summary(before),
    ]
    assert after["changes"][0]["version"] == update["version"] > before["changes"][0]["version"]
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            f"{follower.url}/api/metrics/patients_total/changes",
            headers=bearer(ed_token),
            params={"department": "ED"},
        )
    assert answer.json() == after
    assert NAME not in answer.text
