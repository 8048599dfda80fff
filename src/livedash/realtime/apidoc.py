"""`docs/api.md`, generated from the wire models so the reference cannot drift from the code.

Run `livedash api-doc > docs/api.md` after changing a model; a test fails until you do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from livedash.metrics.definitions import METRICS
from livedash.realtime.schemas import (
    Authenticated,
    AuthenticateRequest,
    ChangedRow,
    ConnectionStatus,
    ErrorPayload,
    ExplainRequest,
    HistoricalData,
    HistoricalPoint,
    HistoricalRequest,
    MetricChanges,
    MetricSelection,
    MetricsSnapshot,
    MetricUpdate,
    MetricUpdates,
    StreamPosition,
    ValueChange,
)

_AT = datetime(2026, 11, 23, 9, 30, 0, 125000, tzinfo=UTC)
_POSITION = StreamPosition(epoch="9f2c41d07ab3", offset=18342)
_UPDATE = MetricUpdate(
    metric="beds_occupied",
    department="CARD",
    value=41,
    version=1795426200125001,
    timestamp=_AT,
    position=_POSITION,
)
_VALUE = _UPDATE.model_copy(update={"position": None})
_SECOND_UPDATE = MetricUpdate(
    metric="beds_free",
    department="CARD",
    value=7,
    version=1795426200125002,
    timestamp=_AT,
    position=StreamPosition(epoch=_POSITION.epoch, offset=_POSITION.offset + 1),
)

EventDoc = tuple[str, str, type[BaseModel], BaseModel, str]
"""(direction, event, model, example, what it means)."""
EVENTS: list[EventDoc] = [
    (
        "in",
        "authenticate",
        AuthenticateRequest,
        AuthenticateRequest(token="eyJhbGciOiJIUzI1NiIs..."),
        "Authenticate (or re-authenticate) the socket. The token can also be sent in the "
        "handshake as `auth: {token}`, which the socket.io client does on every reconnect. "
        "Answered by `authenticated` or `auth_error`. A refused re-authentication also ends "
        "the identity the socket had: its subscriptions are dropped, as when a token expires.",
    ),
    (
        "in",
        "subscribe_metrics",
        MetricSelection,
        MetricSelection(
            metrics=["beds_occupied", "patients_active"], departments=["CARD"], since=_POSITION
        ),
        "Receive `dashboard_update` for these metrics and departments from now on. "
        "`since` (optional): the last stream position this client saw; see Recovery. "
        "`metrics` may be sent as a bare list; leaving out `departments` means every department "
        "the token may see, `null` in it the hospital-wide totals. The server joins the "
        "subscriptions first, then sends a `metrics_snapshot` of their current values (or, with "
        "`since`, the missed updates), then the acknowledgement (`SubscriptionAck`) with the "
        "stream position P they are current at: every update after P follows. "
        "Unknown names, or departments outside the token's scope, are refused as a whole: "
        "nothing is subscribed.",
    ),
    (
        "in",
        "unsubscribe_metrics",
        MetricSelection,
        MetricSelection(metrics=["patients_active"]),
        "Stop updates for these metrics (and departments); same payload as `subscribe_metrics`.",
    ),
    (
        "in",
        "request_snapshot",
        MetricSelection,
        MetricSelection(metrics=None, departments=[None]),
        "Ask for the current values (all visible ones when the payload is left out); answered "
        "by `metrics_snapshot`.",
    ),
    (
        "in",
        "request_historical",
        HistoricalRequest,
        HistoricalRequest.model_validate(
            {
                "metric": "admissions",
                "department": "CARD",
                "from": "2026-11-22T00:00:00+01:00",
                "to": "2026-11-23T00:00:00+01:00",
                "granularity": "hour",
            }
        ),
        "Ask for a stored series (one of `admissions`, `discharges`, `emergency_arrivals`, "
        "`appointments_completed`, `revenue`, `occupancy`) from the hourly roll-ups; answered "
        "by `historical_data`. A range that is too long, `from` not before `to`, dates outside "
        "1970-2200, an unknown series or a department outside the token's scope gets `error`. "
        "History is charged by the hours a range spans (a day by hour is 24, a year by day "
        "8,784) against the user's `LIVEDASH_RATE_LIMIT_HISTORY_HOURS` (20000 a minute); past "
        'it, `rate_limited` with `retry_after` and `details.per: "history"`.',
    ),
    (
        "in",
        "explain_metric",
        ExplainRequest,
        ExplainRequest(metric="patients_active", department="CARD"),
        'Ask what moved a value: "why did this change?". Acknowledged with `MetricChanges`'
        " (below): the value's last updates (at most 10), newest first, each with its"
        " `version` (that of the `dashboard_update` that carried it), the value before and"
        " after, and the row changes behind it: table, operation, row id, commit time and"
        " department, never the row's content (no names). A department outside the token's"
        " scope, or `null` (the hospital-wide totals) for any role but `super_admin`, is"
        " refused with `forbidden`, as for a subscription. Also `GET"
        " /api/metrics/{metric}/changes?department=CODE|hospital`.",
    ),
    (
        "out",
        "explain_metric (acknowledgement)",
        MetricChanges,
        MetricChanges(
            metric="patients_active",
            department="CARD",
            changes=[
                ValueChange(
                    version=1795426200125001,
                    timestamp=_AT,
                    before=40,
                    after=41,
                    delta=1,
                    reason="rows",
                    rows=[
                        ChangedRow(
                            table="patients",
                            op="insert",
                            id=18342,
                            committed_at=_AT.replace(microsecond=98000),
                            department="CARD",
                        )
                    ],
                )
            ],
        ),
        "The answer to `explain_metric`. A value's updates are kept where the change feed is"
        " read, and shared through Redis with every instance; an instance that cannot reach"
        " Redis answers `unavailable`.",
    ),
    (
        "out",
        "connection_status",
        ConnectionStatus,
        ConnectionStatus(
            status="connected", authenticated=False, auth_timeout_seconds=10.0, server_time=_AT
        ),
        "Sent on connect. A socket that has not authenticated within `auth_timeout_seconds` "
        "gets `auth_error` and is disconnected (its connection closed, too). A client address "
        "over its connection-attempt "
        'limit gets `error` (`rate_limited`, `event: "connect"`) instead, and is '
        "disconnected; so is a socket beyond the instance's `max_connections` "
        "(`too_many_connections`, with `details.limit` and `retry_after`) and one that connects "
        "while the instance shuts down (`draining`): connect again later, the load balancer may "
        "send it to another instance.",
    ),
    (
        "out",
        "authenticated",
        Authenticated,
        Authenticated(
            sub="alice",
            role="admin",
            departments=["CARD"],
            metrics=["patients_total", "..."],
            expires_at=_AT,
            timezone="Europe/Berlin",
            currency="EUR",
            locale="de-DE",
        ),
        "The token was accepted. `departments` lists what this socket may see; `timezone`, "
        "`currency` and `locale` say how the hospital's figures are written "
        "(`LIVEDASH_TIMEZONE`, `LIVEDASH_CURRENCY`, `LIVEDASH_LOCALE`). Sent again, "
        "unasked, when the user's role or departments in the `users` table shrink while "
        "connected (checked every `LIVEDASH_AUTH_RECHECK_SECONDS`, 5 s): subscriptions outside "
        "the new scope are dropped.",
    ),
    (
        "out",
        "auth_error",
        ErrorPayload,
        ErrorPayload(
            code="invalid_token",
            message="the token has expired",
            event="authenticate",
            details={"reason": "expired"},
        ),
        "Authentication failed, timed out, or the token expired, was revoked, or its user was "
        "deactivated or signed out while connected (then the socket's subscriptions are "
        "dropped and no more data is sent until it authenticates, within "
        "`auth_timeout_seconds`). A refused token says why in `details.reason` where a client "
        "can act on it: `expired` (sign in or refresh), `revoked` (the token, or every token "
        "of its user), `disabled` (the user is inactive), `unknown_user`.",
    ),
    (
        "out",
        "dashboard_update",
        MetricUpdate,
        _UPDATE,
        "A metric's new value for one department (`department: null` is the whole hospital), "
        "sent as soon as the change is applied. `version` strictly increases; a client keeps "
        "the value with the highest version for each (metric, department). `position` is the "
        "update's place in the stream; a client remembers the last one for Recovery. A "
        "client that stops reading (its connection's buffer full) is skipped rather than sent "
        "a backlog: once it reads again it gets the newest value of each (metric, department) "
        "it missed, so it catches up with the present, not with the past.",
    ),
    (
        "out",
        "dashboard_updates",
        MetricUpdates,
        MetricUpdates(updates=[_UPDATE, _SECOND_UPDATE]),
        "Version 2 of `dashboard_update`, for clients that ask for it in the handshake: "
        '`auth: {token, updates: "batched"}` (`"each"`, the default, keeps `dashboard_update`; '
        "any other value is refused with `error`, `invalid_payload`, on connecting). Every value "
        "of the socket's subscriptions that changed in one send of the service comes in one "
        "event, in stream order, each exactly as `dashboard_update` would carry it: a screen "
        "that shows a department's every figure gets one frame for an admitted patient, not "
        "one per figure. Missed updates replayed on recovery come as one `dashboard_updates` "
        "too, and a client that stops reading gets, once it reads again, the newest value of "
        "each (metric, department) it missed in one. Keep the value with the highest `version` "
        "of each, and the `position` of the last update, as with `dashboard_update`.",
    ),
    (
        "out",
        "metrics_snapshot",
        MetricsSnapshot,
        MetricsSnapshot(values=[_VALUE], server_time=_AT, position=_POSITION, recovered=False),
        "Current values, after `subscribe_metrics` or `request_snapshot`.",
    ),
    (
        "out",
        "historical_data",
        HistoricalData,
        HistoricalData(
            metric="occupancy",
            department="CARD",
            granularity="hour",
            start=_AT.replace(hour=8, minute=0, second=0, microsecond=0),
            end=_AT.replace(hour=9, minute=0, second=0, microsecond=0),
            points=[
                HistoricalPoint(
                    start=_AT.replace(hour=8, minute=0, second=0, microsecond=0),
                    value=0.8312,
                    peak=0.86,
                )
            ],
        ),
        "Every hour (or hospital-time day) of the range, with empty ones as 0 (counts) or "
        "`null` (occupancy). Keys `from` and `to` echo the request.",
    ),
    (
        "out",
        "error",
        ErrorPayload,
        ErrorPayload(
            code="unknown_metric",
            message="unknown metric(s): bed_count",
            event="subscribe_metrics",
            details={"unknown": ["bed_count"], "valid": ["patients_total", "..."]},
        ),
        "A request was refused and changed nothing. The same payload is the event's "
        "acknowledgement. Codes: `invalid_payload`, `unknown_event`, `unknown_metric`, "
        "`forbidden`, `not_authenticated`, `rate_limited`, `unavailable` (the database "
        "cannot be reached: ask again after `retry_after`), `internal`; on connecting also "
        "`too_many_connections` and `draining` (see `connection_status`). Every event counts "
        "against its socket's limit and, once authenticated, its user's (all of that user's "
        "sockets together, a budget that grows with each socket the user has open, so that a "
        "wall of screens on one account can reconnect at once); past either, events get "
        "`rate_limited` with `retry_after`, the seconds until one would be served again, and "
        '`details.per` (`"socket"` or `"user"`).',
    ),
]


RECOVERY = [
    "## Recovery: never miss an update",
    "",
    "Every `dashboard_update` carries `position: {epoch, offset}`. Offsets grow by one per update"
    " sent by the service (to any room), so a client sees gaps: they are other subscriptions'"
    " updates, not losses. The service keeps a bounded history of sent updates (in memory on the"
    " embedded default, a Redis Stream shared by every instance in production;"
    " `LIVEDASH_HISTORY_SIZE` updates, at most `LIVEDASH_HISTORY_MAX_AGE_SECONDS` old).",
    "",
    "1. Remember the `position` of the last update received (or the `position` of the"
    " last `metrics_snapshot` / `SubscriptionAck`, whichever is later).",
    "2. After reconnecting, send it back: as `since` in `subscribe_metrics`, or as `since` in the"
    " handshake `auth` (`{token, since}`), which the socket's first subscription then uses.",
    "3. If the history holds every update after `since` in the same epoch, the service sends the"
    " missed updates of the subscribed metrics and departments as `dashboard_update` (or, to a"
    " batched socket, as one `dashboard_updates`), in order,"
    " each once, then acknowledges with `recovered: true` and the position P they reach.",
    "4. Otherwise (another epoch: the service restarted, a new leader took over, or Redis lost"
    " its data; or the gap is older or longer than the history), the client gets a"
    " `metrics_snapshot` with `recovered: false` (the values now, not what was missed).",
    "5. No subscription race: the socket joins its rooms before P is read, so every update after"
    " P reaches it. Live updates may interleave with the replay (and an update at or before P"
    " may arrive again live): keep, per metric and department, the value with the highest"
    " `version` (as the page does), not the highest offset; remember P from the answer, and"
    " move past it only with updates received after the answer.",
    "6. Snapshots follow the same rule: a live update may arrive before a snapshot whose values"
    " were read earlier, so keep the held value when its `version` is higher. A value of"
    " `version` 0 was counted from the database while no instance had the feed's value at hand"
    " (Redis and the leader out of reach): it replaces what is held.",
    "7. The service may send a `metrics_snapshot` with `recovered: false` on its own, at the"
    " current position, when updates may not have reached the socket: after Redis or the"
    " database was out of reach for this instance or for the instance that reads the change"
    " feed (Redis carries the updates between instances and keeps nothing for an instance"
    " that was away). Apply it like any snapshot.",
    "",
]


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def render_api_doc(extra_events: Sequence[EventDoc] = ()) -> str:
    """The realtime API reference as Markdown; `extra_events`: those of the parts built on the
    data path (alerts, notifications), which document their own."""
    events = [*EVENTS, *extra_events]
    lines = [
        "# Realtime API",
        "",
        "<!-- Generated by `livedash api-doc` from the wire models (livedash/realtime/schemas.py,"
        " alerts/messages.py, notifications/messages.py); do not edit. -->",
        "",
        "livedash speaks Socket.IO (protocol v5) at `/socket.io/`, so the stock `socket.io-client`"
        " works unchanged. Every payload below is validated against, or built from, the pydantic"
        " model named with it. Requests that the client sends with an acknowledgement callback get"
        " the answer (or the error payload) as the acknowledgement too. Payloads are JSON only:"
        " a packet with binary attachments closes its connection. A connection that opens no"
        " Socket.IO session within `auth_timeout_seconds` is closed.",
        "",
        "## Access",
        "",
        "- `super_admin` sees every department and the hospital-wide totals (`department: null`).",
        "- `admin` and `viewer` see only the departments named in their token. The hospital-wide"
        " totals are not sent to them, since they sum other departments' data.",
        "",
        "## Events",
        "",
    ]
    for direction, event, model, example, meaning in events:
        arrow = "client → server" if direction == "in" else "server → client"
        lines += [
            f"### `{event}` ({arrow})",
            "",
            meaning,
            "",
            f"Model: `{model.__name__}`. Example:",
            "",
            "```json",
            _json(example.model_dump(mode="json", by_alias=True)),
            "```",
            "",
        ]
    lines += RECOVERY
    lines += [
        "## Metrics",
        "",
        "Every metric exists for the whole hospital and for each department.",
        "",
        "| metric | tier | meaning |",
        "| --- | --- | --- |",
        *(f"| `{m.name}` | {m.tier.value} | {m.description} |" for m in METRICS.values()),
        "",
        "## Schemas",
        "",
    ]
    for model in dict.fromkeys(model for _, _, model, _, _ in events):
        lines += [
            f"### {model.__name__}",
            "",
            "```json",
            _json(model.model_json_schema()),
            "```",
            "",
        ]
    return "\n".join(lines)
