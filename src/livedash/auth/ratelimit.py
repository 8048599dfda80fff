"""Rate limits: moving windows over a `limits` storage, one limiter per thing counted.

The storage is named by URI: in memory (`async+memory://`) for one process; when several
instances serve the same users, a shared one (`async+redis://host:6379`) so that counts add up
wherever a client lands. A refused request is not counted, so a client that waits
`retry_after` seconds gets through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import storage_from_string
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from livedash.errors import ConfigurationError, RateLimited
from livedash.settings import Settings

log = structlog.get_logger(__name__)

MEMORY = "async+memory://"


def shared_storage(redis_url: str | None) -> str:
    """Where counts shared by every instance live: Redis when configured, else memory."""
    return "async+" + redis_url if redis_url else MEMORY


class RateLimiter:
    """Limits such as "100/minute;10/second", counted per key within one `namespace`."""

    def __init__(
        self,
        limits: str,
        *,
        namespace: str,
        counted: str = "requests",
        storage_uri: str = MEMORY,
        connection_pool: ConnectionPool | None = None,
    ) -> None:
        try:
            self._items = parse_many(limits)
        except ValueError as error:
            raise ConfigurationError(f"bad {namespace} rate limit {limits!r}: {error}") from error
        if not storage_uri.startswith("async+"):
            raise ConfigurationError(
                f"rate limit storage {storage_uri!r} must be an async one, such as {MEMORY}"
            )
        try:
            options: dict[str, Any] = {}
            if "redis" in storage_uri:
                # The process's own Redis pool (SharedRedis), not one more per limiter.
                options = {"implementation": "redispy", "connection_pool": connection_pool}
            storage = storage_from_string(storage_uri, **options)
        except LimitsConfigurationError as error:
            raise ConfigurationError(f"rate limit storage: {error}") from error
        self._strategy = MovingWindowRateLimiter(storage)
        self._namespace = namespace
        self._counted = counted

    @property
    def capacity(self) -> int:
        """The most one key may be counted within any window: the smallest limit's amount."""
        return min(item.amount for item in self._items)

    async def __aenter__(self) -> RateLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Let the memory storage's expiry task finish before its event loop goes away."""
        timer = getattr(self._strategy.storage, "timer", None)
        if isinstance(timer, asyncio.Task):
            await asyncio.gather(timer, return_exceptions=True)

    async def hit(self, key: str, *, cost: int = 1) -> None:
        """Count `cost` requests for `key`, or raise `RateLimited` saying when to retry."""
        with storage_failure_tolerated():
            refusal = await self.refusal(key, cost=cost)
            if refusal is None:
                refusal = await self.count(key, cost=cost)
            if refusal is not None:
                raise refusal

    async def refusal(self, key: str, *, cost: int = 1) -> RateLimited | None:
        """Why `cost` more requests for `key` would be refused now, or None (nothing counted)."""
        for item in self._items:
            if not await self._strategy.test(item, self._namespace, key, cost=cost):
                return await self._refused(item, key)
        return None

    async def count(self, key: str, *, cost: int = 1) -> RateLimited | None:
        """Count `cost` requests for `key`; the refusal if concurrent ones took the last slots."""
        for item in self._items:
            if not await self._strategy.hit(item, self._namespace, key, cost=cost):
                return await self._refused(item, key)
        return None

    async def used(self, key: str) -> int:
        """How many have been counted for `key` within the window of the first limit."""
        item = self._items[0]
        stats = await self._strategy.get_window_stats(item, self._namespace, key)
        return item.amount - stats.remaining

    async def _refused(self, item: RateLimitItem, key: str) -> RateLimited:
        stats = await self._strategy.get_window_stats(item, self._namespace, key)
        retry_after = math.ceil(max(stats.reset_time - time.time(), 0.0) * 1000) / 1000
        return RateLimited(
            f"too many {self._counted}: at most {item}; retry after {retry_after:g} s",
            retry_after=retry_after,
            limit=str(item),
            per=self._namespace,
        )


async def hit_together(
    pairs: Sequence[tuple[RateLimiter, str]], *, tested: Sequence[tuple[RateLimiter, str]] = ()
) -> None:
    """Count one request against several limiters, or none of them if any refuses.

    Every limit is tested before any is counted, so a request refused by one (a socket's
    excess, say) does not use up another (its user's quota). The `tested` limits may refuse
    the request too, but are not counted (failures, counted with `count_together` later).
    """
    with storage_failure_tolerated():
        for limiter, key in (*tested, *pairs):
            refusal = await limiter.refusal(key)
            if refusal is not None:
                raise refusal
        for limiter, key in pairs:
            refusal = await limiter.count(key)
            if refusal is not None:
                raise refusal


async def count_together(pairs: Sequence[tuple[RateLimiter, str]]) -> None:
    """Count one event (a failure, say) against several limiters; a full window is no error."""
    with storage_failure_tolerated():
        for limiter, key in pairs:
            await limiter.count(key)


@contextlib.contextmanager
def storage_failure_tolerated() -> Iterator[None]:
    """Let the request through, and log it, when the shared storage cannot be reached."""
    try:
        yield
    except (RedisError, OSError) as error:
        # A shared storage that is down must not lock every user out: let the request
        # through (the per-socket limits, kept in memory, still apply) and say so.
        log.warning("rate_limit_storage_unavailable", error=str(error))


def check_rate_limits(settings: Settings) -> None:
    """Refuse, at start, any rate-limit setting the `limits` notation cannot read."""
    for name, value in settings.model_dump().items():
        if name.startswith("rate_limit_"):
            try:
                parse_many(value)
            except ValueError as error:
                raise ConfigurationError(
                    f"bad {name.removeprefix('rate_limit_')} rate limit {value!r}: {error}"
                ) from error
