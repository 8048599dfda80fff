"""Patient flow and beds: arrivals, admissions, transfers, discharges and housekeeping."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.simulator.catalog import EMERGENCY_CODE, person_name
from livedash.simulator.rates import (
    EMERGENCY_SHARE,
    Moment,
    admission_queues,
    admission_weight,
    discharge_weight,
    outpatient_weight,
    pick,
    take,
    transfer_targets,
    transfer_weight,
)
from livedash.simulator.state import HospitalState, Stay, Waiting, Ward
from livedash.simulator.writes import expect, insert_row, set_bed, set_patient
from livedash.store.models import Admission, BedStatus, Patient, PatientStatus


async def _close_stay(
    connection: AsyncConnection, state: HospitalState, stay: Stay, now: datetime
) -> None:
    """Close `stay`'s admission and send its bed to cleaning."""
    await expect(
        connection,
        update(Admission)
        .where(Admission.id == stay.admission_id, Admission.discharged_at.is_(None))
        .values(discharged_at=now),
    )
    if stay.bed_id is not None:
        await set_bed(connection, stay.bed_id, BedStatus.OCCUPIED, BedStatus.CLEANING)
        bed_ward = state.wards[state.bed_ward[stay.bed_id]]
        bed_ward.occupied -= 1
        bed_ward.cleaning.append(stay.bed_id)


async def _open_stay(
    connection: AsyncConnection, rng: random.Random, ward: Ward, patient_id: int, now: datetime
) -> None:
    """Put `patient_id` in a free bed of `ward` under a new admission."""
    bed_id = take(rng, ward.free)
    await set_bed(connection, bed_id, BedStatus.FREE, BedStatus.OCCUPIED)
    admission_id = await insert_row(
        connection,
        Admission,
        patient_id=patient_id,
        department_id=ward.id,
        bed_id=bed_id,
        admitted_at=now,
        discharged_at=None,
    )
    ward.occupied += 1
    ward.stays.append(Stay(patient_id, ward.id, admission_id, bed_id))


async def arrival(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """A patient registers; about 15% are emergencies and go to the ED."""
    emergency = rng.random() < EMERGENCY_SHARE
    emergency_ward = state.ward_by_code(EMERGENCY_CODE)
    if emergency and emergency_ward is not None:
        ward = emergency_ward
    else:
        ward = pick(rng, [(w, w.profile.arrival_weight) for w in state.wards.values()])
    patient_id = await insert_row(
        connection,
        Patient,
        department_id=ward.id,
        name=person_name(rng),
        status=PatientStatus.REGISTERED.value,
        emergency=emergency,
        registered_at=moment.now,
        discharged_at=None,
    )
    queue = ward.emergencies if emergency else ward.waiting
    queue.append(Waiting(patient_id, ward.id, emergency))


async def admission(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """The longest-waiting patient of a ward with a free bed is admitted into one."""
    ward = pick(rng, [(w, admission_weight(w)) for w in state.wards.values()])
    patient = pick(rng, admission_queues(ward)).pop(0)
    await set_patient(
        connection, patient.patient_id, PatientStatus.REGISTERED, status=PatientStatus.ACTIVE.value
    )
    await _open_stay(connection, rng, ward, patient.patient_id, moment.now)


async def discharge(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """An inpatient goes home; their bed needs cleaning."""
    ward = pick(rng, [(w, discharge_weight(w)) for w in state.wards.values()])
    stay = take(rng, ward.stays)
    await set_patient(
        connection,
        stay.patient_id,
        PatientStatus.ACTIVE,
        status=PatientStatus.DISCHARGED.value,
        discharged_at=moment.now,
    )
    await _close_stay(connection, state, stay, moment.now)
    state.recent_patients.append((stay.patient_id, stay.department_id))


async def transfer(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """An inpatient moves to a free bed in another department."""
    source = pick(rng, [(w, transfer_weight(state, w)) for w in state.wards.values()])
    target = pick(rng, transfer_targets(state, source))
    stay = take(rng, source.stays)
    await set_patient(connection, stay.patient_id, PatientStatus.ACTIVE, department_id=target.id)
    await _close_stay(connection, state, stay, moment.now)
    await _open_stay(connection, rng, target, stay.patient_id, moment.now)


async def outpatient_done(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """A waiting non-emergency patient is treated and sent home without a bed."""
    ward = pick(rng, [(w, outpatient_weight(w)) for w in state.wards.values()])
    patient = take(rng, ward.waiting)
    await set_patient(
        connection,
        patient.patient_id,
        PatientStatus.REGISTERED,
        status=PatientStatus.DISCHARGED.value,
        discharged_at=moment.now,
    )
    state.recent_patients.append((patient.patient_id, ward.id))


async def _move_bed(
    connection: AsyncConnection,
    state: HospitalState,
    rng: random.Random,
    source: Callable[[Ward], list[int]],
    target: Callable[[Ward], list[int]],
    statuses: tuple[BedStatus, BedStatus],
) -> None:
    ward = pick(rng, [(w, float(len(source(w)))) for w in state.wards.values()])
    bed_id = take(rng, source(ward))
    await set_bed(connection, bed_id, *statuses)
    target(ward).append(bed_id)


async def bed_cleaned(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """Housekeeping finishes a bed."""
    await _move_bed(
        connection,
        state,
        rng,
        lambda w: w.cleaning,
        lambda w: w.free,
        (BedStatus.CLEANING, BedStatus.FREE),
    )


async def bed_out_of_service(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """A free bed breaks down or is blocked for maintenance."""
    await _move_bed(
        connection,
        state,
        rng,
        lambda w: w.free,
        lambda w: w.out_of_service,
        (BedStatus.FREE, BedStatus.OUT_OF_SERVICE),
    )


async def bed_back_in_service(
    connection: AsyncConnection, state: HospitalState, rng: random.Random, moment: Moment
) -> None:
    """A repaired bed is free again."""
    await _move_bed(
        connection,
        state,
        rng,
        lambda w: w.out_of_service,
        lambda w: w.free,
        (BedStatus.OUT_OF_SERVICE, BedStatus.FREE),
    )
