"""What the simulated hospital is made of: departments, their rhythms, names and roles."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DepartmentProfile:
    """How one department behaves; rates are per simulated hour."""

    code: str
    name: str
    beds: int
    arrival_weight: float
    """Share of non-emergency arrivals registered with this department."""
    admit_share: float
    """Share of its waiting non-emergency patients who end up admitted rather than sent home."""
    stay_hours: float
    """Mean length of stay of an admitted patient before discharge or transfer."""
    transfer_share: float
    """Share of stays that end in a transfer to another department rather than a discharge."""
    transfer_in_weight: float
    """How likely this department is to receive a patient transferred from another."""
    staff_per_bed: float
    appointment_weight: float
    bill_median_cents: int


DEPARTMENTS: tuple[DepartmentProfile, ...] = (
    DepartmentProfile("ED", "Emergency", 40, 0.22, 0.08, 12.0, 0.45, 0.0, 0.9, 0.0, 45_000),
    DepartmentProfile("CARD", "Cardiology", 58, 0.18, 0.10, 96.0, 0.03, 0.30, 0.6, 0.25, 260_000),
    DepartmentProfile("SURG", "Surgery", 68, 0.15, 0.08, 120.0, 0.04, 0.35, 0.7, 0.20, 620_000),
    DepartmentProfile("PED", "Pediatrics", 42, 0.17, 0.15, 60.0, 0.02, 0.15, 0.6, 0.20, 60_000),
    DepartmentProfile("MAT", "Maternity", 46, 0.12, 0.45, 48.0, 0.01, 0.05, 0.6, 0.15, 310_000),
    DepartmentProfile("ONC", "Oncology", 46, 0.13, 0.06, 144.0, 0.02, 0.15, 0.6, 0.20, 410_000),
)

EMERGENCY_CODE = "ED"

DEFAULT_PROFILE = DepartmentProfile("", "", 0, 0.05, 0.10, 72.0, 0.02, 0.05, 0.6, 0.05, 150_000)
"""For departments the hospital's main application created and this catalog does not know."""

PROFILES: dict[str, DepartmentProfile] = {profile.code: profile for profile in DEPARTMENTS}


def profile_for(code: str) -> DepartmentProfile:
    """The profile of the department with `code`, or a neutral default."""
    return PROFILES.get(code, DEFAULT_PROFILE)


STAFF_ROLES: tuple[tuple[str, float], ...] = (
    ("nurse", 0.52),
    ("physician", 0.20),
    ("nursing assistant", 0.15),
    ("technician", 0.08),
    ("clerk", 0.05),
)

_FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ana", "Ben", "Carla", "Chen", "Dara", "David", "Elena", "Emil",
    "Fatima", "Grace", "Hana", "Ines", "Ivan", "Jonas", "Julia", "Kofi", "Lara", "Leo", "Lina",
    "Marco", "Maya", "Mei", "Nadia", "Noah", "Omar", "Priya", "Rosa", "Sam", "Sara", "Tomas",
    "Uma", "Victor", "Yara", "Yusuf", "Zoe",
)  # fmt: skip
_LAST_NAMES = (
    "Adeyemi", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jansen", "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Quinn", "Rossi",
    "Schmidt", "Silva", "Tanaka", "Varga", "Weber", "Wong", "Yilmaz", "Zhang",
)  # fmt: skip


def person_name(rng: random.Random) -> str:
    """A plausible full name."""
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"


def bill_amount(rng: random.Random, code: str) -> int:
    """A bill's amount in cents for a stay or visit in department `code`."""
    return max(1_500, round(profile_for(code).bill_median_cents * rng.lognormvariate(0.0, 0.6)))
