"""Rate limits: events per socket and per user, connection attempts per client address.

Counts are kept by the `limits` library in a moving window. The storage is named by URI: in
memory (`async+memory://`) for one process; when several instances serve the same users, a
shared one (`async+redis://host:6379`) so that a user's sockets count together wherever they
land. A refused event or connection is not counted, so a client that waits `retry_after`
seconds gets through again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import storage_from_string

from livedash.errors import ConfigurationError, RateLimited
from livedash.settings import Settings

MEMORY = "async+memory://"

# One limit on one key: the limit, and the key's parts (what is counted, and whose).
_Check = tuple[RateLimitItem, tuple[str, str]]


class SocketLimiter:
    """Counts incoming events and connection attempts; raises `RateLimited` past a limit."""

    def __init__(self, settings: Settings, *, storage_uri: str = MEMORY) -> None:
        if not storage_uri.startswith("async+"):
            raise ConfigurationError(f"rate limit storage {storage_uri!r} must be an async one")
        try:
            storage = storage_from_string(storage_uri)
        except LimitsConfigurationError as error:
            raise ConfigurationError(f"rate limit storage: {error}") from error
        self._strategy = MovingWindowRateLimiter(storage)
        self._socket = _parse("rate_limit_socket", settings.rate_limit_socket)
        self._user = _parse("rate_limit_user", settings.rate_limit_user)
        self._address = _parse(
            "rate_limit_connections_per_ip", settings.rate_limit_connections_per_ip
        )

    async def aclose(self) -> None:
        """Let the memory storage's expiry task finish before its event loop goes away."""
        timer = getattr(self._strategy.storage, "timer", None)
        if isinstance(timer, asyncio.Task):
            await asyncio.gather(timer, return_exceptions=True)

    async def event(self, sid: str, user: str | None) -> None:
        """Count one event against its socket and, once authenticated, its user."""
        checks = [(item, ("socket", sid)) for item in self._socket]
        if user is not None:
            checks += [(item, ("user", user)) for item in self._user]
        await self._take(checks)

    async def connection(self, address: str) -> None:
        """Count one connection attempt from a client address."""
        await self._take([(item, ("address", address)) for item in self._address])

    async def _take(self, checks: Sequence[_Check]) -> None:
        # Test every limit before counting, so that an event refused by one limit does not
        # use up another (a user's quota on a socket's excess, say).
        for item, key in checks:
            if not await self._strategy.test(item, *key):
                raise await self._refusal(item, key)
        for item, key in checks:
            if not await self._strategy.hit(item, *key):  # a concurrent event took the last slot
                raise await self._refusal(item, key)

    async def _refusal(self, item: RateLimitItem, key: tuple[str, str]) -> RateLimited:
        stats = await self._strategy.get_window_stats(item, *key)
        retry_after = math.ceil(max(stats.reset_time - time.time(), 0.0) * 1000) / 1000
        what, _ = key
        return RateLimited(
            f"too many {_COUNTED[what]}: at most {item}; retry after {retry_after:g} s",
            retry_after=retry_after,
            limit=str(item),
            per=what,
        )


_COUNTED = {
    "socket": "events on this socket",
    "user": "events from this user",
    "address": "connection attempts from this address",
}


def _parse(name: str, notation: str) -> list[RateLimitItem]:
    try:
        return parse_many(notation)
    except ValueError as error:
        raise ConfigurationError(f"{name}: {error}") from error
