"""Every REST error as RFC 9457 problem details, served as `application/problem+json`.

    {"type": "https://livedash.dev/problems/forbidden", "title": "Forbidden", "status": 403,
     "detail": "not allowed for this token: 'CARD'", "instance": "/api/snapshot",
     "code": "forbidden"}

- `type` is `https://livedash.dev/problems/<code>`: an identifier, as stable as the code, listed
  in docs/api.md ("Problem types"); clients compare it, they need not fetch it.
- `code` is the value socket `error` events carry for the same refusal (`livedash.errors`).
- `title` is the same for every problem of a type; `detail` says what was wrong with this
  request and never repeats the values sent (a validation error names fields, not inputs).
- `instance` is the request's path; `retry_after` (whole seconds) comes with `rate_limited` and
  `unavailable`, as does the `Retry-After` header. A 401 carries `WWW-Authenticate`.

The handlers installed here answer every error of the app: a `ClientError` (the status of its
class), the database out of reach (503 `unavailable`), a request FastAPI's validation refused
(422 `invalid_payload`), Starlette's own (404 `not_found`, 405 `method_not_allowed`) and
anything unexpected (500 `internal`, logged). `RequestLimits`, in front of the app, sends its
413 and 431 with `problem_body`. In the OpenAPI schema, every response declared with
`problem_responses` (and FastAPI's own 422) is `application/problem+json` with this model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from livedash.errors import (
    AuthError,
    ClientError,
    Forbidden,
    InvalidPayload,
    NotAuthenticated,
    RateLimited,
    ReportNotReady,
    StoreError,
    Unavailable,
    UnknownAlert,
    UnknownDepartment,
    UnknownMetric,
    UnknownReport,
)

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://livedash.dev/problems/"
MAX_LISTED_PROBLEMS = 5

STATUS_OF: tuple[tuple[type[ClientError], int], ...] = (
    (NotAuthenticated, 401),
    (AuthError, 401),
    (Forbidden, 403),
    (UnknownMetric, 404),
    (UnknownAlert, 404),
    (UnknownDepartment, 404),
    (UnknownReport, 404),
    (ReportNotReady, 409),
    (InvalidPayload, 422),
    (RateLimited, 429),
    (Unavailable, 503),
)
"""A `ClientError`'s HTTP status, by its class (first match); any other is a 400."""

TITLES: dict[str, str] = {
    "bad_request": "Bad request",
    "invalid_payload": "Invalid request",
    "unknown_metric": "Unknown metric",
    "unknown_alert": "Unknown alert",
    "unknown_department": "Unknown department",
    "unknown_report": "Unknown report",
    "report_not_ready": "Report not ready",
    "forbidden": "Forbidden",
    "not_authenticated": "Not authenticated",
    "auth_failed": "Authentication failed",
    "invalid_token": "Invalid token",
    "rate_limited": "Too many requests",
    "unavailable": "Service unavailable",
    "internal": "Internal error",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "payload_too_large": "Request body too large",
    "headers_too_large": "Request headers too large",
}
"""Each problem type's title; a code without one takes its status's reason phrase."""

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
# A location part we repeat back: a field name. Anything else may be a key the client made up.
_FIELD = re.compile(r"[A-Za-z0-9_-]{1,40}")
_DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)


class Problem(BaseModel):
    """Every REST error body (RFC 9457 problem details, `application/problem+json`)."""

    type: str = Field(description="`https://livedash.dev/problems/<code>`; see `code`.")
    title: str = Field(description="The problem type's summary, the same for every occurrence.")
    status: int = Field(ge=400, le=599, description="The HTTP status, repeated.")
    detail: str = Field(description="What was wrong with this request.")
    instance: str | None = Field(default=None, description="The request's path.")
    code: str = Field(description="The same code as the socket `error` event's.")
    retry_after: int | None = Field(
        default=None,
        description="With `rate_limited` and `unavailable`: seconds until the request may be "
        "served (also the `Retry-After` header).",
    )


class ProblemResponse(JSONResponse):
    """A JSON response sent as `application/problem+json`."""

    media_type = PROBLEM_JSON


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    retry_after: float | None = None,
) -> Problem:
    """The problem details of one refusal."""
    return Problem(
        type=TYPE_BASE + code,
        title=TITLES.get(code) or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance,
        code=code,
        # HTTP's Retry-After counts whole seconds.
        retry_after=math.ceil(retry_after) if retry_after is not None else None,
    )


def problem_body(body: Problem) -> bytes:
    """`body` as sent."""
    return body.model_dump_json(exclude_none=True).encode()


def problem_response(body: Problem, headers: Mapping[str, str] | None = None) -> ProblemResponse:
    """`body` as the response, with `Retry-After` when it says when to come back."""
    sent = dict(headers or {})
    if body.retry_after is not None:
        sent["Retry-After"] = str(body.retry_after)
    return ProblemResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=body.status, headers=sent
    )


def instance_of(request: Request) -> str:
    """The request's path, as it was sent (percent-encoded)."""
    raw = request.scope.get("raw_path")
    return raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path


