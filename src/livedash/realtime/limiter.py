"""The gateway's rate limits: events per socket and per user, connections per client address,
and hours of history per user.

A user's event and history budgets grow with the sockets it has open on this instance
(`rate_limit_user_per_socket`, `rate_limit_history_hours_per_socket`), so that a wall of
screens sharing one account, all reconnecting after a restart, is not refused; each socket
still has its own limit, so one noisy screen is stopped whatever its user holds. A socket
counts as its user's from its first event after authenticating until it disconnects or sends
one as someone else (or no one).
"""

from __future__ import annotations

from collections import Counter
from functools import partial

from limits.aio.storage import Storage
from redis.asyncio import ConnectionPool

from livedash.auth.ratelimit import (
    MEMORY,
    Charge,
    RateLimiter,
    async_storage,
    hit_together,
    shared_storage,
)
from livedash.settings import Settings


class SocketLimiter:
    """Counts incoming events and connection attempts; raises `RateLimited` past a limit."""

    def __init__(
        self,
        settings: Settings,
        connection_pool: ConnectionPool | None = None,
        *,
        shared: Storage | None = None,
    ) -> None:
        """`shared`: where users' and addresses' windows are counted, if not where the
        settings say (a socket worker's: the main process's, realtime/shared_limits.py)."""
        # A socket lives on one instance: its own window stays in memory. Users and client
        # addresses reach several instances: theirs are shared (Redis) when configured.
        storage_uri = shared_storage(settings.redis_url)
        if shared is None and settings.redis_url is None:
            # One storage for all three, which socket workers count in too.
            shared = async_storage(MEMORY)
        self.shared = shared
        self._socket = RateLimiter(
            settings.rate_limit_socket,
            namespace="socket",
            counted="events on this socket",
            storage_uri=MEMORY,
        )
        self._user = RateLimiter(
            settings.rate_limit_user,
            namespace="user",
            counted="events from this user",
            storage_uri=storage_uri,
            connection_pool=connection_pool,
            storage=shared,
            per_unit=settings.rate_limit_user_per_socket,
        )
        self._address = RateLimiter(
            settings.rate_limit_connections_per_ip,
            namespace="address",
            counted="connection attempts from this address",
            storage_uri=storage_uri,
            connection_pool=connection_pool,
            storage=shared,
        )

        self._history = RateLimiter(
            settings.rate_limit_history_hours,
            namespace="history",
            counted="hours of history asked for by this user",
            storage_uri=storage_uri,
            connection_pool=connection_pool,
            storage=shared,
            per_unit=settings.rate_limit_history_hours_per_socket,
        )
        self._user_of: dict[str, str] = {}
        self._sockets: Counter[str] = Counter()

    async def aclose(self) -> None:
        """Let the storages' background work finish."""
        for limiter in (self._socket, self._user, self._address, self._history):
            await limiter.aclose()

    def rejections(self) -> dict[str, int]:
        """Requests refused so far, by limit."""
        limiters = (self._socket, self._user, self._address, self._history)
        return {limiter.namespace: limiter.rejected for limiter in limiters}

    def sockets_of(self, user: str) -> int:
        """The sockets `user` has open on this instance (that have sent an event as it)."""
        return self._sockets[user]

    async def event(self, sid: str, user: str | None) -> None:
        """Count one event against its socket and, once authenticated, its user."""
        self._belongs(sid, user)
        charges: list[Charge] = [(self._socket, sid)]
        if user is not None:
            charges.append((self._user, user, partial(self.sockets_of, user)))
        await hit_together(charges)

    async def history(self, user: str, hours: int) -> None:
        """Charge a history request spanning `hours` to its user (at most the whole budget,
        so that a long range is slow to repeat but never refused for ever)."""
        cost = min(hours, self._history.capacity)
        await self._history.hit(user, cost=cost, units=partial(self.sockets_of, user))

    async def connection(self, address: str) -> None:
        """Count one connection attempt from a client address."""
        await self._address.hit(address)

    def forget(self, sid: str) -> None:
        """A socket disconnected: it no longer adds to its user's budget."""
        self._belongs(sid, None)

    def _belongs(self, sid: str, user: str | None) -> None:
        was = self._user_of.get(sid)
        if was == user:
            return
        if was is not None:
            self._sockets[was] -= 1
            if self._sockets[was] <= 0:
                del self._sockets[was]
            del self._user_of[sid]
        if user is not None:
            self._user_of[sid] = user
            self._sockets[user] += 1
