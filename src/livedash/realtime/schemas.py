"""Every Socket.IO payload, declared once as a pydantic model.

Incoming payloads are validated against these models; outgoing ones are built from them.
`docs/api.md` documents the same models.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Upper bounds that hold whatever the settings say; the gateway enforces the (smaller)
# configured list length on top.
MAX_NAMES = 1000
MAX_NAME_LENGTH = 64

UPDATE_EVENT = "dashboard_update"
"""The event that carries one metric's new value (`MetricUpdate`)."""
BATCH_EVENT = "dashboard_updates"
"""The event that carries a socket's every changed value of one send (`MetricUpdates`), to
sockets that asked for it in their handshake (`auth.updates`)."""
UPDATE_MODES = ("each", "batched")
"""What a handshake's `auth.updates` may ask for: `dashboard_update` per value (the default),
or `dashboard_updates`."""


class _Incoming(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthenticateRequest(_Incoming):
    """`authenticate`: a JWT to authenticate (or re-authenticate) this socket."""

    token: str = Field(min_length=1, max_length=8192)


class StreamPosition(BaseModel):
    """A place in the update stream: the epoch it belongs to and the offset within it."""

    model_config = ConfigDict(extra="forbid")

    epoch: str = Field(max_length=64)
    offset: int = Field(ge=0, le=2**62)


class MetricSelection(_Incoming):
    """`subscribe_metrics`, `unsubscribe_metrics` and `request_snapshot`.

    `metrics` may also be sent as a bare list. Leaving `departments` out means every
    department the client may see (and the hospital-wide totals, for roles that see them);
    `null` inside the list names the hospital-wide totals.
    """

    metrics: list[str] | None = Field(default=None, max_length=MAX_NAMES)
    departments: list[str | None] | None = Field(default=None, max_length=MAX_NAMES)
    since: StreamPosition | None = None
    """`subscribe_metrics` only: the last position this client saw; it gets what it missed."""

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"metrics": data}
        return data

    @model_validator(mode="after")
    def _short_names(self) -> MetricSelection:
        for name in [*(self.metrics or []), *(self.departments or [])]:
            if name is not None and len(name) > MAX_NAME_LENGTH:
                raise ValueError(f"names are at most {MAX_NAME_LENGTH} characters")
        return self


