"""The hospital's office work: appointments, bills and payments, and staff shifts."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.simulator import curves
from livedash.simulator.catalog import bill_amount
from livedash.simulator.rates import Moment, pick, take
from livedash.simulator.state import HospitalState, Ward
from livedash.simulator.writes import expect, insert_row
from livedash.store.models import (
    Appointment,
    AppointmentStatus,
    Bill,
    Payment,
    StaffShift,
)

BILLS_FOR_INPATIENTS = 0.2
"""Share of new bills that are interim bills for a patient still in a bed."""


async def appointment_booked(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """An outpatient appointment is booked for later today."""
    ward = pick(rng, [(w, w.profile.appointment_weight) for w in state.wards.values()])
    earliest = moment.now + timedelta(minutes=30)
    latest = min(moment.day_end - timedelta(minutes=15), moment.now + timedelta(hours=8))
    when = earliest + (latest - earliest) * rng.random()
    when = when.replace(second=0, microsecond=0) - timedelta(minutes=when.minute % 5)
    appointment_id = await insert_row(
        connection,
        Appointment,
        patient_id=None,
        department_id=ward.id,
        scheduled_at=when,
        status=AppointmentStatus.SCHEDULED.value,
    )
    ward.scheduled.append(appointment_id)


async def _move_appointment(
    connection: AsyncConnection,
    state: HospitalState,
    rng: random.Random,
    source: Callable[[Ward], list[int]],
    statuses: tuple[AppointmentStatus, AppointmentStatus],
) -> Ward:
    ward = pick(rng, [(w, float(len(source(w)))) for w in state.wards.values()])
    appointment_id = take(rng, source(ward))
    expected, status = statuses
    await expect(
        connection,
        update(Appointment)
        .where(Appointment.id == appointment_id, Appointment.status == expected)
        .values(status=status.value),
    )
    if status == AppointmentStatus.CHECKED_IN:
        ward.checked_in.append(appointment_id)
    return ward


async def appointment_checked_in(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """A booked patient arrives at the clinic desk."""
    await _move_appointment(
        connection,
        state,
        rng,
        lambda w: w.scheduled,
        (AppointmentStatus.SCHEDULED, AppointmentStatus.CHECKED_IN),
    )


async def appointment_completed(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """A checked-in patient has been seen."""
    await _move_appointment(
        connection,
        state,
        rng,
        lambda w: w.checked_in,
        (AppointmentStatus.CHECKED_IN, AppointmentStatus.COMPLETED),
    )


async def appointment_cancelled(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """A booked appointment is cancelled."""
    await _move_appointment(
        connection,
        state,
        rng,
        lambda w: w.scheduled,
        (AppointmentStatus.SCHEDULED, AppointmentStatus.CANCELLED),
    )


async def appointment_no_show(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """A booked patient does not turn up."""
    await _move_appointment(
        connection,
        state,
        rng,
        lambda w: w.scheduled,
        (AppointmentStatus.SCHEDULED, AppointmentStatus.NO_SHOW),
    )


async def bill_created(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """A discharged patient, or now and then one still in a bed, is billed."""
    recent = state.recent_patients
    wards = state.wards.values()
    has_inpatients = any(ward.stays for ward in wards)
    if has_inpatients and (not recent or rng.random() < BILLS_FOR_INPATIENTS):
        ward = pick(rng, [(w, float(len(w.stays))) for w in wards])
        patient_id = rng.choice(ward.stays).patient_id
    else:
        index = rng.randrange(len(recent))
        patient_id, department_id = recent[index]
        del recent[index]
        ward = state.wards[department_id]
    amount = bill_amount(rng, ward.code)
    bill_id = await insert_row(
        connection,
        Bill,
        patient_id=patient_id,
        department_id=ward.id,
        amount_cents=amount,
        created_at=moment.now,
        paid_at=None,
    )
    ward.unpaid.append((bill_id, amount))


async def bill_paid(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """An open bill is paid in full."""
    ward = pick(rng, [(w, float(len(w.unpaid))) for w in state.wards.values()])
    bill_id, amount = take(rng, ward.unpaid)
    await expect(
        connection,
        update(Bill)
        .where(Bill.id == bill_id, Bill.paid_at.is_(None), Bill.amount_cents == amount)
        .values(paid_at=moment.now),
    )
    await insert_row(
        connection,
        Payment,
        bill_id=bill_id,
        department_id=ward.id,
        amount_cents=amount,
        paid_at=moment.now,
    )


async def shift_change(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """In one department, the longest on duty clock out and the longest rested clock in."""
    ward = pick(rng, [(w, float(len(w.on_duty) + len(w.off_duty))) for w in state.wards.values()])
    staff = len(ward.on_duty) + len(ward.off_duty)
    deficit = round(curves.on_duty_share(moment.hour) * staff) - len(ward.on_duty)
    handover = rng.randint(1, 3)
    leaving = ward.on_duty[: min(len(ward.on_duty), handover + max(0, -deficit))]
    arriving = ward.off_duty[: min(len(ward.off_duty), handover + max(0, deficit))]
    del ward.on_duty[: len(leaving)]
    del ward.off_duty[: len(arriving)]
    if leaving:
        await expect(
            connection,
            update(StaffShift)
            .where(
                StaffShift.id.in_([shift_id for _, shift_id in leaving]),
                StaffShift.clock_out_at.is_(None),
            )
            .values(clock_out_at=moment.now),
            rows=len(leaving),
        )
    for staff_id in arriving:
        shift_id = await insert_row(
            connection,
            StaffShift,
            staff_id=staff_id,
            department_id=ward.id,
            clock_in_at=moment.now,
            clock_out_at=None,
        )
        ward.on_duty.append((staff_id, shift_id))
    ward.off_duty.extend(staff_id for staff_id, _ in leaving)
