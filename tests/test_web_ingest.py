"""`POST /api/ingest` against a real server: keys, scopes, limits, one transaction per batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from livedash.auth.api_keys import create_api_key, revoke_api_key
from livedash.ingest import MAX_OPERATIONS, IngestResult, IngestTable
from livedash.settings import Settings
from livedash.store.engine import write_locking
from livedash.store.models import WATCHED_TABLES, Role
from livedash.testing.oracle import snapshot_values
from livedash.testing.recorder import update_of
from livedash.web.problems import Problem
from tests.support.live import Connect, LiveServer, Serve
from tests.support.rest import problem_of
from tests.support.writers import Write


@pytest.fixture
def database(database: AsyncEngine) -> AsyncEngine:
    """The test's engine, its transactions taking SQLite's write lock as the CLI's do."""
    return write_locking(database)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def patient(department: int, name: str, registered_at: str) -> dict[str, Any]:
    return {
        "table": "patients",
        "op": "insert",
        "row": {
            "department_id": department,
            "name": name,
            "status": "registered",
            "emergency": False,
            "registered_at": registered_at,
        },
    }


def bed_status(bed: int, status: Any) -> dict[str, Any]:
    return {"table": "beds", "op": "update", "row": {"id": bed, "status": status}}


async def ingest(
    client: httpx.AsyncClient, key: str | None, *operations: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        "/api/ingest",
        json={"operations": list(operations)},
        headers=bearer(key) if key is not None else {},
    )


def count(database_path: Path, sql: str) -> int:
    with sqlite3.connect(database_path) as connection:
        return int(connection.execute(sql).fetchone()[0])


def error_of(response: httpx.Response) -> Problem:
    return problem_of(response, response.status_code)


async def test_an_ingested_patient_reaches_the_dashboard(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Callable[..., str],
    database: AsyncEngine,
    database_path: Path,
) -> None:
    key = await create_api_key(database, "main-app")
    dashboard = await connect(server, token())
    assert (await dashboard.call("subscribe_metrics", {"metrics": ["patients_total"]}))["ok"]
    await dashboard.next("metrics_snapshot")

    async with httpx.AsyncClient(base_url=server.url) as client:
        with capture_logs() as logs:
            response = await ingest(
                client, key, patient(hospital["ED"], "walk-in", "2026-03-01T09:30:00+01:00")
            )
    assert response.status_code == 200, response.text
    result = IngestResult.model_validate(response.json())
    assert result.applied == 1

    update = await dashboard.next(
        "dashboard_update", lambda u: u["metric"] == "patients_total" and u["department"] == "ED"
    )
    assert update["value"] == 2
    with sqlite3.connect(database_path) as connection:
        stored = connection.execute(
            "SELECT name, registered_at FROM patients WHERE id = ?", result.ids
        ).fetchone()
    assert stored[0] == "walk-in"
    assert datetime.fromisoformat(stored[1]) == datetime(2026, 3, 1, 8, 30)  # naive UTC

    audit = [entry for entry in logs if entry["event"] == "ingest_applied"]
    assert audit == [
        {
            "event": "ingest_applied",
            "log_level": "info",
            "key": "main-app",
            "operations": 1,
            "tables": ["patients"],
        }
    ]
    assert not [entry for entry in logs if key in repr(entry)]


async def test_a_batch_is_written_whole_or_not_at_all(
    hospital: dict[str, int], server: LiveServer, database: AsyncEngine, database_path: Path
) -> None:
    key = await create_api_key(database, "main-app")
    changes = count(database_path, "SELECT count(*) FROM change_log")
    good = (
        patient(hospital["ED"], "a", "2026-03-01T08:00:00Z"),
        bed_status(hospital["ED-1A"], "occupied"),
    )
    async with httpx.AsyncClient(base_url=server.url) as client:
        # Refused by validation, and refused by the database (no such department).
        bad_value = await ingest(client, key, *good, bed_status(hospital["ED-1B"], 3))
        bad_reference = await ingest(
            client,
            key,
            *good,
            {"table": "rooms", "op": "insert", "row": {"department_id": 999, "number": "9"}},
        )
        missing_row = await ingest(client, key, *good, bed_status(99_999, "free"))
        assert [r.status_code for r in (bad_value, bad_reference, missing_row)] == [422, 400, 400]
        for response in (bad_value, bad_reference, missing_row):
            assert error_of(response).detail.startswith("operation 2:"), response.text
        assert count(database_path, "SELECT count(*) FROM patients") == 2
        assert count(database_path, "SELECT count(*) FROM beds WHERE status != 'free'") == 0
        assert count(database_path, "SELECT count(*) FROM rooms") == 4
        assert count(database_path, "SELECT count(*) FROM change_log") == changes

        applied = await ingest(
            client,
            key,
            *good,
            {
                "table": "bills",
                "op": "insert",
                "row": {
                    "department_id": hospital["ED"],
                    "amount_cents": 12_345,
                    "created_at": "2026-03-01T08:00:00",
                },
            },
            {"table": "beds", "op": "delete", "row": {"id": hospital["CARD-2B"]}},
        )
    assert applied.status_code == 200, applied.text
    result = IngestResult.model_validate(applied.json())
    assert result.applied == 4
    assert result.ids[1] == hospital["ED-1A"]
    assert result.ids[3] == hospital["CARD-2B"]
    assert count(database_path, "SELECT count(*) FROM patients") == 3
    assert count(database_path, "SELECT amount_cents FROM bills") == 12_345
    assert count(database_path, "SELECT count(*) FROM beds") == 7


