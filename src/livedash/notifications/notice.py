"""What a notification says about an alert, and how delivering one can fail.

An `AlertNotice` is built once per alert change by whoever decides to notify
(`AlertNotice.from_alert`) and rendered by each channel: `email.EmailSender`,
`push.PushSender`. It carries everything a reader away from the dashboard needs, already
resolved (the department's name, the hospital's name and time zone, the link back), so that
the channels never query the store.

Delivery errors say one thing the caller must know: whether trying again later can help.

    LivedashError
    └── DeliveryError        the channel did not take the notice (`retryable` says if it may)
        └── SubscriptionGone the push service forgot the subscription: delete it, never retry
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from livedash.alerts.messages import AlertMessage
from livedash.errors import LivedashError
from livedash.timeutil import as_aware


class DeliveryError(LivedashError):
    """A notice was not delivered; `retryable` says whether the same send may succeed later.

    `retry_after` (seconds) is set when the other side said how long to wait (HTTP
    `Retry-After` on a push service's 429 or 503).
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


class SubscriptionGone(DeliveryError):
    """The push service answered 404 or 410: the browser unsubscribed or the subscription
    expired. The subscription should be deleted; sending again cannot succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """One alert, or one change of it, as the notification channels tell it.

    The fields follow the `alert` event (`livedash.alerts.messages.AlertMessage`), with the
    department's display name, the hospital's name and zone and the dashboard link added.
    """

    alert_id: int
    rule: str | None
    department: str | None
    """The department's code; `None`: the hospital as a whole."""
    department_name: str | None
    severity: str
    state: str | None
    status: str
    title: str
    value: float | None
    threshold: float | None
    clear_at: float | None
    raised_at: datetime
    """When the alert was raised; aware, so that it can be shown in the hospital's zone."""
    link: str
    """The dashboard's page of this alert (http or https)."""
    hospital: str
    zone: str
    """The hospital's IANA time zone, e.g. Europe/Berlin: times are shown in it."""

    @classmethod
    def from_alert(
        cls,
        alert: AlertMessage,
        *,
        department_name: str | None,
        link: str,
        hospital: str,
        zone: str,
    ) -> AlertNotice:
        """The notice of an `alert` event (a naive `raised_at` is read as UTC)."""
        return cls(
            alert_id=alert.id,
            rule=alert.rule,
            department=alert.department,
            department_name=department_name,
            severity=alert.severity,
            state=alert.state,
            status=alert.status,
            title=alert.title,
            value=alert.value,
            threshold=alert.threshold,
            clear_at=alert.clear_at,
            raised_at=as_aware(alert.raised_at),
            link=link,
            hospital=hospital,
            zone=zone,
        )

    def __post_init__(self) -> None:
        # Checked here, once, so that no channel fails half-way through rendering.
        if self.raised_at.tzinfo is None or self.raised_at.utcoffset() is None:
            raise ValueError("raised_at must be an aware datetime")
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.zone!r}") from exc
        if urlsplit(self.link).scheme not in ("http", "https"):
            raise ValueError("link must be an http or https URL")

    @property
    def where(self) -> str:
        """The department's name (its code if it has none), or "hospital"."""
        return self.department_name or self.department or "hospital"

    @property
    def raised_local(self) -> datetime:
        """`raised_at` in the hospital's zone."""
        return self.raised_at.astimezone(ZoneInfo(self.zone))

    def raised_text(self) -> str:
        """`raised_at` as a reader in the hospital reads it: "2024-03-05 14:07 CET"."""
        return self.raised_local.strftime("%Y-%m-%d %H:%M %Z")

    def measurement(self) -> str | None:
        """The value against the thresholds, e.g. "0.97 (fires at 0.95, clears at 0.9)";
        `None` for an alert without a value (one written by the hospital's application)."""
        if self.value is None:
            return None
        limits = []
        if self.threshold is not None:
            limits.append(f"fires at {number(self.threshold)}")
        if self.clear_at is not None:
            limits.append(f"clears at {number(self.clear_at)}")
        text = number(self.value)
        return f"{text} ({', '.join(limits)})" if limits else text

    def condition(self) -> str:
        """The rule's state and the alert's status: "firing, active" or just "active"."""
        return f"{self.state}, {self.status}" if self.state else self.status


def number(value: float) -> str:
    """A value for people: at most three decimals, thousands grouped, no trailing zeros."""
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
