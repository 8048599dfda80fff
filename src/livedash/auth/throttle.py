"""Sign-in throttling: attempts per address, failures per (address, user name), and a
slow-down (never a refusal) for a user name that fails from everywhere, so that nobody can
lock another person out. Refreshes and sign-outs are limited per address."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import structlog
from redis.asyncio import ConnectionPool

from livedash.auth.ratelimit import (
    MEMORY,
    RateLimiter,
    count_together,
    hit_together,
    storage_failure_tolerated,
)

log = structlog.get_logger(__name__)

# Every attempt per address, generous: a hospital's staff often reach us through one proxy or
# NAT address, and a shift change signs many of them in at once. Counted before the password
# is checked, so it also bounds the attempts one client has in flight at once.
LOGIN_LIMIT_PER_ADDRESS = "60/minute"
# Failures per (address, user name): one client guessing one account's password. Successes are
# not counted, and another address's failures never refuse this pair.
LOGIN_FAILURES_PER_ADDRESS_AND_USER = "10/minute"
# Failures per user name from every address only slow that name's attempts down: refusing them
# would let anyone lock the user out. The window holds more failures than the longest delay needs.
LOGIN_FAILURES_PER_USER = "50 per 15 minutes"
LOGIN_SLOWDOWN_AFTER = 5
LOGIN_SLOWDOWN_FIRST_SECONDS = 0.25
LOGIN_SLOWDOWN_MAX_SECONDS = 3.0
# Refreshes and sign-outs per address, generous for the same reason (the page refreshes each
# tab's access token a minute before it expires, and retries a refused refresh later).
SESSION_LIMIT_PER_ADDRESS = "120/minute"
# Wall screens sign in with a key as often as others refresh (so a wall of screens behind one
# address restarts together within the same limit); wrong keys count as failures under a name
# no user can have (user names hold no spaces here).
KEY_SIGN_IN = "api key"


class LoginLimits:
    """The limits of `/api/auth`: sign-in attempts, sign-in failures, refreshes and sign-outs."""

    def __init__(
        self, storage_uri: str = MEMORY, connection_pool: ConnectionPool | None = None
    ) -> None:
        self._by_address = RateLimiter(
            LOGIN_LIMIT_PER_ADDRESS,
            namespace="login-address",
            counted="sign-in attempts",
            storage_uri=storage_uri,
            connection_pool=connection_pool,
        )
        self._failures_by_pair = RateLimiter(
            LOGIN_FAILURES_PER_ADDRESS_AND_USER,
            namespace="login-failures-address-user",
            counted="failed sign-ins",
            storage_uri=storage_uri,
            connection_pool=connection_pool,
        )
        self._failures_by_user = RateLimiter(
            LOGIN_FAILURES_PER_USER,
            namespace="login-failures-user",
            storage_uri=storage_uri,
            connection_pool=connection_pool,
        )
        self._sessions_by_address = RateLimiter(
            SESSION_LIMIT_PER_ADDRESS,
            namespace="session-address",
            counted="refreshes and sign-outs",
            storage_uri=storage_uri,
            connection_pool=connection_pool,
        )
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> LoginLimits:
        for limiter in (
            self._by_address,
            self._failures_by_pair,
            self._failures_by_user,
            self._sessions_by_address,
        ):
            await self._stack.enter_async_context(limiter)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    def rejections(self) -> dict[str, int]:
        """Requests refused so far, by limit (failures per user only slow sign-ins down)."""
        limiters = (self._by_address, self._failures_by_pair, self._sessions_by_address)
        return {limiter.namespace: limiter.rejected for limiter in limiters}

    async def admit_login(self, address: str, username: str) -> None:
        """Count one sign-in attempt, or raise `RateLimited`; then wait out the name's delay."""
        await hit_together(
            [(self._by_address, address)],
            tested=[(self._failures_by_pair, _pair(address, username))],
        )
        failures = 0
        with storage_failure_tolerated():
            failures = await self._failures_by_user.used(username.casefold())
        delay = login_delay(failures)
        if delay > 0:
            log.info("login_slowed", user=username, address=address, seconds=delay)
            await asyncio.sleep(delay)

    async def login_failed(self, address: str, username: str) -> None:
        """Count a failed sign-in for the pair and for the user name."""
        await count_together(
            [
                (self._failures_by_pair, _pair(address, username)),
                (self._failures_by_user, username.casefold()),
            ]
        )

    async def admit_session_use(self, address: str) -> None:
        """Count one refresh or sign-out, or raise `RateLimited`."""
        await hit_together([(self._sessions_by_address, address)])

    async def admit_key_sign_in(self, address: str) -> None:
        """Count one sign-in with an API key (a wall screen's) as a session use, or raise
        `RateLimited`, also once the address has presented too many wrong keys."""
        await hit_together(
            [(self._sessions_by_address, address)],
            tested=[(self._failures_by_pair, _pair(address, KEY_SIGN_IN))],
        )

    async def key_sign_in_failed(self, address: str) -> None:
        """Count a refused API key for the address."""
        await count_together([(self._failures_by_pair, _pair(address, KEY_SIGN_IN))])


def login_delay(failures: int) -> float:
    """Seconds a sign-in for a name waits after `failures` recent failures for that name."""
    if failures < LOGIN_SLOWDOWN_AFTER:
        return 0.0
    doublings = min(failures - LOGIN_SLOWDOWN_AFTER, 32)  # the cap comes long before
    return min(LOGIN_SLOWDOWN_FIRST_SECONDS * 2.0**doublings, LOGIN_SLOWDOWN_MAX_SECONDS)


def _pair(address: str, username: str) -> str:
    # An address never holds "/", so no two pairs share a key.
    return f"{address}/{username.casefold()}"
