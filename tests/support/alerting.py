"""What the alert and notification tests share: a rule that fires on two busy ED beds, a
server running it, bearer headers, and beds made busy or free as the hospital would."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from livedash.settings import Settings
from tests.support.writers import Write

BEDS_BUSY = """
rules:
  - name: beds-busy
    metric: beds_occupied
    scope: each_department
    condition: above
    threshold: 1
    severity: high
    summary: More than one bed occupied
"""
"""A HIGH alert per department as soon as more than one of its beds is occupied."""


def with_rules(settings: Settings, directory: Path, rules: str = BEDS_BUSY) -> Settings:
    """`settings` with `rules` (YAML) as the alert rules file."""
    path = directory / "rules.yaml"
    path.write_text(rules)
    return settings.model_copy(update={"alert_rules_file": path})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def set_beds(
    writer: Write, hospital: dict[str, int], beds: Iterable[str], status: str
) -> None:
    """Set each bed's status, one transaction each (`hospital`: the `hospital` fixture)."""
    for bed in beds:
        await writer("UPDATE beds SET status = ? WHERE id = ?", (status, hospital[bed]))
