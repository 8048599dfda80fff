"""`POST /api/ingest`: the route of REST ingest (the writer is `livedash.ingest`)."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from livedash.auth.api_keys import ApiKeyInfo
from livedash.errors import InvalidPayload, NotAuthenticated
from livedash.ingest import IngestRequest, IngestResult, validation_message
from livedash.web.deps import services
from livedash.web.problems import problem_responses

log = structlog.get_logger(__name__)

_bearer = HTTPBearer(auto_error=False, description="An API key, as `livedash api-key` prints.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")


async def ingest_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> ApiKeyInfo:
    """The calling key, once it is valid for ingest and within its rate limit."""
    key = credentials.credentials if credentials is not None else header
    if not key:
        raise NotAuthenticated(
            "send an API key as `Authorization: Bearer ldk_...` or `X-API-Key: ldk_...`"
        )
    return await services(request).ingest.admit(key)


def install_ingest(app: FastAPI) -> None:
    """Add `POST /api/ingest` to `app`; it is served by the services' `Ingest`.

    Its body size is capped by `livedash.web.request_limits.RequestLimits` in front of the app.
    """
    router = APIRouter(prefix="/api", responses=problem_responses(401, 503))

    @router.post(
        "/ingest",
        responses=problem_responses(400, 403, 413, 422, 429),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inlined(IngestRequest)}},
            }
        },
    )
    async def ingest(
        request: Request, key: Annotated[ApiKeyInfo, Depends(ingest_key)]
    ) -> IngestResult:
        """Apply a batch of inserts, updates and deletes in one transaction: all or nothing."""
        # Validated here rather than by FastAPI, so that a refusal names the operation.
        service = services(request).ingest
        body = await request.body()
        try:
            parsed = IngestRequest.model_validate_json(body)
        except ValidationError as error:
            message = validation_message(error)
            log.info("ingest_refused", key=key.name, reason=message)
            raise InvalidPayload(message) from error
        return await service.apply(key, parsed)

    app.include_router(router)


def _inlined(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its definitions written in place, to embed in OpenAPI."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return inline(definitions[reference.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined
