"""The `notification` event: one new in-app notification, pushed to its user's sockets."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

NOTIFICATION_EVENT = "notification"
_AT = datetime(2026, 11, 23, 9, 30, 0, 125000, tzinfo=UTC)


class NotificationMessage(BaseModel):
    """`notification`: one new in-app notification of the signed-in user, as it is written.

    `event`: `raised` (a new alert), `escalated` (nobody acknowledged it in time; addressed
    to the next tier) or `resolved`. The history and the unread count: `GET
    /api/notifications`.
    """

    id: int
    alert_id: int | None
    event: str
    severity: str
    title: str
    department: str | None
    created_at: datetime
    read: bool = False


NOTIFICATION_EVENT_DOC: tuple[str, str, type[BaseModel], BaseModel, str] = (
    "out",
    "notification",
    NotificationMessage,
    NotificationMessage(
        id=9051,
        alert_id=412,
        event="escalated",
        severity="critical",
        title="Every bed in service is occupied",
        department="CARD",
        created_at=_AT,
    ),
    "A new in-app notification of the signed-in user (their own sockets only): an alert "
    "raised, escalated to them, or resolved, as their preferences allow. The history, the "
    "unread count and marking read: `/api/notifications`.",
)
"""The `notification` event's entry in the realtime API reference (docs/api.md)."""
