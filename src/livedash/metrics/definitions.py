"""The metrics livedash serves: name, tier and meaning, declared once.

Every metric exists for the whole hospital (department `None`) and for each department.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Tier(enum.StrEnum):
    """How urgently a metric's changes must reach a screen."""

    CRITICAL = "critical"
    STANDARD = "standard"
    HISTORICAL = "historical"


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    name: str
    tier: Tier
    description: str


_DEFINITIONS = (
    MetricDefinition("patients_total", Tier.CRITICAL, "Patients on record"),
    MetricDefinition("patients_active", Tier.CRITICAL, "Patients currently under care"),
    MetricDefinition("patients_waiting", Tier.CRITICAL, "Registered patients not yet admitted"),
    MetricDefinition(
        "patients_new_today", Tier.CRITICAL, "Patients registered today (hospital time)"
    ),
    MetricDefinition("patients_emergency", Tier.CRITICAL, "Emergency patients not yet discharged"),
    MetricDefinition("beds_total", Tier.CRITICAL, "Beds"),
    MetricDefinition("beds_occupied", Tier.CRITICAL, "Occupied beds"),
    MetricDefinition("beds_free", Tier.CRITICAL, "Free beds"),
    MetricDefinition("beds_cleaning", Tier.CRITICAL, "Beds being cleaned"),
    MetricDefinition("beds_out_of_service", Tier.CRITICAL, "Beds out of service"),
    MetricDefinition(
        "bed_occupancy_rate", Tier.CRITICAL, "Occupied beds / beds in service (0 to 1)"
    ),
    MetricDefinition("rooms_total", Tier.CRITICAL, "Rooms"),
    MetricDefinition("rooms_occupied", Tier.CRITICAL, "Rooms with at least one occupied bed"),
    MetricDefinition("room_occupancy_rate", Tier.CRITICAL, "Occupied rooms / rooms (0 to 1)"),
    MetricDefinition("staff_on_duty", Tier.CRITICAL, "Staff clocked in now"),
    MetricDefinition(
        "appointments_today", Tier.STANDARD, "Appointments scheduled for today, any status"
    ),
    MetricDefinition(
        "appointments_completed_today", Tier.STANDARD, "Today's appointments completed"
    ),
)

METRICS: dict[str, MetricDefinition] = {definition.name: definition for definition in _DEFINITIONS}
"""Every metric by name."""

METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