@pytest.mark.parametrize(
    ("operation", "status", "fragment"),
    [
        ({"table": "users", "op": "insert", "row": {"username": "x"}}, 422, "table"),
        ({"table": "api_keys", "op": "delete", "row": {"id": 1}}, 422, "table"),
        ({"table": "change_log", "op": "delete", "row": {"id": 1}}, 422, "table"),
        ({"table": "nope", "op": "insert", "row": {}}, 422, "table"),
        ({"table": "beds", "op": "upsert", "row": {"id": 1}}, 422, "op"),
        ({"table": "beds", "op": "update", "row": {"id": 1, "ssn": "1"}}, 422, "no column 'ssn'"),
        ({"table": "beds", "op": "update", "row": {"status": "free"}}, 422, "needs the row's id"),
        ({"table": "beds", "op": "update", "row": {"id": 1}}, 422, "no column to set"),
        ({"table": "beds", "op": "delete", "row": {"id": 1, "label": "A"}}, 422, "only the id"),
        ({"table": "beds", "op": "update", "row": {"id": "1", "label": "A"}}, 422, "integer"),
        ({"table": "beds", "op": "update", "row": {"id": 1, "label": "A" * 33}}, 422, "at most"),
        ({"table": "beds", "op": "update", "row": {"id": 1, "label": None}}, 422, "null"),
        (
            {"table": "bills", "op": "update", "row": {"id": 1, "amount_cents": 12.5}},
            422,
            "integer (cents)",
        ),
        (
            {"table": "patients", "op": "update", "row": {"id": 1, "registered_at": "soon"}},
            422,
            "ISO 8601",
        ),
        ({"table": "patients", "op": "update", "row": {"id": 1, "emergency": 1}}, 422, "true"),
    ],
)
async def test_bad_operations_are_refused(
    hospital: dict[str, int],
    server: LiveServer,
    database: AsyncEngine,
    operation: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    key = await create_api_key(database, "main-app")
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await ingest(client, key, operation)
    assert response.status_code == status, response.text
    message = error_of(response).detail
    assert message.startswith("operation 0:"), message
    assert fragment in message


async def test_bodies_are_limited(
    hospital: dict[str, int], server: LiveServer, database: AsyncEngine, settings: Settings
) -> None:
    key = await create_api_key(database, "main-app")
    one = bed_status(hospital["ED-1A"], "free")
    async with httpx.AsyncClient(base_url=server.url) as client:
        too_many = await ingest(client, key, *[one] * (MAX_OPERATIONS + 1))
        none = await ingest(client, key)
        huge = await ingest(client, key, bed_status(hospital["ED-1A"], "x" * 70_000))
        garbage = await client.post("/api/ingest", content=b"{not json", headers=bearer(key))
    assert [r.status_code for r in (too_many, none, garbage)] == [422] * 3
    assert all(error_of(r).code == "invalid_payload" for r in (too_many, none, garbage))
    assert huge.status_code == 413
    assert error_of(huge).code == "payload_too_large"
    assert str(settings.max_payload_bytes) in error_of(huge).detail


def department(op: str, **row: Any) -> dict[str, Any]:
    return {"table": "departments", "op": op, "row": row}


def department_codes(database_path: Path) -> dict[int, str]:
    with sqlite3.connect(database_path) as connection:
        return dict(connection.execute("SELECT id, code FROM departments").fetchall())


async def test_a_key_cannot_move_a_department_to_another_code(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Callable[..., str],
    writer: Write,
    database: AsyncEngine,
    database_path: Path,
) -> None:
    key = await create_api_key(database, "main-app")
    for bed in ("ED-1A", "ED-1B", "ED-2A"):
        await writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital[bed],))
    admin = await connect(server, token(Role.ADMIN, ("CARD",)))
    assert (await admin.call("subscribe_metrics", {"metrics": ["beds_occupied"]}))["ok"]
    snapshot = await admin.next("metrics_snapshot")
    assert snapshot_values(snapshot["values"])["beds_occupied", "CARD"] == 0
    codes = department_codes(database_path)
    changes = count(database_path, "SELECT count(*) FROM change_log")

    async with httpx.AsyncClient(base_url=server.url) as client:
        # Scope follows the code: swapped, CARD's admin would see the emergency department.
        swap = await ingest(
            client,
            key,
            department("update", id=hospital["ED"], code="SWAP"),
            department("update", id=hospital["CARD"], code="ED"),
            department("update", id=hospital["ED"], code="CARD"),
        )
        assert swap.status_code == 403, swap.text
        assert error_of(swap).code == "forbidden"
        assert error_of(swap).detail.startswith("operation 0: departments.code cannot")
        assert department_codes(database_path) == codes
        assert count(database_path, "SELECT count(*) FROM change_log") == changes

        # Still allowed: a new department with its code, a new name, the same code again.
        allowed = await ingest(
            client,
            key,
            department("insert", code="ONC", name="Oncology"),
            department("update", id=hospital["CARD"], code="CARD", name="Cardiology (new)"),
            bed_status(hospital["CARD-1A"], "occupied"),
        )
        assert allowed.status_code == 200, allowed.text
        oncology = IngestResult.model_validate(allowed.json()).ids[0]
        # Deleting is refused too, even of an empty department: a new one could take its id
        # (SQLite reuses the highest), and the rows still written under it, with another code.
        deleted = await ingest(client, key, department("delete", id=oncology))
        assert deleted.status_code == 403, deleted.text
        assert "departments cannot be deleted" in error_of(deleted).detail
    assert department_codes(database_path) == {**codes, oncology: "ONC"}

    update = await admin.next("dashboard_update", update_of("beds_occupied", "CARD"))
    assert update["value"] == 1
    seen = {(u["department"], u["value"]) for u in admin.received("dashboard_update")}
    assert seen == {("CARD", 1)}