async def client_error_response(request: Request, error: ClientError) -> ProblemResponse:
    """A `ClientError` as problem details, with its HTTP status and headers."""
    status = next((code for kind, code in STATUS_OF if isinstance(error, kind)), 400)
    client = request.client.host if request.client else None
    log.info(
        "api_refused",
        path=request.url.path,
        status=status,
        code=error.code,
        address=client,
        reason=error.message,
    )
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer error="invalid_token"' if error.code == "invalid_token" else "Bearer"
        )
    body = problem(
        status,
        error.code,
        error.message,
        instance=instance_of(request),
        retry_after=error.retry_after,
    )
    return problem_response(body, headers)


async def store_error_response(request: Request, error: Exception) -> ProblemResponse:
    """The database failed: 503 `unavailable`, the details only in the log."""
    log.warning("api_store_error", path=request.url.path, error=str(error))
    return await client_error_response(request, Unavailable())


async def validation_error_response(
    request: Request, error: RequestValidationError
) -> ProblemResponse:
    """A request FastAPI's validation refused: 422 `invalid_payload`.

    FastAPI's own answer repeats each refused value (`input`, and `ctx` may hold more), so a
    200 MB field came back as a 200 MB response; this one names the problems only.
    """
    return await client_error_response(request, InvalidPayload(validation_message(error.errors())))


async def http_error_response(request: Request, error: HTTPException) -> ProblemResponse:
    """Starlette's own refusals: no route at this path (404), not this method (405), ..."""
    status = error.status_code
    if status == 404:
        detail = "nothing is served at this path"
    elif status == 405:
        detail = f"{request.method} is not served at this path"
    else:
        detail = error.detail if isinstance(error.detail, str) else HTTPStatus(status).phrase
    code = _HTTP_CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
    body = problem(status, code, detail, instance=instance_of(request))
    return problem_response(body, error.headers)


async def internal_error_response(request: Request, error: Exception) -> ProblemResponse:
    """Anything unexpected: 500 `internal`; Starlette re-raises the error, and the server
    logs its traceback."""
    log.error("api_failed", path=request.url.path, error=type(error).__name__)
    body = problem(500, "internal", "internal error", instance=instance_of(request))
    return problem_response(body)


def validation_message(errors: Sequence[Any]) -> str:
    """The first few problems pydantic found, where and what, without the values sent."""
    problems = [
        f"{_location(found)}: {str(found.get('msg', 'invalid'))[:120]}"
        for found in errors[:MAX_LISTED_PROBLEMS]
    ]
    if len(errors) > MAX_LISTED_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_LISTED_PROBLEMS} more")
    return "; ".join(problems) or "the request is not valid"


def _location(found: Mapping[str, Any]) -> str:
    location = list(found.get("loc", ()))[:8]
    if found.get("type") == "extra_forbidden":
        location = location[:-1]  # the unexpected key: the client's own input
    parts = [
        str(part) if isinstance(part, int) or _FIELD.fullmatch(str(part)) else "?"
        for part in location
    ]
    return ".".join(parts) or "request"


_DESCRIPTIONS = {
    401: "No access token, or one that is not valid (`not_authenticated`, `invalid_token`).",
    403: "Outside the caller's role or departments (`forbidden`).",
    404: "No such thing among those the caller may see.",
    413: "The request body is too large (`payload_too_large`).",
    422: "The request is not valid (`invalid_payload`).",
    429: "Too many requests (`rate_limited`): see `retry_after`.",
    503: "The database cannot be reached (`unavailable`): see `retry_after`.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring problem details for `statuses`."""
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS.get(status) or HTTPStatus(status).phrase,
        }
        for status in statuses
    }


def install_problems(app: FastAPI) -> None:
    """Answer every error of `app` with problem details, and declare them so in its OpenAPI."""
    app.exception_handler(ClientError)(client_error_response)
    app.exception_handler(RequestValidationError)(validation_error_response)
    app.exception_handler(StoreError)(store_error_response)
    for failure in _DATABASE_DOWN:
        app.exception_handler(failure)(store_error_response)
    app.exception_handler(HTTPException)(http_error_response)
    app.exception_handler(Exception)(internal_error_response)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _as_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _as_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every error response as `application/problem+json` with `Problem`, and
    on every operation the refusals any may meet (431 and 500; 400 and 413 with a body)."""
    reference = {"$ref": "#/components/schemas/Problem"}
    problem_content = {PROBLEM_JSON: {"schema": reference}}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                declared = response.get("content", {}).get("application/json", {})
                name = str(declared.get("schema", {}).get("$ref", "")).rsplit("/", 1)[-1]
                if name in ("Problem", "HTTPValidationError"):
                    response["content"] = problem_content
                    if status == "422":
                        response["description"] = _DESCRIPTIONS[422]
            # What `RequestLimits` (in front of the app) refuses, and any unexpected failure.
            refusals = {"431": "The request line and headers are too large.", "500": "Failed."}
            if "requestBody" in operation:
                refusals |= {"400": "The body cannot be read.", "413": _DESCRIPTIONS[413]}
            for status, description in refusals.items():
                responses.setdefault(
                    status, {"description": description, "content": problem_content}
                )
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    return schema
