"""What each row adds to the day counters and to the hourly roll-ups, stated once.

A contribution function maps one row to `Contribution`s. The engine adds those with a
`family` to its counters (see `definitions.FAMILY_METRICS`), the history recorder those with
a `series` to its roll-ups; each adds them for a new row and subtracts them for an old one,
for the row's department and for the hospital. A contribution with a moment (`at`, naive
UTC) is counted on the hospital-time date of it by the engine and in its hospital-time hour
by the recorder; rows whose moment is missing contribute nothing there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from livedash.changefeed.base import Row
from livedash.changefeed.rows import parse_timestamp
from livedash.metrics.definitions import ALERT_SEVERITIES, APPOINTMENT_STATUSES


class Contribution(NamedTuple):
    """`amount` for a counter `family` (its key goes on with `detail`), a roll-up `series`,
    or both; either may be None."""

    family: str | None
    amount: int = 1
    detail: tuple[Any, ...] = ()
    at: datetime | None = None
    series: str | None = None


Contributions = Iterator[Contribution]


def patient(row: Row) -> Contributions:
    status = row.get("status")
    yield Contribution("patients_total")
    yield Contribution("patients_status", detail=(status,))
    if row.get("emergency") and status != "discharged":
        yield Contribution("patients_emergency")
    registered = parse_timestamp(row.get("registered_at"))
    if registered is not None:
        yield Contribution("patients_registered_on", at=registered)
        if row.get("emergency"):
            yield Contribution(None, at=registered, series="emergency_arrivals")


def appointment(row: Row) -> Contributions:
    scheduled = parse_timestamp(row.get("scheduled_at"))
    if scheduled is None:
        return
    status = row.get("status")
    if status in APPOINTMENT_STATUSES:
        completed = "appointments_completed" if status == "completed" else None
        yield Contribution("appointments", detail=(status,), at=scheduled, series=completed)
    else:
        yield Contribution("appointments_other", at=scheduled)


def staff_shift(row: Row) -> Contributions:
    if row.get("clock_out_at") is None:
        yield Contribution("staff_on_duty")


def admission(row: Row) -> Contributions:
    admitted = parse_timestamp(row.get("admitted_at"))
    if admitted is not None:
        yield Contribution("admissions_on", at=admitted, series="admissions")
    discharged = parse_timestamp(row.get("discharged_at"))
    if discharged is None:
        return
    yield Contribution("discharges_on", at=discharged, series="discharges")
    if admitted is not None:
        stay = int((discharged - admitted).total_seconds())
        yield Contribution("stays_on", at=discharged)
        yield Contribution("stay_seconds_on", max(stay, 0), at=discharged)


def payment(row: Row) -> Contributions:
    paid = parse_timestamp(row.get("paid_at"))
    amount = row.get("amount_cents")
    if paid is not None and isinstance(amount, int):
        yield Contribution("revenue_on", amount, at=paid, series="revenue")


def alert(row: Row) -> Contributions:
    severity = row.get("severity")
    if row.get("status") != "resolved" and severity in ALERT_SEVERITIES:
        yield Contribution("alerts_active", detail=(severity,))


CONTRIBUTIONS: Mapping[str, Callable[[Row], Contributions]] = {
    "patients": patient,
    "appointments": appointment,
    "staff_shifts": staff_shift,
    "admissions": admission,
    "payments": payment,
    "alerts": alert,
}
"""Contribution functions by table; rooms, beds and departments are handled by the engine."""
