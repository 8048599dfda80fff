"""The incremental engine equals a full SQL recompute, whatever the writes and their order."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from livedash.changefeed import Change, ChangeSource, Op, open_change_source
from livedash.metrics.clock import ManualClock
from livedash.metrics.definitions import FAMILY_METRICS, METRIC_NAMES
from livedash.metrics.engine import MetricEngine, MetricValue
from livedash.metrics.pipeline import MetricPipeline
from livedash.store.engine import create_engine
from tests.cases import Cases, CaseWriter, cases_fixture, committed  # noqa: F401
from tests.conftest import Write, register_patient
from tests.oracle import Values, recompute

ZONE = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
FORMAT = "%Y-%m-%d %H:%M:%S.%f"
BED_STATUSES = ("free", "occupied", "cleaning", "out_of_service", "broken")
PATIENT_STATUSES = ("registered", "active", "discharged")
APPOINTMENT_STATUSES = ("scheduled", "checked_in", "completed", "cancelled", "no_show", "lost")

pytestmark = pytest.mark.both_backends


TABLES = (
    *("departments", "rooms", "beds", "patients", "appointments", "staff", "staff_shifts"),
    *("admissions", "payments", "alerts", "bills"),
)
# Every table's ids in one round trip, ordered, so that a seed picks the same rows every time.
_IDS = (
    " UNION ALL ".join(f"SELECT '{table}', id FROM {table}" for table in TABLES) + " ORDER BY 1, 2"
)


def _moment(rng: random.Random) -> str:
    """Within a few weeks of now (whole seconds), so today, this week and month all vary."""
    hours = rng.choice([rng.uniform(-40, 30), rng.uniform(-24 * 40, 24)])
    return (NOW + timedelta(seconds=int(hours * 3600))).replace(tzinfo=None).strftime(FORMAT)


def _pick(rng: random.Random, ids: list[int], spare: int = 99) -> int:
    """An existing id mostly, sometimes one that does not exist (SQLite writers skip foreign
    keys; PostgreSQL refuses the write)."""
    return rng.choice(ids) if ids and rng.random() < 0.9 else spare


async def apply_operation(execute: CaseWriter, kind: str, seed: int) -> None:
    """One write as the hospital's application (or a careless script) might make it.

    A write the database refuses (a duplicate code, a second open shift, a missing foreign
    row on PostgreSQL) changes nothing, which the engine must see as nothing too.
    """
    rng = random.Random(seed)
    ids: dict[str, list[int]] = {table: [] for table in TABLES}
    for table, identifier in await execute.fetch(_IDS):
        ids[table].append(identifier)
    departments, rooms, beds = ids["departments"], ids["rooms"], ids["beds"]
    patients, appointments, shifts = ids["patients"], ids["appointments"], ids["staff_shifts"]
    admissions, payments = ids["admissions"], ids["payments"]
    alerts, bills = ids["alerts"], ids["bills"]

    if kind == "department":
        await execute("INSERT INTO departments (code, name) VALUES (?, 'x')", (f"D{seed}",))
    elif kind == "department_delete" and departments:
        await execute("DELETE FROM departments WHERE id = ?", (rng.choice(departments),))
    elif kind == "room":
        await execute(
            "INSERT INTO rooms (department_id, number) VALUES (?, '1')", (_pick(rng, departments),)
        )
    elif kind == "room_move" and rooms:
        await execute(
            "UPDATE rooms SET department_id = ? WHERE id = ?",
            (_pick(rng, departments), rng.choice(rooms)),
        )
    elif kind == "room_delete" and rooms:
        await execute("DELETE FROM rooms WHERE id = ?", (rng.choice(rooms),))
    elif kind == "bed":
        await execute(
            "INSERT INTO beds (room_id, label, status) VALUES (?, 'A', ?)",
            (_pick(rng, rooms), rng.choice(BED_STATUSES)),
        )
    elif kind == "bed_status" and beds:
        await execute(
            "UPDATE beds SET status = ? WHERE id = ?", (rng.choice(BED_STATUSES), rng.choice(beds))
        )
    elif kind == "bed_move" and beds:
        await execute(
            "UPDATE beds SET room_id = ? WHERE id = ?", (_pick(rng, rooms), rng.choice(beds))
        )
    elif kind == "bed_delete" and beds:
        await execute("DELETE FROM beds WHERE id = ?", (rng.choice(beds),))
    elif kind == "patient":
        await execute(
            "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
            "VALUES (?, 'p', ?, ?, ?)",
            (
                _pick(rng, departments),
                rng.choice(PATIENT_STATUSES),
                rng.random() < 0.3,
                _moment(rng),
            ),
        )
    elif kind == "patient_update" and patients:
        column, value = rng.choice(
            [
                ("status", rng.choice(PATIENT_STATUSES)),
                ("emergency", int(rng.random() < 0.5)),
                ("department_id", _pick(rng, departments)),
                ("registered_at", _moment(rng)),
            ]
        )
        await execute(
            f"UPDATE patients SET {column} = ? WHERE id = ?", (value, rng.choice(patients))
        )
    elif kind == "patient_delete" and patients:
        await execute("DELETE FROM patients WHERE id = ?", (rng.choice(patients),))
    elif kind == "appointment":
        await execute(
            "INSERT INTO appointments (department_id, scheduled_at, status) VALUES (?, ?, ?)",
            (_pick(rng, departments), _moment(rng), rng.choice(APPOINTMENT_STATUSES)),
        )
    elif kind == "appointment_update" and appointments:
        column, value = rng.choice(
            [("status", rng.choice(APPOINTMENT_STATUSES)), ("scheduled_at", _moment(rng))]
        )
        await execute(
            f"UPDATE appointments SET {column} = ? WHERE id = ?", (value, rng.choice(appointments))
        )
    elif kind == "appointment_delete" and appointments:
        await execute("DELETE FROM appointments WHERE id = ?", (rng.choice(appointments),))
    elif kind == "staff":
        await execute(
            "INSERT INTO staff (department_id, name, role) VALUES (?, 's', 'nurse')",
            (_pick(rng, departments),),
        )
    elif kind == "shift":
        await execute(
            "INSERT INTO staff_shifts (staff_id, department_id, clock_in_at) VALUES (?, ?, ?)",
            (_pick(rng, ids["staff"], spare=seed), _pick(rng, departments), _moment(rng)),
        )
    elif kind == "shift_end" and shifts:
        await execute(
            "UPDATE staff_shifts SET clock_out_at = ? WHERE id = ?",
            (rng.choice([_moment(rng), None]), rng.choice(shifts)),
        )
    elif kind == "shift_delete" and shifts:
        await execute("DELETE FROM staff_shifts WHERE id = ?", (rng.choice(shifts),))
    elif kind == "admission":
        await execute(
            "INSERT INTO admissions (patient_id, department_id, admitted_at, discharged_at) "
            "VALUES (?, ?, ?, ?)",
            (_pick(rng, patients), _pick(rng, departments), _moment(rng), None),
        )
    elif kind == "admission_update" and admissions:
        column, value = rng.choice(
            [
                ("discharged_at", _moment(rng)),
                ("discharged_at", None),
                ("admitted_at", _moment(rng)),
                ("department_id", _pick(rng, departments)),
            ]
        )
        await execute(
            f"UPDATE admissions SET {column} = ? WHERE id = ?", (value, rng.choice(admissions))
        )
    elif kind == "admission_delete" and admissions:
        await execute("DELETE FROM admissions WHERE id = ?", (rng.choice(admissions),))
    elif kind == "bill_paid":
        amount = rng.randrange(1, 500_000)
        department = _pick(rng, departments)
        bill = await execute(
            "INSERT INTO bills (department_id, amount_cents, created_at, paid_at) "
            "VALUES (?, ?, ?, ?)",
            (department, amount, _moment(rng), (paid := _moment(rng))),
        )
        await execute(
            "INSERT INTO payments (bill_id, department_id, amount_cents, paid_at) "
            "VALUES (?, ?, ?, ?)",
            (bill, department, amount, paid),
        )
    elif kind == "payment_update" and payments:
        column, value = rng.choice(
            [("amount_cents", rng.randrange(0, 500_000)), ("paid_at", _moment(rng))]
        )
        await execute(
            f"UPDATE payments SET {column} = ? WHERE id = ?", (value, rng.choice(payments))
        )
    elif kind == "bill_delete" and bills:
        # The bill goes, and (as the main application does) its payments with it.
        bill = rng.choice(bills)
        await execute("DELETE FROM payments WHERE bill_id = ?", (bill,))
        await execute("DELETE FROM bills WHERE id = ?", (bill,))
    elif kind == "alert":
        await execute(
            "INSERT INTO alerts (department_id, severity, status, title, raised_at) "
            "VALUES (?, ?, 'active', 'x', ?)",
            (
                rng.choice([None, _pick(rng, departments)]),
                rng.choice(["critical", "warning", "info", "debug"]),
                _moment(rng),
            ),
        )
    elif kind == "alert_update" and alerts:
        await execute(
            "UPDATE alerts SET status = ? WHERE id = ?",
            (rng.choice(["active", "acknowledged", "resolved"]), rng.choice(alerts)),
        )


OPERATIONS = (
    *("department", "room", "room", "bed", "bed", "bed", "patient", "patient", "appointment"),
    *("staff", "shift", "bed_status", "bed_status", "patient_update", "patient_update"),
    *("appointment_update", "shift_end", "bed_move", "room_move", "room_delete", "bed_delete"),
    *("patient_delete", "appointment_delete", "shift_delete", "department_delete"),
    *("admission", "admission", "admission_update", "admission_update", "admission_delete"),
    *("bill_paid", "bill_paid", "payment_update", "bill_delete", "alert", "alert_update"),
)


# The service's own health and the historical tier do not come from the current rows.
SYSTEM_METRICS = set(FAMILY_METRICS["system"]) | set(FAMILY_METRICS["historical"])


def engine_values(engine: MetricEngine) -> Values:
    return {
        (value.metric, value.department): value.value
        for value in engine.snapshot()
        if value.metric not in SYSTEM_METRICS
    }


async def _check(cases: Cases, operations: list[tuple[str, int]]) -> None:
    clock = ManualClock(NOW)
    incremental = MetricEngine(ZONE, clock)
    incremental.finish_loading(0)
    halfway = len(operations) // 2
    async with cases.new() as case:
        database = create_engine(case.url)
        async with case.writer() as write, case.feed("test", batch_size=7) as feed:
            for kind, seed in operations[:halfway]:
                await apply_operation(write, kind, seed)
            # One engine starts from a recount in the middle of the writes...
            rebuilt = MetricEngine(ZONE, clock)
            await MetricPipeline(rebuilt, feed, database).rebuild()
            for kind, seed in operations[halfway:]:
                await apply_operation(write, kind, seed)
            # ...and then both take every change from the start, in small batches; the
            # recounted one skips what its count held already.
            async with contextlib.aclosing(committed(feed)) as batches:
                async for batch in batches:
                    incremental.apply(batch)
                    rebuilt.apply([c for c in batch if not feed.counted_at_start(c)])
                    await feed.confirm(batch[-1].position)
        await database.dispose()
        truth = await recompute(case.url, ZONE, NOW.astimezone(ZONE).date())
    assert engine_values(incremental) == truth
    assert engine_values(rebuilt) == truth
    assert {metric for metric, _ in truth} == set(METRIC_NAMES) - SYSTEM_METRICS


# Each PostgreSQL example clones a database and creates a replication slot: fewer of them.
EXAMPLES = {"sqlite": 40, "postgres": 10}


def test_incremental_engine_equals_sql_recompute(backend: str, cases: Cases) -> None:
    @settings(
        max_examples=EXAMPLES[backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        operations=st.lists(
            st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 10_000)),
            min_size=1,
            max_size=60,
        )
    )
    def check(operations: list[tuple[str, int]]) -> None:
        asyncio.run(_check(cases, operations))

    check()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_random_histories_equal_sql_recompute(cases: Cases, seed: int) -> None:
    rng = random.Random(seed)
    operations = [(rng.choice(OPERATIONS), rng.randrange(10_000)) for _ in range(400)]
    asyncio.run(_check(cases, operations))


def _change(
    position: int, table: str, new: dict[str, object], old: dict[str, object] | None = None
):  # type: ignore[no-untyped-def]

    op = Op.INSERT if old is None else Op.UPDATE
    return Change(position, table, op, old, new, NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("evening", "label"),
    [
        (datetime(2026, 11, 23, 22, 30, tzinfo=UTC), "ordinary night"),
        (datetime(2026, 3, 28, 22, 30, tzinfo=UTC), "clocks go forward at 02:00"),
        (datetime(2026, 10, 24, 21, 30, tzinfo=UTC), "clocks go back at 03:00"),
    ],
)
def test_day_figures_roll_over_at_local_midnight(evening: datetime, label: str) -> None:
    clock = ManualClock(evening)  # 23:30 in Berlin either way
    engine = MetricEngine(ZONE, clock)
    engine.finish_loading(0)
    registered = evening.replace(tzinfo=None)
    updates = engine.apply(
        [
            _change(1, "departments", {"id": 1, "code": "ED", "name": "Emergency"}),
            _change(
                2,
                "patients",
                {"id": 1, "department_id": 1, "status": "registered", "registered_at": registered},
            ),
            _change(
                3,
                "appointments",
                {"id": 1, "department_id": 1, "status": "scheduled", "scheduled_at": registered},
            ),
        ]
    )
    assert engine.value("patients_new_today", "ED") == 1
    assert {(u.metric, u.department, u.value) for u in updates} >= {
        ("patients_new_today", "ED", 1),
        ("appointments_today", None, 1),
    }
    clock.advance(timedelta(minutes=29))  # 23:59 local: still the same day
    assert engine.refresh_time() == []
    clock.advance(timedelta(minutes=2))  # 00:01 local on the next day
    rolled = {(u.metric, u.department): u.value for u in engine.refresh_time()}
    assert rolled == {
        ("patients_new_today", None): 0,
        ("patients_new_today", "ED"): 0,
        ("appointments_today", None): 0,
        ("appointments_today", "ED"): 0,
        ("appointments_scheduled_today", None): 0,
        ("appointments_scheduled_today", "ED"): 0,
    }, label
    assert engine.value("patients_total", "ED") == 1
    assert engine.refresh_time() == []


def test_changes_already_counted_are_skipped_and_versions_only_grow() -> None:
    engine = MetricEngine(ZONE, ManualClock(NOW))
    first = engine.finish_loading(0)
    department = _change(1, "departments", {"id": 1, "code": "ED", "name": "Emergency"})
    bed = {"id": 1, "room_id": 1, "status": "free"}
    room = _change(2, "rooms", {"id": 1, "department_id": 1, "number": "1"})
    updates = engine.apply([department, room, _change(3, "beds", bed)])
    assert engine.value("beds_free", "ED") == 1
    again = engine.apply([department, room, _change(3, "beds", bed)])  # replayed after a crash
    assert again == []
    assert engine.value("beds_free", "ED") == 1
    occupied = engine.apply([_change(4, "beds", {**bed, "status": "occupied"}, old=bed)])
    assert {(u.metric, u.value) for u in occupied if u.department == "ED"} >= {
        ("beds_occupied", 1),
        ("beds_free", 0),
        ("bed_occupancy_rate", 1.0),
        ("rooms_occupied", 1),
    }
    versions = [u.version for u in [*first, *updates, *occupied]]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


def test_a_new_engine_continues_above_the_old_versions() -> None:
    old = MetricEngine(ZONE, ManualClock(NOW))
    last = max(u.version for u in old.finish_loading(0))
    new = MetricEngine(ZONE, ManualClock(NOW))
    assert min(u.version for u in new.finish_loading(0)) > last


class FailsOnce:
    """A change source whose first read fails with an error nobody planned for."""

    def __init__(self, source: ChangeSource) -> None:
        self._source = source
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def batches(self) -> AsyncIterator[list[Change]]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("an error nobody planned for")
        return self._source.batches()


@pytest.mark.both_backends
async def test_the_feed_goes_on_after_an_unexpected_error(
    database_url: str, hospital: dict[str, int], writer: Write
) -> None:
    received: asyncio.Queue[MetricValue] = asyncio.Queue()

    async def listen(updates: list[MetricValue]) -> None:
        for update in updates:
            received.put_nowait(update)

    database = create_engine(database_url)
    try:
        slot = "slot_" + str(make_url(database_url).database).replace(".", "_").split("/")[-1]
        async with open_change_source(database_url, "metrics", slot=slot) as source:
            failing = FailsOnce(source)
            pipeline = MetricPipeline(MetricEngine(ZONE, ManualClock(NOW)), failing, database)  # type: ignore[arg-type]
            pipeline.add_listener(listen)
            async with pipeline:
                await register_patient(writer, hospital["ED"], "after the error")
                async with asyncio.timeout(10):
                    while True:
                        update = await received.get()
                        if (update.metric, update.department, update.value) == (
                            "patients_total",
                            "ED",
                            2,
                        ):
                            break
            assert failing.failed
            assert pipeline.status().last_error is None  # cleared by the batch that followed
    finally:
        await database.dispose()
