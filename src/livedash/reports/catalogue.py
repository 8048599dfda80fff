"""Every report type livedash generates: its name, title and builder."""

from __future__ import annotations

from livedash.reports.care import admissions, emergency, occupancy
from livedash.reports.operations import alerts, appointments, revenue
from livedash.reports.sections import Builder

REPORT_TYPES: dict[str, tuple[str, Builder]] = {
    "occupancy": ("Occupancy and length of stay", occupancy),
    "admissions": ("Admissions and discharges", admissions),
    "emergency": ("Emergency department", emergency),
    "appointments": ("Appointments", appointments),
    "revenue": ("Revenue", revenue),
    "alerts": ("Alerts", alerts),
}
