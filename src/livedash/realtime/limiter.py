"""The gateway's rate limits: events per socket and per user, connections per client address,
and hours of history per user."""

from __future__ import annotations

from redis.asyncio import ConnectionPool

from livedash.auth.ratelimit import MEMORY, RateLimiter, hit_together, shared_storage
from livedash.settings import Settings


class SocketLimiter:
    """Counts incoming events and connection attempts; raises `RateLimited` past a limit."""

    def __init__(self, settings: Settings, connection_pool: ConnectionPool | None = None) -> None:
        # A socket lives on one instance: its own window stays in memory. Users and client
        # addresses reach several instances: theirs are shared (Redis) when configured.
        storage_uri = shared_storage(settings.redis_url)
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
        )
        self._address = RateLimiter(
            settings.rate_limit_connections_per_ip,
            namespace="address",
            counted="connection attempts from this address",
            storage_uri=storage_uri,
            connection_pool=connection_pool,
        )

        self._history = RateLimiter(
            settings.rate_limit_history_hours,
            namespace="history",
            counted="hours of history asked for by this user",
            storage_uri=storage_uri,
            connection_pool=connection_pool,
        )

    async def aclose(self) -> None:
        """Let the storages' background work finish."""
        for limiter in (self._socket, self._user, self._address, self._history):
            await limiter.aclose()

    async def event(self, sid: str, user: str | None) -> None:
        """Count one event against its socket and, once authenticated, its user."""
        pairs = [(self._socket, sid)]
        if user is not None:
            pairs.append((self._user, user))
        await hit_together(pairs)

    async def history(self, user: str, hours: int) -> None:
        """Charge a history request spanning `hours` to its user (at most the whole budget,
        so that a long range is slow to repeat but never refused for ever)."""
        await self._history.hit(user, cost=min(hours, self._history.capacity))

    async def connection(self, address: str) -> None:
        """Count one connection attempt from a client address."""
        await self._address.hit(address)