async def test_keys_are_checked(
    hospital: dict[str, int],
    server: LiveServer,
    database: AsyncEngine,
    database_path: Path,
) -> None:
    key = await create_api_key(database, "main-app")
    reader = await create_api_key(database, "reporting")
    old = await create_api_key(database, "old-app")
    assert await revoke_api_key(database, "old-app")
    with sqlite3.connect(database_path) as connection:
        connection.execute("UPDATE api_keys SET scopes = '[\"export\"]' WHERE name = 'reporting'")
    one = bed_status(hospital["ED-1A"], "cleaning")
    async with httpx.AsyncClient(base_url=server.url) as client:
        missing = await ingest(client, None, one)
        malformed = await ingest(client, "ldk_nonsense", one)
        forged = await ingest(client, key[:-4] + "AAAA", one)
        revoked = await ingest(client, old, one)
        wrong_scope = await ingest(client, reader, one)
        by_header = await client.post(
            "/api/ingest", json={"operations": [one]}, headers={"X-API-Key": key}
        )
    assert error_of(missing).code == "not_authenticated"
    assert [r.status_code for r in (missing, malformed, forged, revoked)] == [401] * 4
    assert "revoked" in error_of(revoked).detail
    assert wrong_scope.status_code == 403
    assert error_of(wrong_scope).code == "forbidden"
    assert by_header.status_code == 200, by_header.text
    assert count(database_path, "SELECT count(*) FROM beds WHERE status = 'cleaning'") == 1
    last_used = count(
        database_path, "SELECT last_used_at IS NOT NULL FROM api_keys WHERE name = 'main-app'"
    )
    assert last_used == 1


async def test_each_key_has_its_own_rate_limit(
    hospital: dict[str, int], serve: Serve, settings: Settings, database: AsyncEngine
) -> None:
    server = await serve(settings.model_copy(update={"rate_limit_api_key": "3/minute"}))
    first = await create_api_key(database, "main-app")
    second = await create_api_key(database, "lab-system")
    one = bed_status(hospital["ED-1A"], "free")
    async with httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(3):
            assert (await ingest(client, first, one)).status_code == 200
        limited = await ingest(client, first, one)
        other = await ingest(client, second, one)
    assert limited.status_code == 429
    body = error_of(limited)
    assert body.code == "rate_limited"
    assert body.retry_after is not None
    assert 0 < body.retry_after <= 60
    assert limited.headers["retry-after"] == str(body.retry_after)
    assert other.status_code == 200


async def test_only_the_hash_of_a_key_is_stored(database: AsyncEngine, database_path: Path) -> None:
    key = await create_api_key(database, "main-app")
    secret = key[len("ldk_") + 8 + 1 :]
    await database.dispose()  # flush everything into the file before reading its bytes
    with sqlite3.connect(database_path) as connection:
        rows = connection.execute("SELECT * FROM api_keys").fetchall()
    assert len(rows) == 1
    assert not [value for value in rows[0] if isinstance(value, str) and secret in value]
    assert key[len("ldk_") : len("ldk_") + 8] in rows[0]  # the prefix, kept in clear
    for path in database_path.parent.glob(database_path.name + "*"):
        assert secret.encode() not in path.read_bytes(), path


def test_ingest_writes_the_watched_tables_but_users() -> None:
    assert set(get_args(IngestTable)) == set(WATCHED_TABLES) - {"users"}
