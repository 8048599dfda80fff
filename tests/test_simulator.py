"""The hospital seed and simulator, against real SQLite files checked the way a hospital would."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from structlog.typing import EventDict, WrappedLogger

from livedash.errors import ConfigurationError
from livedash.simulator import KINDS, HospitalSimulator, SeedSummary, seed_hospital
from livedash.store.migrate import upgrade, upgrade_async
from livedash.store.models import WATCHED_TABLES

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
DAY_START = "2026-03-10 00:00:00"
NOW_TEXT = "2026-03-10 14:30:00.000000"

INVARIANTS = {
    "occupied bed without exactly one open admission of an active patient": """
        SELECT b.id FROM beds b WHERE b.status = 'occupied' AND (
            SELECT count(*) FROM admissions a JOIN patients p ON p.id = a.patient_id
            WHERE a.bed_id = b.id AND a.discharged_at IS NULL AND p.status = 'active') != 1""",
    "open admission on a bed that is not occupied": """
        SELECT a.id FROM admissions a JOIN beds b ON b.id = a.bed_id
        WHERE a.discharged_at IS NULL AND b.status != 'occupied'""",
    "active patient without exactly one open admission": """
        SELECT p.id FROM patients p WHERE p.status = 'active' AND (
            SELECT count(*) FROM admissions a
            WHERE a.patient_id = p.id AND a.discharged_at IS NULL) != 1""",
    "patient who is not active holding a bed": """
        SELECT p.id FROM patients p JOIN admissions a ON a.patient_id = p.id
        WHERE a.discharged_at IS NULL AND p.status != 'active'""",
    "open admission in another department than its patient or its bed": """
        SELECT a.id FROM admissions a JOIN patients p ON p.id = a.patient_id
        JOIN beds b ON b.id = a.bed_id JOIN rooms r ON r.id = b.room_id
        WHERE a.discharged_at IS NULL
          AND (a.department_id != p.department_id OR a.department_id != r.department_id)""",
    "discharge time set exactly for discharged patients": """
        SELECT id FROM patients WHERE (status = 'discharged') != (discharged_at IS NOT NULL)""",
    "unknown patient status": """
        SELECT id FROM patients WHERE status NOT IN ('registered', 'active', 'discharged')""",
    "unknown bed status": """
        SELECT id FROM beds
        WHERE status NOT IN ('free', 'occupied', 'cleaning', 'out_of_service')""",
    "two stays in one bed at the same time": """
        SELECT a.id, b.id FROM admissions a JOIN admissions b ON b.bed_id = a.bed_id AND b.id > a.id
        WHERE b.admitted_at < coalesce(a.discharged_at, '9999')
          AND a.admitted_at < coalesce(b.discharged_at, '9999')""",
    "stay that ends before it begins": """
        SELECT a.id FROM admissions a JOIN patients p ON p.id = a.patient_id
        WHERE a.discharged_at < a.admitted_at OR a.admitted_at < p.registered_at""",
    "paid bill without a payment of the same amount": """
        SELECT b.id FROM bills b WHERE b.paid_at IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM payments y WHERE y.bill_id = b.id AND y.amount_cents = b.amount_cents)""",
    "payment of an unpaid bill": """
        SELECT y.id FROM payments y JOIN bills b ON b.id = y.bill_id WHERE b.paid_at IS NULL""",
    "staff member on two open shifts": """
        SELECT staff_id FROM staff_shifts WHERE clock_out_at IS NULL
        GROUP BY staff_id HAVING count(*) > 1""",
}


@dataclass(frozen=True)
class Hospital:
    path: Path

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.path}"

    def query(self, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.path)) as connection:
            return connection.execute(sql, parameters).fetchall()

    def scalar(self, sql: str, *parameters: Any) -> Any:
        return self.query(sql, *parameters)[0][0]

    def violations(self) -> dict[str, list[tuple[Any, ...]]]:
        found = {name: self.query(sql) for name, sql in INVARIANTS.items()}
        return {name: rows for name, rows in found.items() if rows}

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        return {table: self.query(f"SELECT * FROM {table} ORDER BY id") for table in WATCHED_TABLES}


class TickingClock:
    """A clock that moves one second on at every reading, so rows carry distinct times."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    """One migrated hospital seeded with seed 7 at NOW, copied by every test that needs one."""
    hospital = Hospital(tmp_path_factory.mktemp("template") / "hospital.db")
    upgrade(hospital.url)
    asyncio.run(seed_hospital(hospital.url, now=NOW))
    return hospital


@pytest.fixture
def hospital(seeded_template: Hospital, tmp_path: Path) -> Hospital:
    return _copy(seeded_template, tmp_path / "hospital.db")


def _copy(template: Hospital, path: Path) -> Hospital:
    shutil.copyfile(template.path, path)
    return Hospital(path)


async def _empty_hospital(path: Path) -> Hospital:
    hospital = Hospital(path)
    await upgrade_async(hospital.url)
    return hospital


async def test_seed_creates_a_hospital_in_the_middle_of_its_day(
    tmp_path: Path, seeded_template: Hospital
) -> None:
    hospital = await _empty_hospital(tmp_path / "hospital.db")

    summary = await seed_hospital(hospital.url, now=NOW)

    codes = {code for (code,) in hospital.query("SELECT code FROM departments")}
    assert codes == {"ED", "CARD", "SURG", "PED", "MAT", "ONC"}
    assert summary.departments == 6
    beds = dict(hospital.query("SELECT status, count(*) FROM beds GROUP BY status"))
    assert summary.beds == sum(beds.values())
    assert 280 <= summary.beds <= 320
    assert 0.65 <= beds["occupied"] / summary.beds <= 0.8
    assert beds["cleaning"] >= 1
    assert 1 <= beds["out_of_service"] <= 3
    assert summary.rooms == hospital.scalar("SELECT count(*) FROM rooms")
    assert hospital.scalar("SELECT max(n) FROM (SELECT count(*) n FROM beds GROUP BY room_id)") <= 4
    assert 150 <= summary.staff <= 250
    on_duty = hospital.scalar("SELECT count(*) FROM staff_shifts WHERE clock_out_at IS NULL")
    assert 0 < on_duty < summary.staff
    assert hospital.scalar("SELECT count(*) FROM patients WHERE status = 'registered'") >= 5
    discharged = "SELECT count(*) FROM patients WHERE status = 'discharged' AND discharged_at "
    assert hospital.scalar(discharged + ">= ?", DAY_START) > 0
    assert hospital.scalar(discharged + "< ?", DAY_START) > 0
    statuses = {status for (status,) in hospital.query("SELECT status FROM appointments")}
    assert {"scheduled", "checked_in", "completed", "cancelled", "no_show"} <= statuses
    assert hospital.scalar("SELECT min(scheduled_at) >= ? FROM appointments", DAY_START)
    assert hospital.scalar("SELECT count(*) FROM payments WHERE paid_at >= ?", DAY_START) > 0
    latest = """SELECT max(t) FROM (
        SELECT max(registered_at) t FROM patients UNION SELECT max(discharged_at) FROM patients
        UNION SELECT max(admitted_at) FROM admissions UNION SELECT max(paid_at) FROM payments
        UNION SELECT max(created_at) FROM bills UNION SELECT max(clock_in_at) FROM staff_shifts
        UNION SELECT max(clock_out_at) FROM staff_shifts)"""
    assert hospital.scalar(latest) <= NOW_TEXT
    assert hospital.violations() == {}
    assert hospital.dump() == seeded_template.dump()


async def test_seed_leaves_a_seeded_hospital_alone(hospital: Hospital) -> None:
    before = hospital.dump()
    changes = hospital.scalar("SELECT count(*) FROM change_log")

    summary = await seed_hospital(hospital.url, seed=99, now=NOW + timedelta(days=1))

    assert summary == SeedSummary(
        departments=6,
        rooms=hospital.scalar("SELECT count(*) FROM rooms"),
        beds=hospital.scalar("SELECT count(*) FROM beds"),
        staff=hospital.scalar("SELECT count(*) FROM staff"),
        users=8,
        patients=hospital.scalar("SELECT count(*) FROM patients"),
    )
    assert hospital.dump() == before
    assert hospital.scalar("SELECT count(*) FROM change_log") == changes


async def test_seed_differs_with_the_seed(tmp_path: Path, seeded_template: Hospital) -> None:
    hospital = await _empty_hospital(tmp_path / "hospital.db")

    await seed_hospital(hospital.url, seed=8, now=NOW)

    assert hospital.dump()["patients"] != seeded_template.dump()["patients"]


def test_seed_creates_the_dashboard_users(hospital: Hospital) -> None:
    users = {
        username: (role, departments, active)
        for username, role, departments, active in hospital.query(
            "SELECT username, role, departments, active FROM users"
        )
    }

    assert users == {
        "admin": ("super_admin", '["ED", "CARD", "SURG", "PED", "MAT", "ONC"]', 1),
        "admin_ed": ("admin", '["ED"]', 1),
        "admin_card": ("admin", '["CARD"]', 1),
        "admin_surg": ("admin", '["SURG"]', 1),
        "admin_ped": ("admin", '["PED"]', 1),
        "admin_mat": ("admin", '["MAT"]', 1),
        "admin_onc": ("admin", '["ONC"]', 1),
        "viewer": ("viewer", "[]", 1),
    }


async def test_steps_keep_the_hospital_consistent(hospital: Hospital) -> None:
    async with HospitalSimulator(hospital.url, clock=TickingClock(NOW)) as simulator:
        kinds = [await simulator.step() for _ in range(300)]

    assert set(kinds) <= set(KINDS)
    assert {"arrival", "admission", "discharge", "bill_paid", "shift_change"} <= set(kinds)
    assert hospital.violations() == {}
    assert hospital.scalar("SELECT count(*) FROM patients WHERE registered_at > ?", NOW_TEXT) == (
        kinds.count("arrival")
    )


async def test_same_seed_and_clock_give_the_same_hospital(
    seeded_template: Hospital, tmp_path: Path
) -> None:
    runs = []
    for name, seed in (("first", 11), ("second", 11), ("other", 12)):
        hospital = _copy(seeded_template, tmp_path / f"{name}.db")
        async with HospitalSimulator(hospital.url, seed=seed, clock=TickingClock(NOW)) as sim:
            kinds = [await sim.step() for _ in range(100)]
        runs.append((kinds, hospital.dump()))

    (first_kinds, first_rows), (second_kinds, second_rows), (other_kinds, other_rows) = runs
    assert first_kinds == second_kinds
    assert first_rows == second_rows
    assert other_kinds != first_kinds
    assert other_rows != first_rows


async def test_run_performs_events_until_stopped(hospital: Hospital) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    def on_event(kind: str) -> None:
        seen.append(kind)
        if len(seen) == 40:
            stop.set()

    async with HospitalSimulator(hospital.url, clock=TickingClock(NOW)) as simulator:
        performed = await simulator.run(speed=1e6, stop=stop, on_event=on_event)
        with pytest.raises(ConfigurationError):
            await simulator.run(speed=0, stop=stop)

    assert performed == 40
    assert len(seen) == 40
    assert hospital.violations() == {}


async def test_run_stops_at_once_while_waiting_for_the_next_event(hospital: Hospital) -> None:
    stop = asyncio.Event()
    first = asyncio.Event()

    async with HospitalSimulator(hospital.url, clock=TickingClock(NOW)) as simulator:
        # At real speed the next event is about a minute away; stopping must not wait for it.
        running = asyncio.create_task(
            simulator.run(speed=1.0, stop=stop, on_event=lambda _: first.set())
        )
        await first.wait()
        stop.set()
        performed = await asyncio.wait_for(running, timeout=1.0)

    assert performed == 1


async def test_step_respects_beds_another_application_took(hospital: Hospital) -> None:
    async with HospitalSimulator(hospital.url, clock=TickingClock(NOW)) as simulator:
        await simulator.step()
        # The hospital's main application puts its own patients in every free bed.
        with closing(sqlite3.connect(hospital.path)) as connection, connection:
            free = connection.execute(
                "SELECT b.id, r.department_id FROM beds b JOIN rooms r ON r.id = b.room_id "
                "WHERE b.status = 'free'"
            ).fetchall()
            for bed_id, department_id in free:
                patient_id = connection.execute(
                    "INSERT INTO patients (department_id, name, status, emergency, registered_at)"
                    " VALUES (?, 'Main App Patient', 'active', 0, ?)",
                    (department_id, NOW_TEXT),
                ).lastrowid
                connection.execute(
                    "INSERT INTO admissions (patient_id, department_id, bed_id, admitted_at)"
                    " VALUES (?, ?, ?, ?)",
                    (patient_id, department_id, bed_id, NOW_TEXT),
                )
                connection.execute("UPDATE beds SET status = 'occupied' WHERE id = ?", (bed_id,))
        assert free

        with capture_logs() as logs:
            kinds = [await simulator.step() for _ in range(100)]

    assert set(kinds) <= set(KINDS)
    assert any(entry["event"] == "simulator_state_stale" for entry in logs)
    assert hospital.violations() == {}


async def test_run_outlives_a_failing_database(hospital: Hospital) -> None:
    def rename(old: str, new: str) -> None:
        with closing(sqlite3.connect(hospital.path)) as connection:
            connection.execute(f"ALTER TABLE {old} RENAME TO {new}")

    def restore_when_failed(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        # The database comes back as soon as the simulator has noticed it was gone.
        if event["event"] == "simulator_step_failed":
            rename("appointments_moved", "appointments")
        return event

    stop = asyncio.Event()
    seen: list[str] = []

    def on_event(kind: str) -> None:
        seen.append(kind)
        if len(seen) == 5:
            rename("appointments", "appointments_moved")
        if len(seen) == 60:
            stop.set()

    with capture_logs(processors=[restore_when_failed]) as logs:
        async with HospitalSimulator(hospital.url, clock=TickingClock(NOW)) as simulator:
            performed = await simulator.run(speed=1e6, stop=stop, on_event=on_event)

    failures = [entry for entry in logs if entry["event"] == "simulator_step_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "warning"
    assert "appointments" in failures[0]["error"]
    assert performed == 60
    assert hospital.violations() == {}
