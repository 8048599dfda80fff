"""One error hierarchy for livedash.

    LivedashError
    ├── ConfigurationError       settings that cannot work (bad time zone, missing secret file)
    ├── StoreError               the database refused or is unreachable
    ├── ChangeFeedError          the change feed cannot be read or its position stored
    ├── DeliveryError            an e-mail or push not delivered (notifications.notice)
    │   └── SubscriptionGone     the browser's push subscription expired (404/410)
    └── ClientError              something a client sent; turned into an `error` event
        ├── InvalidPayload       the payload does not match the event's model
        ├── UnknownEvent         an event name the gateway does not serve
        ├── UnknownMetric        a metric name that does not exist
        ├── UnknownAlert         no such alert (or silence) among those the caller may see
        ├── UnknownDepartment    a department code that names no department (REST)
        ├── UnknownReport        no such report (or schedule) among those the caller may see
        ├── ReportNotReady       a report's file asked for before it is done
        ├── Forbidden            a department or action outside the client's scope
        ├── NotAuthenticated     an event that needs authentication came first
        ├── RateLimited          too many events or connections; says when to retry
        │   └── TooManyConnections   this instance holds `max_connections` sockets already
        ├── Draining             this instance is shutting down: connect to another
        ├── Internal             an unexpected failure while serving the event
        └── AuthError            turned into `auth_error` instead of `error`
            └── InvalidToken     a token that is malformed, expired or badly signed

The gateway translates `ClientError` into a client-facing event in exactly one place
(`livedash.realtime.guard`); everything else is logged and never reaches a client verbatim.
"""

from __future__ import annotations

from typing import Any


class LivedashError(Exception):
    """Base of every error livedash raises on purpose."""


class ConfigurationError(LivedashError):
    """Settings that cannot work."""


class StoreError(LivedashError):
    """The database refused a request or cannot be reached."""


class ChangeFeedError(LivedashError):
    """The change feed cannot be read or its position cannot be stored."""


class ClientError(LivedashError):
    """Something a client sent that the service refuses; the client is told why."""

    code = "bad_request"
    retry_after: float | None = None
    """Seconds after which the same request may be served (sent with the refusal)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidPayload(ClientError):
    """The payload does not match the event's declared model."""

    code = "invalid_payload"


class UnknownEvent(ClientError):
    """The event name is not one the gateway serves."""

    code = "unknown_event"


class UnknownMetric(ClientError):
    """A metric name that does not exist."""

    code = "unknown_metric"


class UnknownAlert(ClientError):
    """No such alert, or none the caller may see (the two are not told apart)."""

    code = "unknown_alert"


class UnknownReport(ClientError):
    """No such report or report schedule, or none the caller may see."""

    code = "unknown_report"


class UnknownDepartment(ClientError):
    """A department code that names no department, asked of by a caller who would see it if
    it existed (others get `Forbidden`, whether it exists or not)."""

    code = "unknown_department"


class ReportNotReady(ClientError):
    """A report asked for before it is done (or after it failed)."""

    code = "report_not_ready"


class Forbidden(ClientError):
    """A department or action outside the client's scope."""

    code = "forbidden"


class Internal(ClientError):
    """An unexpected failure while serving an event; details are logged, not sent."""

    code = "internal"


class AuthError(ClientError):
    """Authentication failed; sent as `auth_error`."""

    code = "auth_failed"


class NotAuthenticated(ClientError):
    """An event that needs authentication arrived before it."""

    code = "not_authenticated"


class RateLimited(ClientError):
    """Too many events (per socket or user) or connection attempts (per address)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


DATABASE_RETRY_AFTER_SECONDS = 5.0
"""What a client is told to wait when the database is down (REST and sockets alike)."""


class Unavailable(ClientError):
    """The database, which the request needs, cannot be reached now: ask again shortly."""

    code = "unavailable"
    retry_after = DATABASE_RETRY_AFTER_SECONDS

    def __init__(self, message: str = "the database is not answering; try again") -> None:
        super().__init__(message)


class TooManyConnections(RateLimited):
    """This instance already holds `max_connections` sockets: try again, another instance
    behind the load balancer may have room."""

    code = "too_many_connections"


class Draining(ClientError):
    """This instance is shutting down and takes no new sockets: connect to another one."""

    code = "draining"


class InvalidToken(AuthError):
    """A token that is malformed, expired, or not signed with our key."""

    code = "invalid_token"
