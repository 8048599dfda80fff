"""The REST API under `/api`: bearer tokens, per-user rate limits, one JSON error shape.

Every route on the router needs a valid access token and counts against its user's
`rate_limit_rest`; the page, its static files and `/health` are outside the router and
neither authenticated nor limited.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from livedash.auth.tokens import Principal
from livedash.errors import (
    AuthError,
    ClientError,
    Forbidden,
    InvalidPayload,
    NotAuthenticated,
    RateLimited,
    StoreError,
    Unavailable,
    UnknownAlert,
    UnknownMetric,
)
from livedash.metrics.definitions import METRICS, Tier
from livedash.web.deps import services

log = structlog.get_logger(__name__)


class ApiError(BaseModel):
    """Every REST error body: a code for programs and a message for people."""

    code: str
    message: str
    retry_after: int | None = Field(
        default=None, description="With `rate_limited`: seconds until a request is accepted."
    )


class MetricInfo(BaseModel):
    """One metric livedash serves."""

    name: str
    tier: Tier
    description: str


_STATUS: tuple[tuple[type[ClientError], int], ...] = (
    (NotAuthenticated, 401),
    (AuthError, 401),
    (Forbidden, 403),
    (UnknownMetric, 404),
    (UnknownAlert, 404),
    (InvalidPayload, 422),
    (RateLimited, 429),
    (Unavailable, 503),
)
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ApiError} for status in (401, 429)
}
_bearer = HTTPBearer(auto_error=False, description="An access token, as `livedash token` prints.")
MAX_LISTED_PROBLEMS = 5
# A location part we repeat back: a field name. Anything else may be a key the client made up.
_FIELD = re.compile(r"[A-Za-z0-9_-]{1,40}")


async def authenticated_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, once its token is verified and its user's rate limit allows the request."""
    principal = await verified_user(request, credentials)
    await services(request).rest_limiter.hit(principal.subject)
    return principal


async def verified_user(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller, once its token is verified (signature, claims, the users table)."""
    if credentials is None:
        raise NotAuthenticated("send an access token as `Authorization: Bearer <token>`")
    return await services(request).authenticator.authenticate(credentials.credentials)


async def client_error_response(request: Request, error: ClientError) -> JSONResponse:
    """A `ClientError` as the API's JSON error, with its HTTP status and headers."""
    status = next((code for kind, code in _STATUS if isinstance(error, kind)), 400)
    client = request.client.host if request.client else None
    log.info(
        "api_refused",
        path=request.url.path,
        status=status,
        code=error.code,
        address=client,
        reason=error.message,
    )
    body = ApiError(
        code=error.code,
        message=error.message,
        # HTTP's Retry-After counts whole seconds.
        retry_after=math.ceil(error.retry_after) if error.retry_after is not None else None,
    )
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer error="invalid_token"' if error.code == "invalid_token" else "Bearer"
        )
    if body.retry_after is not None:
        headers["Retry-After"] = str(body.retry_after)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def install_api(app: FastAPI) -> None:
    """Add the `/api` routes to `app`; it needs `settings` and `rest_limiter` on its state."""
    router = APIRouter(
        prefix="/api", dependencies=[Depends(authenticated_user)], responses=ERROR_RESPONSES
    )

    metric_list = [
        MetricInfo(name=d.name, tier=d.tier, description=d.description) for d in METRICS.values()
    ]

    @router.get("/metrics")
    async def metrics() -> list[MetricInfo]:
        """Every metric: its name, tier and meaning."""
        return metric_list

    app.include_router(router)
    app.exception_handler(ClientError)(client_error_response)
    app.exception_handler(RequestValidationError)(validation_error_response)
    app.exception_handler(StoreError)(store_error_response)


async def store_error_response(request: Request, error: StoreError) -> JSONResponse:
    """The database failed: 503 in the API's error shape, the details only in the log."""
    log.warning("api_store_error", path=request.url.path, error=str(error))
    return await client_error_response(request, Unavailable())


async def validation_error_response(
    request: Request, error: RequestValidationError
) -> JSONResponse:
    """A request FastAPI's validation refused: 422 in the API's error shape.

    FastAPI's own answer repeats each refused value (`input`, and `ctx` may hold more), so a
    200 MB field came back as a 200 MB response; this one names the problems only.
    """
    return await client_error_response(request, InvalidPayload(validation_message(error.errors())))


def validation_message(errors: Sequence[Any]) -> str:
    """The first few problems pydantic found, where and what, without the values sent."""
    problems = [
        f"{_location(problem)}: {str(problem.get('msg', 'invalid'))[:120]}"
        for problem in errors[:MAX_LISTED_PROBLEMS]
    ]
    if len(errors) > MAX_LISTED_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_LISTED_PROBLEMS} more")
    return "; ".join(problems) or "the request is not valid"


def _location(problem: Mapping[str, Any]) -> str:
    location = list(problem.get("loc", ()))[:8]
    if problem.get("type") == "extra_forbidden":
        location = location[:-1]  # the unexpected key: the client's own input
    parts = [
        str(part) if isinstance(part, int) or _FIELD.fullmatch(str(part)) else "?"
        for part in location
    ]
    return ".".join(parts) or "request"
