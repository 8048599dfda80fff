"""Sign-in over REST: `/api/auth/login`, `/api/auth/refresh` and `/api/auth/logout`.

These routes take no access token (they hand them out). Sign-in attempts are limited per client
address and per user name, so passwords cannot be guessed quickly; failures say only "wrong
user name or password". Audit events are logged without tokens or passwords.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from livedash.auth.ratelimit import MEMORY, RateLimiter, hit_together
from livedash.auth.sessions import (
    MAX_PASSWORD_LENGTH,
    MAX_REFRESH_TOKEN_LENGTH,
    SessionService,
    TokenPair,
)
from livedash.errors import Internal, InvalidPayload, InvalidToken
from livedash.web.api import ApiError

log = structlog.get_logger(__name__)

# Per user name: slows guessing one account's password to a crawl.
LOGIN_LIMIT_PER_USER = "10/minute"
# Per address, more generous: a hospital's staff often reach us through one proxy or NAT
# address, and a shift change signs many of them in at once.
LOGIN_LIMIT_PER_ADDRESS = "60/minute"
MAX_BODY_BYTES = 4096


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
    """The sign-in rate limits, per client address and per user name."""

    def __init__(self, storage_uri: str = MEMORY) -> None:
        self._by_address = RateLimiter(
            LOGIN_LIMIT_PER_ADDRESS, namespace="login-address", storage_uri=storage_uri
        )
        self._by_user = RateLimiter(
            LOGIN_LIMIT_PER_USER, namespace="login-user", storage_uri=storage_uri
        )
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> LoginLimits:
        await self._stack.enter_async_context(self._by_address)
        await self._stack.enter_async_context(self._by_user)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def hit(self, address: str, username: str) -> None:
        """Count one attempt, or raise `RateLimited`."""
        await hit_together([(self._by_address, address), (self._by_user, username.casefold())])


async def _small_body(request: Request, response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 5.1: tokens are not cached
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise InvalidPayload(f"the request body must be at most {MAX_BODY_BYTES} bytes")


def _sessions(request: Request) -> SessionService:
    sessions: SessionService | None = getattr(request.app.state, "sessions", None)
    if sessions is None:
        raise Internal("the service is still starting")
    return sessions


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


Sessions = Annotated[SessionService, Depends(_sessions)]


def install_auth_api(app: FastAPI, limits: LoginLimits) -> None:
    """Add the `/api/auth` routes; they need `sessions` on the app's state once started."""
    router = APIRouter(
        prefix="/api/auth",
        dependencies=[Depends(_small_body)],
        responses={status: {"model": ApiError} for status in (401, 422, 429)},
    )

    @router.post("/login")
    async def login(body: LoginRequest, request: Request, sessions: Sessions) -> TokenResponse:
        """Sign in with user name and password: an access token and a refresh token."""
        address = _address(request)
        await limits.hit(address, body.username)
        try:
            pair = await sessions.login(body.username, body.password)
        except InvalidToken:
            log.info("login_failed", user=body.username, address=address)
            raise
        log.info("login_succeeded", user=pair.username, address=address)
        return TokenResponse.of(pair)

    @router.post("/refresh")
    async def refresh(body: RefreshRequest, request: Request, sessions: Sessions) -> TokenResponse:
        """Trade a refresh token (used up) for a new access token and refresh token."""
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
    async def logout(body: RefreshRequest, request: Request, sessions: Sessions) -> None:
        """End the session the refresh token belongs to (every token of it is refused)."""
        user = await sessions.logout(body.refresh_token)
        log.info("logout", user=user, address=_address(request))

    app.include_router(router)
