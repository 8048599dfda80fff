"""limits' in-process storage of moving windows, with its expired entries swept now and then.

The stock storage (`async+memory://`) starts a sweep after every hit once the previous one has
ended, and its sweep walks every key, handing each key's list to a worker thread and back. A
socket has keys of its own, so in a reconnect storm of 10,000 screens the sweep never stopped:
tens of thousands of thread round trips, each waking the event loop (py-spy: 8-10 % of the
service's CPU, plus what it did to everything else's latency).

Sweeping is only housekeeping: a window is read by its entries' times, so expired entries are
never counted whether swept or not. Here the sweep runs inline (a bisect per key, no thread)
at most once every `SWEEP_SECONDS`, from the hit that finds it due.

The stock storage's sweep is reached through its name-mangled `__schedule_expiry`, which every
hit calls; that is pinned with `limits` in pyproject.toml and checked by
tests/test_auth_window_storage.py.

limits wraps each storage method (to turn the backend's errors into its own) once for every
class between `Storage` and the one defined, and `Storage` itself twice: the stock storage's
moving-window calls went through two wrappers, and a subclass's through four. Here each is
wrapped once: a socket event's limit check took 53 us instead of 58.
"""

from __future__ import annotations

import bisect
import inspect
import time
from typing import Any

from limits.aio.storage import MemoryStorage
from limits.aio.storage.base import _wrap_errors

WRAPPED_METHODS = (
    "incr",
    "get",
    "get_expiry",
    "check",
    "reset",
    "clear",
    "acquire_entry",
    "get_moving_window",
    "acquire_sliding_window_entry",
    "get_sliding_window",
    "clear_sliding_window",
)

SCHEME = "async+swept-memory"
SWEEP_SECONDS = 5.0


class SweptMemoryStorage(MemoryStorage):
    """`limits.aio.storage.MemoryStorage`, swept inline at most every `SWEEP_SECONDS`."""

    STORAGE_SCHEME = [SCHEME]  # noqa: RUF012 (limits' own attribute, read at registration)

    def __init__(
        self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.next_sweep = time.time() + SWEEP_SECONDS
        self.sweeps = 0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # what every hit calls
        now = time.time()
        if now >= self.next_sweep:
            self.next_sweep = now + SWEEP_SECONDS
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Drop expired entries and counters, and the keys left with none.

        Synchronous, so no hit runs meanwhile; nor does a hit hold a key's lock across an
        await, so dropping an unused key's lock is safe.
        """
        self.sweeps += 1
        for key, events in list(self.events.items()):
            # Newest first: entries from `cutoff` on have expired.
            cutoff = bisect.bisect_left(events, -now, key=lambda entry: -entry.expiry)
            if cutoff:
                del events[cutoff:]
            else:
                events.clear()
                del self.events[key]
                self.locks.pop(key, None)
        for key, expires in list(self.expirations.items()):
            if expires <= now:
                self.storage.pop(key, None)
                del self.expirations[key]
                self.locks.pop(key, None)


for _name in WRAPPED_METHODS:
    setattr(
        SweptMemoryStorage,
        _name,
        _wrap_errors(inspect.unwrap(getattr(SweptMemoryStorage, _name))),
    )
