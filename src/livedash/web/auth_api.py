"""Sign-in over REST: `/api/auth/login`, `/api/auth/refresh`, `/api/auth/logout`, and
`/api/auth/key` for wall screens signing in with a `dashboard` API key.

These routes take no access token (they hand them out). Sign-in attempts are limited per client
address, and failures per (address, user name), so passwords cannot be guessed quickly; the
failures for one user name from every address slow that name's sign-ins down but never refuse
them, so nobody can lock another person out. Failures say only "wrong user name or password".
Refreshes and sign-outs are limited per client address. Audit events are logged without tokens
or passwords.
"""

from __future__ import annotations

from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from livedash.auth.api_keys import MAX_KEY_LENGTH
from livedash.auth.sessions import (
    MAX_PASSWORD_LENGTH,
    MAX_REFRESH_TOKEN_LENGTH,
    SessionService,
    TokenPair,
)
from livedash.auth.throttle import LoginLimits
from livedash.errors import AuthError, Forbidden, InvalidToken
from livedash.web.deps import services
from livedash.web.problems import problem_responses

log = structlog.get_logger(__name__)

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


class KeySignInRequest(BaseModel):
    """A wall screen's `dashboard` API key."""

    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)


class AccessTokenResponse(BaseModel):
    """An access token for the key's user; sign in with the key again before it expires."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    username: str = Field(description="The user the key signs in as.")


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
        responses=problem_responses(401, 413, 422, 429, 503),
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

    @router.post("/key")
    async def key_sign_in(
        body: KeySignInRequest, request: Request, sessions: Sessions, limits: Limits
    ) -> AccessTokenResponse:
        """Sign a wall screen in with a `dashboard` API key: an access token for the key's
        user, and no refresh token (the screen signs in with its key again before expiry)."""
        address = _address(request)
        await limits.admit_key_sign_in(address)
        try:
            grant = await sessions.sign_in_with_key(body.api_key)
        except (AuthError, Forbidden):
            await limits.key_sign_in_failed(address)
            log.info("key_sign_in_failed", address=address)
            raise
        log.info("key_sign_in", user=grant.username, key=grant.key_name, address=address)
        return AccessTokenResponse(
            access_token=grant.access_token, expires_in=grant.expires_in, username=grant.username
        )

    @router.post("/logout", status_code=204)
    async def logout(
        body: RefreshRequest, request: Request, sessions: Sessions, limits: Limits
    ) -> None:
        """End the session the refresh token belongs to (every token of it is refused)."""
        await limits.admit_session_use(_address(request))
        user = await sessions.logout(body.refresh_token)
        log.info("logout", user=user, address=_address(request))

    app.include_router(router)
