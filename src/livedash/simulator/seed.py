"""A hospital that looks alive from the first second: departments, beds, staff, users and a day
already under way (inpatients in most beds, a waiting room, today's clinics, bills paid today).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.errors import ConfigurationError
from livedash.simulator import curves
from livedash.simulator.catalog import DEPARTMENTS, STAFF_ROLES, person_name
from livedash.simulator.seed_day import HOUR, SeedContext, SeededWard, seed_day
from livedash.store.engine import create_engine
from livedash.store.models import (
    Bed,
    BedStatus,
    Department,
    Patient,
    Role,
    Room,
    Staff,
    StaffShift,
    User,
)

ROOM_SIZES = (1, 2, 3, 4)
ROOM_SIZE_WEIGHTS = (0.2, 0.35, 0.15, 0.3)


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """How much of each the hospital has."""

    departments: int
    rooms: int
    beds: int
    staff: int
    users: int
    patients: int


async def seed_hospital(
    database_url: str, *, seed: int = 7, now: datetime | None = None, zone: tzinfo = UTC
) -> SeedSummary:
    """Fill an empty hospital database; one that already has departments is left as it is.

    `now` (aware; default the system clock) and `zone` (the hospital's time zone) place the
    day already under way; the same `seed` and `now` give the same rows.
    """
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ConfigurationError("seed_hospital needs an aware `now`")
    engine = create_engine(database_url, writer=True)
    try:
        # One write transaction: the emptiness check and the seeding cannot interleave with
        # another seeder, and a failure leaves the database empty.
        async with engine.begin() as connection:
            if not await connection.scalar(select(func.count()).select_from(Department)):
                context = SeedContext(connection, random.Random(seed), moment, zone)
                wards = await _build_hospital(context)
                await _add_users(context)
                await _add_staff(context, wards)
                await seed_day(context, wards)
            return await _summary(connection)
    finally:
        await engine.dispose()


async def _summary(connection: AsyncConnection) -> SeedSummary:
    counts = [
        int(await connection.scalar(select(func.count()).select_from(model)) or 0)
        for model in (Department, Room, Bed, Staff, User, Patient)
    ]
    return SeedSummary(*counts)


async def _build_hospital(context: SeedContext) -> list[SeededWard]:
    """Departments, their rooms of one to four beds, and each bed's status right now."""
    rng = context.rng
    department_ids = await context.insert(
        Department, [{"code": p.code, "name": p.name} for p in DEPARTMENTS]
    )
    broken = [rng.randrange(len(DEPARTMENTS)) for _ in range(rng.randint(1, 3))]
    rooms: list[dict[str, Any]] = []
    room_statuses: list[list[str]] = []
    for floor, (department_id, profile) in enumerate(
        zip(department_ids, DEPARTMENTS, strict=True), start=1
    ):
        target = profile.beds + rng.randint(-3, 3)
        sizes: list[int] = []
        while sum(sizes) < target:
            sizes.append(rng.choices(ROOM_SIZES, ROOM_SIZE_WEIGHTS)[0])
        statuses = _bed_statuses(rng, sum(sizes), broken.count(floor - 1))
        for number, size in enumerate(sizes, start=1):
            rooms.append({"department_id": department_id, "number": f"{floor}{number:02d}"})
            room_statuses.append([statuses.pop() for _ in range(size)])
    room_ids = await context.insert(Room, rooms)
    beds: list[dict[str, Any]] = []
    bed_departments: list[int] = []
    for room_id, room, statuses in zip(room_ids, rooms, room_statuses, strict=True):
        for letter, status in zip("ABCD", statuses, strict=False):
            beds.append(
                {"room_id": room_id, "label": f"{room['number']}-{letter}", "status": status}
            )
            bed_departments.append(room["department_id"])
    bed_ids = await context.insert(Bed, beds)
    wards = []
    for department_id, profile in zip(department_ids, DEPARTMENTS, strict=True):
        ward_beds = [
            (bed_id, bed["status"])
            for bed_id, bed, bed_department in zip(bed_ids, beds, bed_departments, strict=True)
            if bed_department == department_id
        ]
        occupied = [bed_id for bed_id, status in ward_beds if status == BedStatus.OCCUPIED]
        wards.append(SeededWard(department_id, profile, [bed for bed, _ in ward_beds], occupied))
    return wards


def _bed_statuses(rng: random.Random, beds: int, out_of_service: int) -> list[str]:
    occupied = round(beds * rng.uniform(0.68, 0.8))
    cleaning = rng.randint(0, 2)
    statuses = (
        [BedStatus.OCCUPIED.value] * occupied
        + [BedStatus.CLEANING.value] * cleaning
        + [BedStatus.OUT_OF_SERVICE.value] * out_of_service
    )
    statuses += [BedStatus.FREE.value] * (beds - len(statuses))
    rng.shuffle(statuses)
    return statuses


async def _add_users(context: SeedContext) -> None:
    codes = [profile.code for profile in DEPARTMENTS]
    users = [{"username": "admin", "role": Role.SUPER_ADMIN.value, "departments": codes}]
    users += [
        {"username": f"admin_{code.lower()}", "role": Role.ADMIN.value, "departments": [code]}
        for code in codes
    ]
    users.append({"username": "viewer", "role": Role.VIEWER.value, "departments": []})
    await context.insert(User, [{**user, "active": True} for user in users])


async def _add_staff(context: SeedContext, wards: list[SeededWard]) -> None:
    """Staff for every ward; the current shift on duty, and many of the previous one clocked out."""
    rng, now = context.rng, context.now
    roles, weights = zip(*STAFF_ROLES, strict=True)
    # Shifts hand over at 07:00, 15:00 and 23:00; the current one began at the last of them.
    since_handover = timedelta(hours=(context.hour - 7) % 8)
    shifts: list[dict[str, Any]] = []
    for ward in wards:
        headcount = round(len(ward.beds) * ward.profile.staff_per_bed * rng.uniform(0.9, 1.1))
        members = [
            {"department_id": ward.id, "name": person_name(rng), "role": role}
            for role in rng.choices(roles, weights, k=headcount)
        ]
        staff_ids = await context.insert(Staff, members)
        on_duty = round(curves.on_duty_share(context.hour) * headcount)
        for index, staff_id in enumerate(rng.sample(staff_ids, headcount)):
            began = now - since_handover + context.hours(-0.25, 0.25)
            if index < on_duty:
                clock_in, clock_out = min(began, now - timedelta(minutes=2)), None
            elif rng.random() < 0.6:
                clock_in = began - 8 * HOUR
                clock_out = min(clock_in + context.hours(7.8, 8.4), now)
            else:
                continue
            shifts.append(
                {
                    "staff_id": staff_id,
                    "department_id": ward.id,
                    "clock_in_at": clock_in,
                    "clock_out_at": clock_out,
                }
            )
    await context.insert(StaffShift, sorted(shifts, key=lambda shift: shift["clock_in_at"]))
