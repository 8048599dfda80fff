"""What this instance tells its clients and operators about its dependencies.

Two breakers: the database (the source of truth: while it is down the values on screen are
stale, and clients are told since when) and the cache (Redis: while it is down the service
answers from its own memory and the database, and clients are told it is degraded).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from livedash.observability.breaker import CircuitBreaker, State

Listener = Callable[["ServiceStatus"], None]


class ServiceStatus:
    """The breakers of this instance's dependencies, and who to tell when they change."""

    def __init__(self, *, with_cache: bool) -> None:
        self.database = CircuitBreaker("database")
        self.cache = CircuitBreaker("cache") if with_cache else None
        self._listeners: list[Listener] = []
        self._last = self.summary()
        for breaker in self.breakers():
            breaker.on_change(self._changed)

    def breakers(self) -> list[CircuitBreaker]:
        return [b for b in (self.database, self.cache) if b is not None]

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, _breaker: CircuitBreaker) -> None:
        summary = self.summary()
        if summary == self._last:
            return
        self._last = summary
        for listener in self._listeners:
            listener(self)

    def summary(self) -> tuple[str, tuple[str, ...]]:
        degraded = tuple(b.name for b in self.breakers() if b.state is not State.CLOSED)
        if "database" in degraded:
            return "stale", degraded
        return ("degraded" if degraded else "ok"), degraded

    def for_clients(self) -> dict[str, Any]:
        """The fields of `connection_status` about the service's state."""
        status, degraded = self.summary()
        reasons = {
            b.name: b.last_error or "unreachable" for b in self.breakers() if b.name in degraded
        }
        stale_since = self.database.down_since if status == "stale" else None
        return {
            "service": status,
            "degraded": list(degraded),
            "reasons": reasons,
            "stale_since": datetime.fromtimestamp(stale_since, UTC) if stale_since else None,
            "data_age_seconds": round(time.time() - stale_since, 1) if stale_since else None,
        }

    def for_operators(self) -> dict[str, Any]:
        return {b.name: b.as_dict() for b in self.breakers()}
