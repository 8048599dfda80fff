"""The hospital's writes for property tests: one seeded operation of every kind a program (or a
careless script) might make, on any table, against a case's database."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tests.support.cases import CaseWriter

ZONE = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
FORMAT = "%Y-%m-%d %H:%M:%S.%f"
BED_STATUSES = ("free", "occupied", "cleaning", "out_of_service", "broken")
PATIENT_STATUSES = ("registered", "active", "discharged")
APPOINTMENT_STATUSES = ("scheduled", "checked_in", "completed", "cancelled", "no_show", "lost")

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
                rng.choice(["critical", "high", "medium", "low", "debug"]),
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
