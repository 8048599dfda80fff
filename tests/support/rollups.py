"""The hourly roll-ups counted again from the rows, and as the service stored them: the two
must be equal, whatever crashed on the way."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from tests.support.cases import CaseWriter
from tests.support.operations import ZONE

Rollups = dict[tuple[str, int, datetime], int]


def _hour(value: str | datetime | None) -> datetime | None:
    """The UTC start of the Berlin hour holding a stored timestamp (written independently)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = moment.replace(tzinfo=UTC).astimezone(ZONE)
    return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC).replace(tzinfo=None)


async def recount(read: CaseWriter) -> Rollups:
    """Every count series by (series, department or 0, hour), straight from the rows."""
    totals: Counter[tuple[str, int, datetime]] = Counter()
    queries = {
        "admissions": "SELECT department_id, admitted_at, 1 FROM admissions",
        "discharges": "SELECT department_id, discharged_at, 1 FROM admissions",
        "emergency_arrivals": "SELECT department_id, registered_at, 1 FROM patients "
        "WHERE emergency",
        "appointments_completed": "SELECT department_id, scheduled_at, 1 FROM appointments "
        "WHERE status = 'completed'",
        "revenue": "SELECT department_id, paid_at, amount_cents FROM payments",
    }
    for series, sql in queries.items():
        for department, moment, amount in await read.fetch(sql):
            hour = _hour(moment)
            if hour is None:
                continue
            totals[series, 0, hour] += amount
            if department:
                totals[series, department, hour] += amount
    return {key: amount for key, amount in totals.items() if amount}


async def stored(read: CaseWriter) -> Rollups:
    rows = await read.fetch(
        "SELECT series, department_id, hour_start, amount FROM metric_rollups "
        "WHERE series <> 'occupancy' AND amount <> 0"
    )
    # SQLite gives the hour back as text, PostgreSQL as a datetime.
    return {
        (s, d, datetime.fromisoformat(h) if isinstance(h, str) else h): a for s, d, h, a in rows
    }
