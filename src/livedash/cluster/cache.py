"""The in-process cache (L1): values kept at most a second, with hit and miss counts.

L2 is Redis (`state.py`); both are cache-aside in front of the database. Counting happens
here so health checks and metrics report one set of figures per layer.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

_MISSING = object()


class CacheStats:
    """Hits and misses per cache layer ("l1", "l2") and database fallbacks."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def hit(self, layer: str, count: int = 1) -> None:
        self.counts[f"{layer}_hits"] += count

    def miss(self, layer: str, count: int = 1) -> None:
        self.counts[f"{layer}_misses"] += count

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


class LocalCache(Generic[T]):
    """Entries that expire `max_age` seconds after they were stored."""

    def __init__(
        self,
        max_age: float = 1.0,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, T]] = {}

    def get(self, key: Hashable) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if self._clock() - stored_at > self._max_age:
            del self._entries[key]
            return None
        return value

    def put(self, key: Hashable, value: T) -> None:
        if len(self._entries) >= self._max_entries:
            self._evict()
        self._entries[key] = (self._clock(), value)

    def clear(self) -> None:
        self._entries.clear()

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (at, _) in self._entries.items() if now - at > self._max_age]:
            del self._entries[key]
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