class HistoricalRequest(_Incoming):
    """`request_historical`: one series over a time range, by hour or by hospital-time day.

    Times without a zone are taken as UTC. At most 31 days by hour, 366 days by day.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    metric: str = Field(max_length=MAX_NAME_LENGTH)
    department: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    granularity: Literal["hour", "day"] = "hour"

    @property
    def longest(self) -> timedelta:
        """The longest range allowed at this granularity."""
        return timedelta(days=31 if self.granularity == "hour" else 366)


class HistoricalPoint(BaseModel):
    """One hour or day: the total (revenue as an exact decimal string), or for occupancy the
    time-weighted average rate and its peak (`null` where nothing was observed)."""

    start: datetime
    value: int | float | Decimal | None
    peak: float | None = None


class HistoricalData(BaseModel):
    """`historical_data`: the answer to `request_historical`, every bucket of the range."""

    model_config = ConfigDict(populate_by_name=True)

    metric: str
    department: str | None
    granularity: Literal["hour", "day"]
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    points: list[HistoricalPoint]


class ExplainRequest(_Incoming):
    """`explain_metric`: what moved one metric's value for one department (`null`: the
    hospital-wide totals)."""

    metric: str = Field(max_length=MAX_NAME_LENGTH)
    department: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)


class ChangedRow(BaseModel):
    """A row change behind a value: where and when, never what the row holds."""

    table: str
    op: Literal["insert", "update", "delete"]
    id: int | str | None = Field(description="The row's id in its table.")
    committed_at: datetime
    department: str | None = Field(
        description="The department whose figures it moved (for a hospital-wide value: the "
        "row's department)."
    )


class ValueChange(BaseModel):
    """One update of a value (its `dashboard_update` had this `version`), and what moved it.

    `reason`: `rows` (the listed row changes, the last few of the batch the update came
    from; `more_rows` when the batch held more), `new_day` (midnight in the hospital's time
    zone: the day's figures started over) or `roll_ups` (the historical tier, recomputed).
    `delta` is `after` minus `before` for numbers (`null` otherwise, or for the first value).
    """

    version: int
    timestamp: datetime
    before: int | float | Decimal | str | None
    after: int | float | Decimal | str | None
    delta: int | float | Decimal | None
    reason: Literal["rows", "new_day", "roll_ups"]
    rows: list[ChangedRow] = Field(default_factory=list)
    more_rows: bool = False


class MetricChanges(BaseModel):
    """The acknowledgement of `explain_metric` (and `GET /api/metrics/{metric}/changes`):
    the last updates of one metric for one department, newest first."""

    metric: str
    department: str | None
    changes: list[ValueChange]


class MetricUpdate(BaseModel):
    """`dashboard_update`: one metric's new value for one department (`null`: hospital).

    Counts are integers, rates floats from 0 to 1, money an exact decimal string ("1234.50").
    """

    metric: str
    department: str | None
    value: int | float | Decimal | str | None
    version: int
    timestamp: datetime
    position: StreamPosition | None = None
    """Where this update is in the stream (in `dashboard_update`; absent in snapshots)."""


class MetricUpdates(BaseModel):
    """`dashboard_updates`: every value of the socket's subscriptions that changed in one send
    of the service, oldest position first, each as in `dashboard_update`."""

    updates: list[MetricUpdate]


class MetricsSnapshot(BaseModel):
    """`metrics_snapshot`: current values, in answer to `request_snapshot` or a subscription.

    `position`: the stream position these values are current at; every update after it
    follows as `dashboard_update`. `recovered: false` answers a `since` that the history could
    not serve (another epoch, or too far behind): these values replace everything held.
    """

    values: list[MetricUpdate]
    server_time: datetime
    position: StreamPosition | None = None
    recovered: bool | None = None


class ConnectionStatus(BaseModel):
    """`connection_status`: the state of this connection and of the service behind it.

    Sent on connecting and whenever the service's state changes. `status`: `connected`
    (all well), `degraded` (a dependency is down but data stays current: `degraded` names it,
    e.g. `cache`, and `reasons` says why), `stale` (the database is unreachable: the values
    shown are those of `stale_since`, `data_age_seconds` old when this was sent; updates
    resume, with nothing lost, when it returns), `draining` (this instance is shutting down:
    the connection is closed right after; a client that reconnects, as the socket.io client
    does on its own, reaches another instance).
    """

    status: str
    authenticated: bool
    auth_timeout_seconds: float
    server_time: datetime
    degraded: list[str] = Field(default_factory=list)
    reasons: dict[str, str] = Field(default_factory=dict)
    stale_since: datetime | None = None
    data_age_seconds: float | None = None


class Authenticated(BaseModel):
    """`authenticated`: the socket may now subscribe."""

    sub: str
    role: str
    departments: list[str | None]
    metrics: list[str]
    expires_at: datetime
    timezone: str = Field(description="The hospital's time zone (IANA): its clock and days.")
    currency: str = Field(description="The ISO 4217 code revenue is counted in.")
    locale: str | None = Field(
        default=None, description="How numbers and dates are written (BCP 47); null: the browser's."
    )


class SubscriptionAck(BaseModel):
    """The acknowledgement of `subscribe_metrics` and `unsubscribe_metrics`."""

    ok: bool = True
    metrics: list[str]
    departments: list[str | None]
    position: StreamPosition | None = None
    """`subscribe_metrics`: every update after this position is delivered to this socket."""
    recovered: bool | None = None
    """`subscribe_metrics` with `since`: true when the missed updates were replayed (before
    this reply), false when a `metrics_snapshot` with `recovered: false` was sent instead."""


class ErrorPayload(BaseModel):
    """`error` and `auth_error`: what was refused, and why. Nothing changed.

    `retry_after` (seconds) is set with `rate_limited`: when the same request would be served;
    with `unavailable` (the database cannot be reached): when to ask again; and with
    `too_many_connections`: when to connect again.
    """

    ok: bool = False
    code: str
    message: str
    event: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    retry_after: float | None = None
