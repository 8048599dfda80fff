"""The rate limits' in-process storage: no sweep per hit, expired windows still dropped."""

from __future__ import annotations

import threading

import pytest
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from livedash.auth import window_storage
from livedash.auth.ratelimit import MEMORY, RateLimiter
from livedash.auth.window_storage import SWEEP_SECONDS, SweptMemoryStorage
from livedash.errors import RateLimited


class FakeTime:
    """`time.time()` for limits' entries and the sweep, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr("limits.aio.storage.memory.time", fake)
    monkeypatch.setattr(window_storage, "time", fake)
    return fake


async def test_the_stock_storage_sweeps_through_a_thread_after_hits() -> None:
    # What SweptMemoryStorage replaces, by the name it overrides: if limits renames it, this
    # fails and the override below would silently stop applying.
    stock = MemoryStorage()
    limiter = MovingWindowRateLimiter(stock)
    await limiter.hit(parse("5/second"), "socket", "a")
    assert stock.timer is not None
    assert hasattr(MemoryStorage, "_MemoryStorage__schedule_expiry")
    await stock.timer


async def test_a_storm_of_new_keys_starts_no_sweep_task_and_no_thread() -> None:
    storage = SweptMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    threads = threading.active_count()
    for key in range(2000):
        assert await limiter.hit(parse("5/second"), "socket", str(key))
    assert storage.timer is None
    assert storage.sweeps == 0
    assert threading.active_count() == threads
    assert len(storage.events) == 2000


async def test_expired_windows_are_dropped_by_the_first_hit_after_the_interval(
    clock: FakeTime,
) -> None:
    storage = SweptMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    for key in range(100):
        await limiter.hit(parse("5/second"), "socket", f"gone-{key}")
    await limiter.hit(parse("5/minute"), "socket", "kept")
    clock.now += SWEEP_SECONDS
    await limiter.hit(parse("5/second"), "socket", "new")
    assert storage.sweeps == 1
    assert sorted(storage.events) == sorted(
        [parse("5/minute").key_for("socket", "kept"), parse("5/second").key_for("socket", "new")]
    )
    assert len(storage.locks) <= len(storage.events)


async def test_a_partly_expired_window_keeps_its_live_entries(clock: FakeTime) -> None:
    storage = SweptMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    item = parse("3/minute")
    await limiter.hit(item, "user", "ann")
    await limiter.hit(item, "user", "ann")
    clock.now += 40
    await limiter.hit(item, "user", "ann")
    clock.now += 30  # the first two are past the minute, the third is not
    storage.sweep(clock.now)
    assert len(storage.events[item.key_for("user", "ann")]) == 1
    assert await limiter.hit(item, "user", "ann")
    assert await limiter.hit(item, "user", "ann")
    assert not await limiter.hit(item, "user", "ann")


async def test_limits_are_enforced_the_same_through_the_swept_storage(clock: FakeTime) -> None:
    assert MEMORY.startswith(window_storage.SCHEME)
    limiter = RateLimiter("2/second", namespace="socket", storage_uri=MEMORY)
    await limiter.hit("s1")
    await limiter.hit("s1")
    with pytest.raises(RateLimited):
        await limiter.hit("s1")
    await limiter.hit("s2")  # another key has its own window
    clock.now += 1.01
    await limiter.hit("s1")


def _wrappers(function: object) -> int:
    depth = 0
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
        depth += 1
    return depth


def test_each_storage_call_goes_through_one_error_wrapper() -> None:
    # limits wraps a subclass's inherited methods again (and Storage's twice): every call
    # then paid for four wrappers. The one left still turns errors into StorageError.
    for name in window_storage.WRAPPED_METHODS:
        assert _wrappers(getattr(MemoryStorage, name)) >= 1, name  # limits still wraps it
        assert _wrappers(getattr(SweptMemoryStorage, name)) == 1, name
