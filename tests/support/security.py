"""What the security tests share: the check that no payload carries another department's data,
and rate limits generous enough for a flood of legitimate requests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from livedash.testing.recorder import Recorder

GENEROUS = {"rate_limit_socket": "10000/minute", "rate_limit_user": "10000/minute"}


def departments_in(event: str, payload: Any) -> set[str | None]:
    """The departments whose data (or scope) a received payload carries."""
    if event in ("dashboard_update", "historical_data"):
        return {payload["department"]}
    if event == "metrics_snapshot":
        return {value["department"] for value in payload["values"]}
    if event == "authenticated":
        return set(payload["departments"])
    return set()


def assert_no_foreign_data(client: Recorder, allowed: Iterable[str | None]) -> None:
    """No payload this client received carries a department outside `allowed`."""
    scope = set(allowed)
    for event, payload in client.events:
        foreign = departments_in(event, payload) - scope
        assert not foreign, f"{event} carried {foreign} to a client limited to {scope}"
