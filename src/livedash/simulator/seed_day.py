"""The seeded hospital's day already under way: inpatients in most beds, a waiting room,
patients discharged today and on earlier days with their bills, and today's clinics.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.simulator.catalog import (
    EMERGENCY_CODE,
    DepartmentProfile,
    bill_amount,
    person_name,
)
from livedash.store.models import (
    Admission,
    Appointment,
    AppointmentStatus,
    Bill,
    Patient,
    PatientStatus,
    Payment,
)

HOUR = timedelta(hours=1)
HISTORY_DAYS = 3


class SeedContext:
    """Where and when seeding happens: one connection, one random source, one moment."""

    def __init__(
        self, connection: AsyncConnection, rng: random.Random, now: datetime, zone: tzinfo
    ) -> None:
        self.connection = connection
        self.rng = rng
        self.now = now.astimezone(UTC).replace(tzinfo=None)
        local = now.astimezone(zone)
        self.hour = local.hour + local.minute / 60
        midnight = datetime.combine(local.date(), time(), tzinfo=zone).astimezone(UTC)
        self.day_start = midnight.replace(tzinfo=None)

    async def insert(self, model: Any, rows: list[dict[str, Any]]) -> list[int]:
        """Insert `rows` of `model` and return their ids, in order."""
        if not rows:
            return []
        statement = insert(model).returning(model.id, sort_by_parameter_order=True)
        result = await self.connection.execute(statement, rows)
        return [int(row_id) for row_id in result.scalars()]

    def between(self, start: datetime, end: datetime) -> datetime:
        """A random moment from `start` to `end`."""
        return start + (end - start) * self.rng.random()

    def hours(self, low: float, high: float) -> timedelta:
        """A random duration of `low` to `high` hours."""
        return timedelta(hours=self.rng.uniform(low, high))


@dataclass(frozen=True, slots=True)
class SeededWard:
    """A seeded department with its beds, and those of them that are occupied."""

    id: int
    profile: DepartmentProfile
    beds: list[int]
    occupied: list[int]


async def seed_day(context: SeedContext, wards: list[SeededWard]) -> None:
    """Write the patients, stays, bills, payments and appointments of the day under way."""
    await _Day(context).run(wards)


class _Day:
    def __init__(self, context: SeedContext) -> None:
        self.context = context
        self.rng = context.rng
        self.now = context.now
        self.patients: list[dict[str, Any]] = []
        self.stays: list[tuple[int, dict[str, Any]]] = []
        """(index into `patients`, admission row without its patient id)"""
        self.bills: list[tuple[int, dict[str, Any]]] = []
        self.bed_stays: dict[int, list[tuple[datetime, datetime]]] = {}

    async def run(self, wards: list[SeededWard]) -> None:
        self.inpatients(wards)
        self.waiting_room(wards)
        for days_ago in range(HISTORY_DAYS + 1):
            self.history(wards, days_ago)
        await self.write_patients()
        await self.clinics(wards)

    def ward_for_arrival(self, wards: list[SeededWard], emergency: bool) -> SeededWard:
        if emergency:
            return next(ward for ward in wards if ward.profile.code == EMERGENCY_CODE)
        return self.rng.choices(wards, [ward.profile.arrival_weight for ward in wards])[0]

    def add_patient(
        self,
        ward: SeededWard,
        status: PatientStatus,
        emergency: bool,
        registered_at: datetime,
        discharged_at: datetime | None = None,
    ) -> int:
        self.patients.append(
            {
                "department_id": ward.id,
                "name": person_name(self.rng),
                "status": status.value,
                "emergency": emergency,
                "registered_at": registered_at,
                "discharged_at": discharged_at,
            }
        )
        return len(self.patients) - 1

    def add_stay(
        self,
        patient: int,
        ward: SeededWard,
        bed_id: int | None,
        admitted: datetime,
        left: datetime | None,
    ) -> None:
        if bed_id is not None:
            self.bed_stays.setdefault(bed_id, []).append((admitted, left or self.now))
        admission = {
            "department_id": ward.id,
            "bed_id": bed_id,
            "admitted_at": admitted,
            "discharged_at": left,
        }
        self.stays.append((patient, admission))

    def bed_for(self, ward: SeededWard, admitted: datetime, left: datetime) -> int | None:
        """A bed of `ward` that nobody else held from `admitted` to `left`, if there is one."""
        for bed_id in self.rng.sample(ward.beds, len(ward.beds)):
            stays = self.bed_stays.get(bed_id, [])
            if all(left <= start or end <= admitted for start, end in stays):
                return bed_id
        return None

    def stay_length(self, ward: SeededWard) -> timedelta:
        hours = self.rng.expovariate(1 / ward.profile.stay_hours)
        return timedelta(hours=min(max(hours, 1.0), 3 * ward.profile.stay_hours))

    def inpatients(self, wards: list[SeededWard]) -> None:
        for ward in wards:
            emergency_share = 0.75 if ward.profile.code == EMERGENCY_CODE else 0.08
            for bed_id in ward.occupied:
                admitted = self.now - self.stay_length(ward)
                registered = admitted - self.context.hours(0.2, 3)
                emergency = self.rng.random() < emergency_share
                patient = self.add_patient(ward, PatientStatus.ACTIVE, emergency, registered)
                self.add_stay(patient, ward, bed_id, admitted, None)

    def waiting_room(self, wards: list[SeededWard]) -> None:
        for _ in range(self.rng.randint(8, 16)):
            emergency = self.rng.random() < 0.15
            ward = self.ward_for_arrival(wards, emergency)
            registered = self.now - self.context.hours(0.05, 2.5)
            self.add_patient(ward, PatientStatus.REGISTERED, emergency, registered)

    def history(self, wards: list[SeededWard], days_ago: int) -> None:
        """Patients discharged `days_ago` days ago (0: earlier today), with their bills."""
        if days_ago == 0:
            start, end = self.context.day_start, self.now
            count = round(12 * (end - start) / HOUR * self.rng.uniform(0.85, 1.15))
        else:
            end = self.context.day_start - timedelta(days=days_ago - 1)
            start, count = end - timedelta(days=1), self.rng.randint(110, 140)
        for _ in range(count):
            left = self.context.between(start, end)
            emergency = self.rng.random() < 0.15
            ward = self.ward_for_arrival(wards, emergency)
            if emergency or self.rng.random() < ward.profile.admit_share + 0.15:
                admitted = left - self.stay_length(ward)
                registered = admitted - self.context.hours(0.2, 3)
                patient = self.add_patient(
                    ward, PatientStatus.DISCHARGED, emergency, registered, left
                )
                self.add_stay(patient, ward, self.bed_for(ward, admitted, left), admitted, left)
            else:
                registered = left - self.context.hours(0.4, 4)
                patient = self.add_patient(ward, PatientStatus.DISCHARGED, False, registered, left)
            if self.rng.random() < 0.85:
                created = min(left + self.context.hours(0, 2), self.now)
                paid = None
                if self.rng.random() < 0.7:
                    paid = self.context.between(created, min(created + timedelta(days=2), self.now))
                bill = {
                    "department_id": ward.id,
                    "amount_cents": bill_amount(self.rng, ward.profile.code),
                    "created_at": created,
                    "paid_at": paid,
                }
                self.bills.append((patient, bill))

    async def write_patients(self) -> None:
        patient_ids = await self.context.insert(Patient, self.patients)
        await self.context.insert(
            Admission,
            [{"patient_id": patient_ids[index], **row} for index, row in self.stays],
        )
        bills = [{"patient_id": patient_ids[index], **row} for index, row in self.bills]
        bill_ids = await self.context.insert(Bill, bills)
        payments = [
            {
                "bill_id": bill_id,
                "department_id": bill["department_id"],
                "amount_cents": bill["amount_cents"],
                "paid_at": bill["paid_at"],
            }
            for bill_id, bill in zip(bill_ids, bills, strict=True)
            if bill["paid_at"] is not None
        ]
        await self.context.insert(Payment, sorted(payments, key=lambda payment: payment["paid_at"]))

    async def clinics(self, wards: list[SeededWard]) -> None:
        """Today's outpatient appointments, 08:00 to 18:00, in the state the day has left them."""
        appointments: list[dict[str, Any]] = []
        for ward in wards:
            count = round(ward.profile.appointment_weight * 130 * self.rng.uniform(0.85, 1.15))
            for _ in range(count):
                when = (
                    self.context.day_start
                    + 8 * HOUR
                    + timedelta(minutes=5 * self.rng.randrange(120))
                )
                appointments.append(
                    {
                        "patient_id": None,
                        "department_id": ward.id,
                        "scheduled_at": when,
                        "status": self.appointment_status(when).value,
                    }
                )
        appointments.sort(key=lambda appointment: appointment["scheduled_at"])
        await self.context.insert(Appointment, appointments)

    def appointment_status(self, when: datetime) -> AppointmentStatus:
        if when + HOUR <= self.now:
            outcomes = {
                AppointmentStatus.COMPLETED: 0.82,
                AppointmentStatus.NO_SHOW: 0.08,
                AppointmentStatus.CANCELLED: 0.07,
                AppointmentStatus.CHECKED_IN: 0.03,
            }
        elif when <= self.now:
            outcomes = {
                AppointmentStatus.CHECKED_IN: 0.5,
                AppointmentStatus.COMPLETED: 0.3,
                AppointmentStatus.SCHEDULED: 0.2,
            }
        else:
            outcomes = {AppointmentStatus.SCHEDULED: 0.93, AppointmentStatus.CANCELLED: 0.07}
        return self.rng.choices(list(outcomes), list(outcomes.values()))[0]
