"""What the simulator knows about the hospital, read from the database like any client would."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.errors import ConfigurationError
from livedash.simulator.catalog import DepartmentProfile, profile_for
from livedash.store.models import (
    Admission,
    Appointment,
    AppointmentStatus,
    Bed,
    BedStatus,
    Bill,
    Department,
    Patient,
    PatientStatus,
    Room,
    Staff,
    StaffShift,
)

RECENT_PATIENTS = 200
"""How many recently discharged patients are remembered as candidates for a bill."""


@dataclass(slots=True)
class Waiting:
    patient_id: int
    department_id: int
    emergency: bool


@dataclass(slots=True)
class Stay:
    patient_id: int
    department_id: int
    admission_id: int
    bed_id: int | None


@dataclass(slots=True)
class Ward:
    """One department's beds, patients, staff, appointments and open bills."""

    id: int
    code: str
    profile: DepartmentProfile
    beds: int = 0
    occupied: int = 0
    free: list[int] = field(default_factory=list)
    cleaning: list[int] = field(default_factory=list)
    out_of_service: list[int] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    emergencies: list[Waiting] = field(default_factory=list)
    stays: list[Stay] = field(default_factory=list)
    on_duty: list[tuple[int, int]] = field(default_factory=list)
    """(staff id, open shift id)"""
    off_duty: list[int] = field(default_factory=list)
    scheduled: list[int] = field(default_factory=list)
    checked_in: list[int] = field(default_factory=list)
    unpaid: list[tuple[int, int]] = field(default_factory=list)
    """(bill id, amount in cents)"""

    def occupancy(self) -> float:
        """Occupied beds over beds in service (0 when none are in service)."""
        in_service = self.beds - len(self.out_of_service)
        return self.occupied / in_service if in_service > 0 else 0.0


@dataclass(slots=True)
class HospitalState:
    wards: dict[int, Ward]
    bed_ward: dict[int, int]
    """Department id of every bed, by bed id."""
    recent_patients: deque[tuple[int, int]] = field(
        default_factory=lambda: deque(maxlen=RECENT_PATIENTS)
    )
    """(patient id, department id) of patients discharged lately and not billed yet."""

    def ward_by_code(self, code: str) -> Ward | None:
        """The ward with department `code`, if the hospital has one."""
        return next((ward for ward in self.wards.values() if ward.code == code), None)


async def load_state(connection: AsyncConnection, day_end: datetime) -> HospitalState:
    """Read the state the simulator acts on; open appointments up to `day_end` (naive UTC)."""
    wards = {
        row.id: Ward(row.id, row.code, profile_for(row.code))
        for row in await connection.execute(
            select(Department.id, Department.code).order_by(Department.id)
        )
    }
    if not wards:
        raise ConfigurationError("the hospital has no departments; seed the database first")
    state = HospitalState(wards=wards, bed_ward={})

    beds = select(Bed.id, Room.department_id, Bed.status).join(Room, Room.id == Bed.room_id)
    for bed_id, department_id, status in await connection.execute(beds.order_by(Bed.id)):
        ward = wards[department_id]
        state.bed_ward[bed_id] = department_id
        ward.beds += 1
        if status == BedStatus.OCCUPIED:
            ward.occupied += 1
        elif status == BedStatus.FREE:
            ward.free.append(bed_id)
        elif status == BedStatus.CLEANING:
            ward.cleaning.append(bed_id)
        elif status == BedStatus.OUT_OF_SERVICE:
            ward.out_of_service.append(bed_id)

    waiting = select(Patient.id, Patient.department_id, Patient.emergency).where(
        Patient.status == PatientStatus.REGISTERED
    )
    for patient_id, department_id, emergency in await connection.execute(
        waiting.order_by(Patient.id)
    ):
        ward = wards[department_id]
        queue = ward.emergencies if emergency else ward.waiting
        queue.append(Waiting(patient_id, department_id, bool(emergency)))

    stays: dict[int, Stay] = {}
    active = (
        select(Patient.id, Patient.department_id, Admission.id, Admission.bed_id)
        .join(Admission, Admission.patient_id == Patient.id)
        .where(Patient.status == PatientStatus.ACTIVE, Admission.discharged_at.is_(None))
        .order_by(Admission.id)
    )
    for patient_id, department_id, admission_id, stay_bed in await connection.execute(active):
        # Two open admissions would be the main application's inconsistency; act on the latest.
        stays[patient_id] = Stay(patient_id, department_id, admission_id, stay_bed)
    for stay in sorted(stays.values(), key=lambda stay: stay.admission_id):
        wards[stay.department_id].stays.append(stay)

    open_shifts = {
        staff_id: shift_id
        for shift_id, staff_id in await connection.execute(
            select(StaffShift.id, StaffShift.staff_id)
            .where(StaffShift.clock_out_at.is_(None))
            .order_by(StaffShift.id)
        )
    }
    for staff_id, department_id in await connection.execute(
        select(Staff.id, Staff.department_id).order_by(Staff.id)
    ):
        ward = wards[department_id]
        if staff_id in open_shifts:
            ward.on_duty.append((staff_id, open_shifts[staff_id]))
        else:
            ward.off_duty.append(staff_id)
    for ward in wards.values():
        # Longest on duty first: they are the next to clock out.
        ward.on_duty.sort(key=lambda on_duty: on_duty[1])

    appointments = select(Appointment.id, Appointment.department_id, Appointment.status).where(
        Appointment.status.in_([AppointmentStatus.SCHEDULED, AppointmentStatus.CHECKED_IN]),
        Appointment.scheduled_at < day_end,
    )
    for appointment_id, department_id, status in await connection.execute(
        appointments.order_by(Appointment.id)
    ):
        ward = wards[department_id]
        if status == AppointmentStatus.SCHEDULED:
            ward.scheduled.append(appointment_id)
        else:
            ward.checked_in.append(appointment_id)

    unpaid = select(Bill.id, Bill.department_id, Bill.amount_cents).where(Bill.paid_at.is_(None))
    for bill_id, department_id, amount in await connection.execute(unpaid.order_by(Bill.id)):
        wards[department_id].unpaid.append((bill_id, amount))

    recent = (
        select(Patient.id, Patient.department_id)
        .where(
            Patient.status == PatientStatus.DISCHARGED,
            Patient.id.not_in(select(Bill.patient_id).where(Bill.patient_id.is_not(None))),
        )
        .order_by(Patient.id.desc())
        .limit(RECENT_PATIENTS)
    )
    rows = list(await connection.execute(recent))
    state.recent_patients.extend((row.id, row.department_id) for row in reversed(rows))
    return state
