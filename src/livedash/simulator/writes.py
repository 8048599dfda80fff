"""Guarded writes: each names the value it expects to replace, so no one else's change is lost."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Update, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.errors import LivedashError
from livedash.simulator.rates import Moment
from livedash.simulator.state import HospitalState
from livedash.store.models import Bed, BedStatus, Patient, PatientStatus

Event = Callable[[AsyncConnection, HospitalState, random.Random, Moment], Awaitable[None]]
"""One kind of event: writes its rows on the connection and updates the state to match."""


class StaleState(LivedashError):
    """The database no longer holds what the simulator remembers; reload and choose again."""


async def expect(connection: AsyncConnection, statement: Update, rows: int = 1) -> None:
    """Run a guarded UPDATE; `StaleState` unless exactly `rows` rows matched."""
    result = await connection.execute(statement)
    if result.rowcount != rows:
        raise StaleState(f"expected {rows} row(s) in {statement.table}, got {result.rowcount}")


async def insert_row(connection: AsyncConnection, model: Any, **values: Any) -> int:
    """Insert one row of `model` and return its id."""
    result = await connection.execute(insert(model).values(**values).returning(model.id))
    return int(result.scalar_one())


async def set_bed(
    connection: AsyncConnection, bed_id: int, expected: BedStatus, status: BedStatus
) -> None:
    """Move a bed from `expected` to `status`."""
    await expect(
        connection,
        update(Bed).where(Bed.id == bed_id, Bed.status == expected).values(status=status.value),
    )


async def set_patient(
    connection: AsyncConnection, patient_id: int, expected: PatientStatus, **values: Any
) -> None:
    """Update a patient whose status is still `expected`."""
    await expect(
        connection,
        update(Patient)
        .where(Patient.id == patient_id, Patient.status == expected)
        .values(**values),
    )
