"""Per-key rate limits (moving window) over a `limits` storage: memory now, `redis://` later.

A refused request is not counted, so a client that waits `retry_after` seconds gets through.
"""

from __future__ import annotations

import asyncio
import math
import time
from types import TracebackType

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import storage_from_string

from livedash.errors import ConfigurationError, RateLimited

MEMORY = "async+memory://"


class RateLimiter:
    """Moving-window limits, such as "100/minute;10/second", counted per key.

    The storage is opened on `async with` and named by URI, so a shared one
    (`async+redis://host:6379`) can replace the per-process memory one without touching callers.
    """

    def __init__(self, limits: str, *, namespace: str, storage_uri: str = MEMORY) -> None:
        try:
            self._items = parse_many(limits)
        except ValueError as error:
            raise ConfigurationError(f"bad {namespace} rate limit {limits!r}: {error}") from error
        if not storage_uri.startswith("async+"):
            raise ConfigurationError(
                f"rate limit storage {storage_uri!r} must be an async one, such as {MEMORY}"
            )
        self._namespace = namespace
        self._storage_uri = storage_uri
        self._strategy: MovingWindowRateLimiter | None = None

    async def __aenter__(self) -> RateLimiter:
        try:
            storage = storage_from_string(self._storage_uri)
        except LimitsConfigurationError as error:
            raise ConfigurationError(f"rate limit storage: {error}") from error
        self._strategy = MovingWindowRateLimiter(storage)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        strategy, self._strategy = self._strategy, None
        # The memory storage expires old entries in a task of its own: let it finish here rather
        # than leave it pending on an event loop that may be about to close.
        timer = getattr(strategy.storage if strategy else None, "timer", None)
        if isinstance(timer, asyncio.Task):
            await asyncio.gather(timer, return_exceptions=True)

    async def hit(self, key: str) -> None:
        """Count one request for `key`, or raise `RateLimited` (whole seconds to wait)."""
        strategy = self._open()
        # Test every limit before counting, so that a request refused by one limit does not
        # use up another.
        for item in self._items:
            if not await strategy.test(item, self._namespace, key):
                raise await self._refusal(item, key)
        for item in self._items:
            if not await strategy.hit(item, self._namespace, key):
                raise await self._refusal(item, key)  # a concurrent request took the last slot

    def _open(self) -> MovingWindowRateLimiter:
        if self._strategy is None:
            raise RuntimeError("the rate limiter is used outside `async with`")
        return self._strategy

    async def _refusal(self, item: RateLimitItem, key: str) -> RateLimited:
        stats = await self._open().get_window_stats(item, self._namespace, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimited(
            f"too many requests: at most {item}; retry after {retry_after} s",
            retry_after=retry_after,
            limit=str(item),
        )
