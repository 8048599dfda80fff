"""How often each kind of hospital event happens: per simulated hour, 0 when impossible now.

Rates depend on the state (only what is possible has a rate; waiting and admitted patients each
carry their own hazard, so queues and occupancy settle instead of drifting) and on the
simulated hour of day. Together they give about 2,000 events a day for a 300-bed hospital.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from livedash.simulator import curves
from livedash.simulator.state import HospitalState, Waiting, Ward

T = TypeVar("T")

ARRIVALS_PER_HOUR = 15.0
EMERGENCY_SHARE = 0.15
SEEN_PER_HOUR = 1.0
"""Each waiting non-emergency patient is seen (admitted or sent home) about once an hour."""
EMERGENCY_ADMISSIONS_PER_HOUR = 1.5
TARGET_OCCUPANCY = 0.75
CLEANINGS_PER_HOUR = 1.0
OUT_OF_SERVICE_PER_HOUR = 0.06
BACK_IN_SERVICE_PER_HOUR = 1 / 30
BOOKINGS_PER_HOUR = 7.0
CHECK_INS_PER_HOUR = 0.25
NO_SHOWS_PER_HOUR = 0.03
CANCELLATIONS_PER_HOUR = 0.02
COMPLETIONS_PER_HOUR = 1.2
BILLS_PER_HOUR = 8.0
PAYMENTS_PER_HOUR = 1 / 8
SHIFT_CHANGES_PER_HOUR = 3.0

KINDS: tuple[str, ...] = (
    "arrival",
    "admission",
    "discharge",
    "transfer",
    "outpatient_done",
    "bed_cleaned",
    "bed_out_of_service",
    "bed_back_in_service",
    "appointment_booked",
    "appointment_checked_in",
    "appointment_completed",
    "appointment_cancelled",
    "appointment_no_show",
    "bill_created",
    "bill_paid",
    "shift_change",
)
"""Every kind of event `step()` can return."""


@dataclass(frozen=True, slots=True)
class Moment:
    """When an event happens: the real time its rows carry and the simulated hour of day."""

    now: datetime
    """Naive UTC, as stored."""
    hour: float
    day_end: datetime
    """The end of today in the hospital's time zone, naive UTC."""


def pick(rng: random.Random, weighted: Sequence[tuple[T, float]]) -> T:
    """One item, chosen with probability proportional to its (non-negative) weight."""
    target = rng.random() * sum(weight for _, weight in weighted)
    for item, weight in weighted:
        if weight > 0 and target < weight:
            return item
        target -= weight
    # Only floating-point rounding gets here.
    return next(item for item, weight in reversed(weighted) if weight > 0)


def take(rng: random.Random, items: list[T]) -> T:
    """Remove and return a random element of `items` in O(1)."""
    index = rng.randrange(len(items))
    item = items[index]
    items[index] = items[-1]
    items.pop()
    return item


def _pressure(ward: Ward) -> float:
    # Discharges speed up when a ward fills and slow down when it empties, the way a bed
    # manager pushes or holds them; it keeps long runs near a realistic occupancy.
    return float(min(max(ward.occupancy() / TARGET_OCCUPANCY, 0.5), 2.0) ** 2)


def _length_of_stay_rate(ward: Ward) -> float:
    return len(ward.stays) / ward.profile.stay_hours * _pressure(ward)


def transfer_targets(state: HospitalState, source: Ward) -> list[tuple[Ward, float]]:
    """Wards that can take a patient from `source` now, weighted by how often they do."""
    return [
        (ward, ward.profile.transfer_in_weight)
        for ward in state.wards.values()
        if ward is not source and ward.free and ward.profile.transfer_in_weight > 0
    ]


def admission_queues(ward: Ward) -> list[tuple[list[Waiting], float]]:
    """`ward`'s emergency and other waiting patients, each with its rate of admission."""
    if not ward.free:
        return []
    return [
        (ward.emergencies, len(ward.emergencies) * EMERGENCY_ADMISSIONS_PER_HOUR),
        (ward.waiting, len(ward.waiting) * SEEN_PER_HOUR * ward.profile.admit_share),
    ]


def admission_weight(ward: Ward) -> float:
    """Rate of admissions into `ward`: its waiting patients' hazards, if it has a free bed."""
    return sum(rate for _, rate in admission_queues(ward))


def outpatient_weight(ward: Ward) -> float:
    """Rate at which `ward` sends waiting non-emergency patients home."""
    return len(ward.waiting) * SEEN_PER_HOUR * (1 - ward.profile.admit_share)


def discharge_weight(ward: Ward) -> float:
    """Rate of discharges from `ward` before the daily curve."""
    return _length_of_stay_rate(ward) * (1 - ward.profile.transfer_share)


def transfer_weight(state: HospitalState, ward: Ward) -> float:
    """Rate of transfers out of `ward`, 0 when no other ward has a free bed."""
    if not ward.stays or not transfer_targets(state, ward):
        return 0.0
    return _length_of_stay_rate(ward) * ward.profile.transfer_share


def event_rates(state: HospitalState, moment: Moment) -> list[tuple[str, float]]:
    """Each kind of event with its rate per simulated hour, 0 when it cannot happen now."""
    wards = list(state.wards.values())
    hour = moment.hour
    daytime = curves.DAYTIME.at(hour)
    clinic = curves.CLINIC.at(hour)
    scheduled = sum(len(ward.scheduled) for ward in wards)
    can_book = moment.day_end - moment.now >= timedelta(minutes=45) and any(
        ward.profile.appointment_weight > 0 for ward in wards
    )
    has_patients = bool(state.recent_patients) or any(ward.stays for ward in wards)
    has_staff = any(ward.on_duty or ward.off_duty for ward in wards)
    rates = {
        "arrival": ARRIVALS_PER_HOUR * curves.ARRIVALS.at(hour),
        "admission": sum(admission_weight(ward) for ward in wards),
        "discharge": sum(discharge_weight(ward) for ward in wards) * (0.5 + 0.5 * daytime),
        "transfer": sum(transfer_weight(state, ward) for ward in wards),
        "outpatient_done": sum(outpatient_weight(ward) for ward in wards),
        "bed_cleaned": sum(len(ward.cleaning) for ward in wards)
        * CLEANINGS_PER_HOUR
        * (0.5 + 0.5 * daytime),
        "bed_out_of_service": OUT_OF_SERVICE_PER_HOUR if any(w.free for w in wards) else 0.0,
        "bed_back_in_service": sum(len(ward.out_of_service) for ward in wards)
        * BACK_IN_SERVICE_PER_HOUR,
        "appointment_booked": BOOKINGS_PER_HOUR * clinic if can_book else 0.0,
        "appointment_checked_in": scheduled * CHECK_INS_PER_HOUR * clinic,
        "appointment_completed": sum(len(ward.checked_in) for ward in wards) * COMPLETIONS_PER_HOUR,
        "appointment_cancelled": scheduled * CANCELLATIONS_PER_HOUR,
        "appointment_no_show": scheduled * NO_SHOWS_PER_HOUR * clinic,
        "bill_created": BILLS_PER_HOUR * daytime if has_patients else 0.0,
        "bill_paid": sum(len(ward.unpaid) for ward in wards) * PAYMENTS_PER_HOUR * daytime,
        "shift_change": SHIFT_CHANGES_PER_HOUR * curves.SHIFTS.at(hour) if has_staff else 0.0,
    }
    return [(kind, rates[kind]) for kind in KINDS]
