"""What each row adds to the counters.

A contribution function maps one row to `(key, amount)` pairs; the engine adds them for a new
row and subtracts them for an old one, for the row's department and for the hospital. Keys
start with a counter family (see `definitions.FAMILY_METRICS`). Date-keyed families use the
hospital-time date of the row's timestamp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from typing import Any

from livedash.changefeed.base import Row
from livedash.metrics.definitions import ALERT_SEVERITIES, APPOINTMENT_STATUSES, Key

LocalDate = Callable[[Any], date | None]
Contribution = Iterator[tuple[Key, int]]


def patient(row: Row, local_date: LocalDate) -> Contribution:
    status = row.get("status")
    yield ("patients_total",), 1
    yield ("patients_status", status), 1
    if row.get("emergency") and status != "discharged":
        yield ("patients_emergency",), 1
    registered = local_date(row.get("registered_at"))
    if registered is not None:
        yield ("patients_registered_on", registered), 1


def appointment(row: Row, local_date: LocalDate) -> Contribution:
    scheduled = local_date(row.get("scheduled_at"))
    if scheduled is None:
        return
    status = row.get("status")
    if status in APPOINTMENT_STATUSES:
        yield ("appointments", scheduled, status), 1
    else:
        yield ("appointments_other", scheduled), 1


def staff_shift(row: Row, local_date: LocalDate) -> Contribution:
    if row.get("clock_out_at") is None:
        yield ("staff_on_duty",), 1


def admission(row: Row, local_date: LocalDate) -> Contribution:
    admitted_at, discharged_at = row.get("admitted_at"), row.get("discharged_at")
    admitted = local_date(admitted_at)
    if admitted is not None:
        yield ("admissions_on", admitted), 1
    discharged = local_date(discharged_at)
    if discharged is None:
        return
    yield ("discharges_on", discharged), 1
    if isinstance(admitted_at, datetime) and isinstance(discharged_at, datetime):
        stay = int((discharged_at - admitted_at).total_seconds())
        yield ("stays_on", discharged), 1
        yield ("stay_seconds_on", discharged), max(stay, 0)


def payment(row: Row, local_date: LocalDate) -> Contribution:
    paid = local_date(row.get("paid_at"))
    amount = row.get("amount_cents")
    if paid is not None and isinstance(amount, int):
        yield ("revenue_on", paid), amount


def alert(row: Row, local_date: LocalDate) -> Contribution:
    severity = row.get("severity")
    if row.get("status") != "resolved" and severity in ALERT_SEVERITIES:
        yield ("alerts_active", severity), 1


CONTRIBUTIONS: Mapping[str, Callable[[Row, LocalDate], Contribution]] = {
    "patients": patient,
    "appointments": appointment,
    "staff_shifts": staff_shift,
    "admissions": admission,
    "payments": payment,
    "alerts": alert,
}
"""Contribution functions by table; rooms, beds and departments are handled by the engine."""
