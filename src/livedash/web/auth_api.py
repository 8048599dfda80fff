"""Sign-in over REST: `/api/auth/login`, `/api/auth/refresh` and `/api/auth/logout`.

These routes take no access token (they hand them out). Sign-in attempts are limited per client
address, and failures per (address, user name), so passwords cannot be guessed quickly; the
failures for one user name from every address slow that name's sign-ins down but never refuse
them, so nobody can lock another person out. Failures say only "wrong user name or password".
Refreshes and sign-outs are limited per client address. Audit events are logged without tokens
or passwords.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import ConnectionPool

from livedash.auth.ratelimit import (
    MEMORY,
    RateLimiter,
    count_together,
    hit_together,
    storage_failure_tolerated,
)
from livedash.auth.sessions import (
    MAX_PASSWORD_LENGTH,
    MAX_REFRESH_TOKEN_LENGTH,
    SessionService,
    TokenPair,
)
from livedash.errors import InvalidToken
from livedash.web.api import ApiError
from livedash.web.deps import services

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
MAX_BODY_BYTES = 4096  # enforced by livedash.web.request_limits, for every body under /api/auth


class LoginRequest(BaseModel):
    """A sign-in with user name and password."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class RefreshRequest(BaseModel):
    """A refresh token, to use (refresh) or to end its session (logout)."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=MAX_REFRESH_TOKEN_LENGTH)


class TokenResponse(BaseModel):
    """A new access token and the refresh token that replaces the one sent (if any)."""

    access_token: str
    refresh_token: str = Field(description="Use once; each refresh returns its successor.")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")

    @classmethod
    def of(cls, pair: TokenPair) -> TokenResponse:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_in=pair.expires_in,
        )


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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

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


def login_delay(failures: int) -> float:
    """Seconds a sign-in for a name waits after `failures` recent failures for that name."""
    if failures < LOGIN_SLOWDOWN_AFTER:
        return 0.0
    doublings = min(failures - LOGIN_SLOWDOWN_AFTER, 32)  # the cap comes long before
    return min(LOGIN_SLOWDOWN_FIRST_SECONDS * 2.0**doublings, LOGIN_SLOWDOWN_MAX_SECONDS)


def _pair(address: str, username: str) -> str:
    # An address never holds "/", so no two pairs share a key.
    return f"{address}/{username.casefold()}"


async def _not_stored(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 5.1: tokens are not cached


def _sessions(request: Request) -> SessionService:
    return services(request).sessions


def _limits(request: Request) -> LoginLimits:
    return services(request).login_limits


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


Sessions = Annotated[SessionService, Depends(_sessions)]
Limits = Annotated[LoginLimits, Depends(_limits)]


def install_auth_api(app: FastAPI) -> None:
    """Add the `/api/auth` routes, served by the services' sessions and sign-in limits."""
    router = APIRouter(
        prefix="/api/auth",
        dependencies=[Depends(_not_stored)],
        # 413: bodies over MAX_BODY_BYTES, refused by `RequestLimits` while they arrive.
        responses={status: {"model": ApiError} for status in (401, 413, 422, 429)},
    )

    @router.post("/login")
    async def login(
        body: LoginRequest, request: Request, sessions: Sessions, limits: Limits
    ) -> TokenResponse:
        """Sign in with user name and password: an access token and a refresh token."""
        address = _address(request)
        await limits.admit_login(address, body.username)
        try:
            pair = await sessions.login(body.username, body.password)
        except InvalidToken:
            await limits.login_failed(address, body.username)
            log.info("login_failed", user=body.username, address=address)
            raise
        log.info("login_succeeded", user=pair.username, address=address)
        return TokenResponse.of(pair)

    @router.post("/refresh")
    async def refresh(
        body: RefreshRequest, request: Request, sessions: Sessions, limits: Limits
    ) -> TokenResponse:
        """Trade a refresh token (used up) for a new access token and refresh token."""
        await limits.admit_session_use(_address(request))
        try:
            pair = await sessions.refresh(body.refresh_token)
        except InvalidToken as error:
            reason = error.details.get("reason")
            if reason is not None:
                event = "refresh_reuse_detected" if reason == "reused" else "session_ended"
                log.info(
                    event, user=error.details.get("user"), reason=reason, address=_address(request)
                )
            raise
        return TokenResponse.of(pair)

    @router.post("/logout", status_code=204)
    async def logout(
        body: RefreshRequest, request: Request, sessions: Sessions, limits: Limits
    ) -> None:
        """End the session the refresh token belongs to (every token of it is refused)."""
        await limits.admit_session_use(_address(request))
        user = await sessions.logout(body.refresh_token)
        log.info("logout", user=user, address=_address(request))

    app.include_router(router)
