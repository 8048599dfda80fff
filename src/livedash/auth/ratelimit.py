"""Rate limits: moving windows over a `limits` storage, one limiter per thing counted.

The storage is named by URI: in memory (`MEMORY`, see window_storage.py) for one process;
when several instances serve the same users, a shared one (`async+redis://host:6379`) so that
counts add up wherever a client lands. A refused request is not counted, so a client that waits
`retry_after` seconds gets through again.

A limiter may grow with what its key holds (`per_unit`): a user's budget, say, with the sockets
it has open, so that a wall of screens sharing one account does not lock itself out when they
all reconnect at once. Past the limit, a request is counted against an allowance of `per_unit`
times the units the caller names, counted in memory: the units are this instance's (its own
sockets), and so are their windows. Units may be given as a function, read when the allowance
is asked: in a burst they grow while a request waits its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MovingWindowSupport, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import storage_from_string
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from livedash.auth.window_storage import SCHEME as SWEPT_MEMORY
from livedash.errors import ConfigurationError, RateLimited
from livedash.settings import Settings

log = structlog.get_logger(__name__)

MEMORY = f"{SWEPT_MEMORY}://"

Units = int | Callable[[], int]
"""What a key holds, now or when asked (see the module's docstring)."""


def shared_storage(redis_url: str | None) -> str:
    """Where counts shared by every instance live: Redis when configured, else memory."""
    return "async+" + redis_url if redis_url else MEMORY


def async_storage(uri: str, connection_pool: ConnectionPool | None = None) -> Storage:
    """The async `limits` storage `uri` names (Redis through `connection_pool`)."""
    try:
        options: dict[str, Any] = {}
        if "redis" in uri:
            # The process's own Redis pool (SharedRedis), not one more per limiter.
            options = {"implementation": "redispy", "connection_pool": connection_pool}
        return cast(Storage, storage_from_string(uri, **options))
    except LimitsConfigurationError as error:
        raise ConfigurationError(f"rate limit storage: {error}") from error


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
        per_unit: str | None = None,
        storage: Storage | None = None,
    ) -> None:
        """Count in the storage `storage_uri` names, or in `storage` if given."""
        try:
            self._items = parse_many(limits)
            self._per_unit = parse_many(per_unit) if per_unit else []
        except ValueError as error:
            raise ConfigurationError(f"bad {namespace} rate limit {limits!r}: {error}") from error
        if not storage_uri.startswith("async+"):
            raise ConfigurationError(
                f"rate limit storage {storage_uri!r} must be an async one, such as {MEMORY}"
            )
        if storage is None:
            storage = async_storage(storage_uri, connection_pool)
        self._strategy = MovingWindowRateLimiter(storage)
        self._allowance = (
            MovingWindowRateLimiter(storage_from_string(MEMORY)) if self._per_unit else None
        )
        self._namespace = namespace
        self._counted = counted
        self.rejected = 0  # requests refused (raised), for Prometheus

    @property
    def namespace(self) -> str:
        """What this limiter counts, as refusals name it (`per`)."""
        return self._namespace

    @property
    def capacity(self) -> int:
        """The most one key may be counted within any window: the smallest limit's amount."""
        return min(item.amount for item in self._items)

    async def __aenter__(self) -> RateLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Let the memory storages' expiry tasks finish before their event loop goes away."""
        for strategy in (self._strategy, self._allowance):
            timer = getattr(strategy.storage, "timer", None) if strategy is not None else None
            if isinstance(timer, asyncio.Task):
                await asyncio.gather(timer, return_exceptions=True)

    async def hit(self, key: str, *, cost: int = 1, units: Units = 0) -> None:
        """Count `cost` requests for `key` (holding `units`: see the module's docstring), or
        raise `RateLimited` saying when to retry."""
        with storage_failure_tolerated():
            refusal = await self.refusal(key, cost=cost, units=units)
            if refusal is None:
                refusal = await self.count(key, cost=cost, units=units)
            if refusal is not None:
                self.rejected += 1
                raise refusal

    async def refusal(self, key: str, *, cost: int = 1, units: Units = 0) -> RateLimited | None:
        """Why `cost` more requests for `key` would be refused now, or None (nothing counted)."""
        for item in self._items:
            if not await self._strategy.test(item, self._namespace, key, cost=cost):
                if await self._allows(key, cost, units, count=False):
                    return None
                return await self._refused(item, key)
        return None

    async def count(self, key: str, *, cost: int = 1, units: Units = 0) -> RateLimited | None:
        """Count `cost` requests for `key`; the refusal if concurrent ones took the last slots."""
        for item in self._items:
            if not await self._strategy.hit(item, self._namespace, key, cost=cost):
                if await self._allows(key, cost, units, count=True):
                    return None
                return await self._refused(item, key)
        return None

    async def _allows(self, key: str, cost: int, held: Units, *, count: bool) -> bool:
        """Whether the allowance of the units `held` takes `cost` more for `key` (and, with
        `count`, counts them)."""
        units = held() if callable(held) else held
        if units <= 0 or self._allowance is None:
            return False
        storage = cast(MovingWindowSupport, self._allowance.storage)
        for item in self._per_unit:
            # Keyed by the per-unit item, so the window stays the same as the units change.
            window, limit = item.key_for(self._namespace, key), item.amount * units
            if count:
                if not await storage.acquire_entry(window, limit, item.get_expiry(), cost):
                    return False
            else:
                _, used = await storage.get_moving_window(window, limit, item.get_expiry())
                if used > limit - cost:
                    return False
        return True

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


Charge = tuple[RateLimiter, str] | tuple[RateLimiter, str, Units]
"""A limiter and the key to count against it, and the units that key holds (0 if left out)."""


async def hit_together(pairs: Sequence[Charge], *, tested: Sequence[Charge] = ()) -> None:
    """Count one request against several limiters, or none of them if any refuses.

    Every limit is tested before any is counted, so a request refused by one (a socket's
    excess, say) does not use up another (its user's quota). The `tested` limits may refuse
    the request too, but are not counted (failures, counted with `count_together` later).
    """
    with storage_failure_tolerated():
        for limiter, key, units in map(_with_units, (*tested, *pairs)):
            refusal = await limiter.refusal(key, units=units)
            if refusal is not None:
                limiter.rejected += 1
                raise refusal
        for limiter, key, units in map(_with_units, pairs):
            refusal = await limiter.count(key, units=units)
            if refusal is not None:
                limiter.rejected += 1
                raise refusal


def _with_units(charge: Charge) -> tuple[RateLimiter, str, Units]:
    return charge if len(charge) == 3 else (charge[0], charge[1], 0)


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
