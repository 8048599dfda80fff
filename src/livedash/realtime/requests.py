"""What a client asked for, validated against the wire models and its scope.

Pure functions: no sockets and no engine, so each rule can be read (and tested) on its own.
Every refusal is a `ClientError` that the gateway turns into an `error` event; nothing has
changed when one is raised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from livedash.errors import Forbidden, InvalidPayload, UnknownMetric
from livedash.metrics.causes import Cause
from livedash.metrics.definitions import HISTORY_SERIES, METRIC_NAMES, Value
from livedash.realtime.schemas import (
    MAX_NAME_LENGTH,
    ChangedRow,
    ExplainRequest,
    HistoricalRequest,
    MetricChanges,
    MetricSelection,
    ValueChange,
)
from livedash.timeutil import as_aware

ModelT = TypeVar("ModelT", bound=BaseModel)
# Histories are of hospital activity: this range keeps every date computation far from the
# ends of what `datetime` can hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
Departments = set[str | None]


def parse(model: type[ModelT], data: Any) -> ModelT:
    """`data` as `model`, or `InvalidPayload` listing (at most ten of) its problems."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = [
            {
                # Keys come from the client (an unexpected field is named by its key): cut short.
                "field": ".".join(str(part)[:MAX_NAME_LENGTH] for part in issue["loc"])
                or "payload",
                "problem": issue["msg"],
            }
            for issue in error.errors(include_input=False, include_url=False)[:10]
        ]
        raise InvalidPayload(
            f"invalid payload for {model.__name__}: "
            + "; ".join(f"{p['field']}: {p['problem']}" for p in problems),
            problems=problems,
        ) from None


def select(data: Any, visible: Departments, max_list_length: int) -> tuple[list[str], Departments]:
    """The metrics and departments a subscription or snapshot request names (defaults: all)."""
    selection = parse(MetricSelection, {} if data is None else data)
    for name, given in (("metrics", selection.metrics), ("departments", selection.departments)):
        if given is not None and len(given) > max_list_length:
            raise InvalidPayload(f"{name} holds at most {max_list_length} entries")
    metrics = list(METRIC_NAMES) if selection.metrics is None else selection.metrics
    unknown = sorted(set(metrics) - set(METRIC_NAMES))
    if unknown:
        raise UnknownMetric(
            f"unknown metric(s): {', '.join(unknown)}", unknown=unknown, valid=list(METRIC_NAMES)
        )
    if selection.departments is None:
        return list(dict.fromkeys(metrics)), visible
    check_visible(selection.departments, visible)
    return list(dict.fromkeys(metrics)), set(selection.departments)


def check_visible(departments: Iterable[str | None], visible: Departments) -> None:
    """Refuse departments outside `visible`, with the same answer whether they exist or not."""
    refused = [department for department in departments if department not in visible]
    if refused:
        raise Forbidden("not allowed for this token: " + ", ".join(map(label, refused)))


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A valid `request_historical`: a series, a scope and an aware time range."""

    request: HistoricalRequest
    start: datetime
    end: datetime

    @property
    def hours(self) -> int:
        """The hours the range spans, begun ones included: what the request costs."""
        return math.ceil((self.end - self.start) / timedelta(hours=1))


def history_query(data: Any, visible: Departments) -> HistoryQuery:
    """A `request_historical` checked for its series, range and scope."""
    request = parse(HistoricalRequest, data)
    if request.metric not in HISTORY_SERIES:
        raise UnknownMetric(
            f"no history for {request.metric!r}",
            unknown=[request.metric],
            valid=list(HISTORY_SERIES),
        )
    start, end = as_aware(request.start), as_aware(request.end)
    if not (start >= EARLIEST and end <= LATEST):
        raise InvalidPayload(
            f"`from` and `to` must lie between {EARLIEST.date()} and {LATEST.date()}"
        )
    if start >= end:
        raise InvalidPayload("`from` must be before `to`")
    if end - start > request.longest:
        raise InvalidPayload(f"at most {request.longest.days} days by {request.granularity}")
    check_visible([request.department], visible)
    return HistoryQuery(request, start, end)


def explain_query(data: Any, visible: Departments) -> ExplainRequest:
    """An `explain_metric` checked for its metric and scope."""
    request = parse(ExplainRequest, data)
    if request.metric not in METRIC_NAMES:
        raise UnknownMetric(
            f"unknown metric: {request.metric}",
            unknown=[request.metric],
            valid=list(METRIC_NAMES),
        )
    check_visible([request.department], visible)
    return request


def changes_of(request: ExplainRequest, causes: Iterable[Cause]) -> MetricChanges:
    """The wire form of a value's causes."""
    return MetricChanges(
        metric=request.metric,
        department=request.department,
        changes=[
            ValueChange(
                version=cause.version,
                timestamp=cause.at,
                before=cause.before,
                after=cause.after,
                delta=_delta(cause.before, cause.after),
                reason=cause.reason.value,
                rows=[
                    ChangedRow(
                        table=row.table,
                        op=row.op,
                        id=row.row_id,
                        committed_at=as_aware(row.committed_at),  # stored naive, in UTC
                        department=row.department,
                    )
                    for row in cause.changes
                ],
                more_rows=cause.more_changes,
            )
            for cause in causes
        ],
    )


def _delta(before: Value, after: Value) -> int | float | Decimal | None:
    numbers = (int, float, Decimal)
    if not isinstance(before, numbers) or not isinstance(after, numbers):
        return None
    if isinstance(before, float) or isinstance(after, float):
        return round(float(after) - float(before), 6)  # rates: no float noise in the answer
    return after - before


def label(department: str | None) -> str:
    """How a department is named in messages."""
    return "the hospital-wide totals" if department is None else repr(department)


def ordered(departments: Iterable[str | None]) -> list[str | None]:
    """Departments in display order: the hospital first, then by code."""
    return sorted(departments, key=lambda d: (d is not None, d or ""))
