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
    """Entries that expire `max_age` seconds after they were stored.

    Kept in the order they were stored (a key stored again moves to the end), so the oldest
    entries are always first: expired ones are dropped from the front, and when `max_entries`
    are held the oldest one makes room.
    """

    def __init__(
        self,
        max_age: float = 1.0,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("a cache holds at least one entry")
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

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
        self._entries.pop(key, None)  # stored again: now the newest, not the oldest
        if len(self._entries) >= self._max_entries:
            self._evict()
        self._entries[key] = (self._clock(), value)

    def clear(self) -> None:
        self._entries.clear()

    def _evict(self) -> None:
        now = self._clock()
        while self._entries:
            oldest = next(iter(self._entries))
            expired = now - self._entries[oldest][0] > self._max_age
            if not expired and len(self._entries) < self._max_entries:
                return
            del self._entries[oldest]
