"""The request rules on their own: defaults, unknown names, scope, history ranges."""

from __future__ import annotations

import pytest

from livedash.errors import Forbidden, InvalidPayload, UnknownMetric
from livedash.metrics.definitions import METRIC_NAMES
from livedash.realtime.requests import history_query, select

ED_ONLY: set[str | None] = {"ED"}


def test_leaving_things_out_means_everything_visible() -> None:
    metrics, departments = select(None, ED_ONLY, 100)
    assert metrics == list(METRIC_NAMES)
    assert departments == ED_ONLY
    assert select(["beds_free", "beds_free"], ED_ONLY, 100) == (["beds_free"], ED_ONLY)


def test_unknown_metrics_are_named_with_the_valid_ones() -> None:
    with pytest.raises(UnknownMetric) as refused:
        select({"metrics": ["beds_free", "bed_count"]}, ED_ONLY, 100)
    assert refused.value.details["unknown"] == ["bed_count"]


def test_departments_outside_scope_get_one_answer_whether_they_exist_or_not() -> None:
    messages = set()
    for department in ("CARD", "NO_SUCH_WARD"):
        with pytest.raises(Forbidden) as refused:
            select({"departments": [department]}, ED_ONLY, 100)
        messages.add(refused.value.message.replace(department, "X"))
    assert len(messages) == 1
    with pytest.raises(Forbidden, match="hospital-wide"):
        select({"departments": [None]}, ED_ONLY, 100)


def test_list_lengths_follow_the_setting() -> None:
    with pytest.raises(InvalidPayload, match="at most 2"):
        select({"metrics": ["beds_free"] * 3}, ED_ONLY, 2)


def test_history_ranges_are_checked_and_made_aware() -> None:
    base = {"metric": "admissions", "department": "ED", "from": "2026-11-01T00:00:00"}
    query = history_query({**base, "to": "2026-11-02T00:00:00"}, ED_ONLY)
    assert query.start.tzinfo is not None
    assert (query.end - query.start).days == 1
    with pytest.raises(InvalidPayload, match="at most 31 days"):
        history_query({**base, "to": "2026-12-15T00:00:00"}, ED_ONLY)
    by_day = history_query({**base, "to": "2026-12-15T00:00:00", "granularity": "day"}, ED_ONLY)
    assert by_day.request.granularity == "day"
    with pytest.raises(InvalidPayload, match="before"):
        history_query({**base, "to": "2026-10-01T00:00:00"}, ED_ONLY)
    with pytest.raises(Forbidden):
        history_query({**base, "department": None, "to": "2026-11-02T00:00:00"}, ED_ONLY)
