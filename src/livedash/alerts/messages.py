"""What screens are told of alerts, and how: the `alert` event's model, and the screens.

The gateway delivers (realtime); alerts only say to whom: the screens that may see a
department, or one user's own. The composition root hands over the gateway's `Screens`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel

ALERT_EVENT = "alert"
RAISED, ESCALATED, RESOLVED = "raised", "escalated", "resolved"
"""What happened to an alert, as notifications tell it."""
_AT = datetime(2026, 11, 23, 9, 30, 0, 125000, tzinfo=UTC)


class Screens(Protocol):
    """Where alerts and notifications are pushed (livedash.realtime.outbox.RoomScreens)."""

    async def to_department(self, department: str | None, event: str, payload: Any) -> None:
        """Every socket whose identity may see `department` (None: the hospital)."""
        ...

    async def to_user(self, username: str, event: str, payload: Any) -> None:
        """Every socket of `username`."""
        ...


class AlertMessage(BaseModel):
    """`alert`: an alert, raised by a rule or written by the hospital's application, or a
    change of it, as it happens.

    Sent to every socket whose identity may see the alert's department (`null`: the
    hospital; super_admins only). `state` is the rule's condition: `firing`, `recovering`
    (cleared, waiting for `keep_firing_for`), `stale` (data too old to judge) or `normal`
    (recovered: `status` is then `resolved`); `null` for an alert without a rule. `value` is
    the last value against `threshold` (fire) and `clear_at` (clear). `status`: `active`,
    `acknowledged` (until `acknowledged_until`, if set) or `resolved` (`resolved_by` a person,
    or `null` when the condition cleared).
    """

    id: int
    rule: str | None
    department: str | None
    severity: str
    state: str | None
    status: str
    title: str
    value: float | None
    threshold: float | None
    clear_at: float | None
    raised_at: datetime
    at: datetime
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    acknowledgement_note: str | None = None
    acknowledged_until: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    expected: float | None = None
    """Anomaly rules: what the same hour of the week usually is, and the band around it."""
    band_low: float | None = None
    band_high: float | None = None
    metric: str | None = None
    """The metric a threshold rule watches (its values are that metric's: a rate, money, a
    count), so that every screen can write them as the dashboard does; None otherwise."""
    escalation_level: int = 0
    """How many tiers were told because nobody acknowledged it in time (1: the department's
    admins; 2: the super_admins)."""


ALERT_EVENT_DOC: tuple[str, str, type[BaseModel], BaseModel, str] = (
    "out",
    "alert",
    AlertMessage,
    AlertMessage(
        id=412,
        rule="department-full",
        department="CARD",
        severity="critical",
        state="firing",
        status="acknowledged",
        title="Every bed in service is occupied",
        value=1.0,
        threshold=0.99,
        clear_at=0.95,
        raised_at=_AT,
        at=_AT,
        acknowledged_by="card-admin",
        acknowledged_at=_AT,
        acknowledgement_note="two discharges before noon",
    ),
    "An alert raised by a rule, or a change of it (its condition's state, an "
    "acknowledgement, a resolution), sent as it happens to every authenticated socket "
    "that may see the alert's department; no subscription is needed. A client keeps the "
    "latest message of each `id`. The open alerts at any moment: `GET /api/alerts`.",
)
"""The `alert` event's entry in the realtime API reference (docs/api.md)."""
