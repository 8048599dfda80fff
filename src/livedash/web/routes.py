"""Page routes (the dashboard, the REST API's docs at `/docs`) and the health endpoints.

- `/health` tells anyone whether the instance serves (its status and HTTP code, for a load
  balancer); what an operator needs beyond that (role, feed position, slot, cache, sockets)
  goes only to a `super_admin` token, since feed positions and change times say how much
  happens in the hospital.
- `/health/live`: the process answers (nothing else is checked): restart it when it does not.
- `/health/ready`: whether it should get new clients, check by check
  (`livedash.observability.readiness`); 503 when not. Anyone sees which checks fail; their
  reasons and figures go to a `super_admin` token, as with `/health`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from livedash import __version__
from livedash.errors import Forbidden
from livedash.services import Services
from livedash.store.models import Role
from livedash.web.api import verified_user
from livedash.web.deps import services
from livedash.web.problems import problem_responses

STATIC_DIR = Path(__file__).parent / "static"
_bearer = HTTPBearer(auto_error=False, description="A super_admin access token, for the details.")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
# The token is optional: the empty requirement says so to OpenAPI clients.
_TOKEN_OPTIONAL: dict[str, Any] = {"security": [{}, {"HTTPBearer": []}]}


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["alive"] = "alive"


class CheckVerdict(BaseModel):
    """One check of `/health/ready`; with a super_admin token, also its reason and figures."""

    model_config = ConfigDict(extra="allow")

    ok: bool
    required: bool = Field(
        description="False: reported only, never makes the instance not ready (`main_app`)."
    )
    reason: str | None = Field(default=None, description="Why, in words (super_admin only).")


class InstanceIdentity(BaseModel):
    """Which instance answered (super_admin only)."""

    instance: str
    role: Literal["leader", "follower"]
    version: str
    started_at: datetime


class ReadinessAnswer(BaseModel):
    """Whether this instance should get new clients, and every check behind the verdict."""

    status: Literal["ready", "not_ready"]
    failing: list[str] = Field(description="The required checks that are not ok.")
    checks: dict[str, CheckVerdict] = Field(
        description="By name: database, redis (when configured), feed, replication_slot (the "
        "leader on PostgreSQL), job_queue, memory, connections, main_app (when configured)."
    )
    instance: InstanceIdentity | None = None


def install_routes(app: FastAPI) -> None:
    """Add the dashboard page, the API docs page, their static assets and `/health` to `app`."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    # Swagger UI (swagger-ui-dist, copied into static/vendor by make) over /openapi.json.
    @router.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")

    @router.get("/health", responses=problem_responses(401, 403), openapi_extra=_TOKEN_OPTIONAL)
    async def health(request: Request, credentials: Bearer) -> JSONResponse:
        """Whether this instance serves; with a super_admin token, what an operator needs:
        role, feed, slot, cache, sockets."""
        body, status_code = await _health(services(request))
        if credentials is None:
            return JSONResponse({"status": body["status"]}, status_code=status_code)
        # Not charged to the REST limit: monitoring polls it, and the answer costs no query
        # beyond the token's own check.
        principal = await verified_user(request, credentials)
        if principal.role is not Role.SUPER_ADMIN:
            raise Forbidden("the details of /health are for super_admin tokens")
        return JSONResponse(body, status_code=status_code)

    @router.get("/health/live")
    async def live() -> Liveness:
        """The process answers; nothing else is checked (restart it when this fails)."""
        return Liveness()

    # Not ready is answered 503 with the same body, which is no problem details: like
    # /health's 503, it is left out of the declared error responses.
    @router.get(
        "/health/ready",
        response_model=ReadinessAnswer,
        responses=problem_responses(401, 403),
        openapi_extra=_TOKEN_OPTIONAL,
    )
    async def ready(request: Request, credentials: Bearer) -> JSONResponse:
        """Whether this instance should get new clients, check by check: 200 when it should,
        503 (the same body) when not; with a super_admin token, each check's reason and
        figures."""
        found = services(request)
        report = found.readiness.report()
        status_code = 200 if report.ready else 503
        full = credentials is not None
        if full:
            principal = await verified_user(request, credentials)
            if principal.role is not Role.SUPER_ADMIN:
                raise Forbidden("the details of /health/ready are for super_admin tokens")
        body = report.as_dict(full=full)
        if full:
            board = found.instances
            body["instance"] = {
                "instance": board.name,
                "role": "leader" if found.leading else "follower",
                "version": __version__,
                "started_at": board.started_at.isoformat(),
            }
        return JSONResponse(body, status_code=status_code)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


async def _health(services: Services) -> tuple[dict[str, Any], int]:
    """The full health report and its HTTP status."""
    runner, election, gateway = services.runner, services.election, services.gateway
    body: dict[str, Any] = {"role": "leader" if services.leading else "follower"}
    pipeline = runner.pipeline
    healthy = True
    if pipeline is not None:
        feed = pipeline.status()
        healthy = feed.running and feed.last_error is None
        body.update(
            feed_position=feed.position,
            last_change_at=feed.last_change_at.isoformat() if feed.last_change_at else None,
            last_error=feed.last_error,
        )
        slot = await runner.feed_status()
        if slot:
            body["slot"] = slot
    elif election is None:
        healthy = False  # the embedded default always reads the feed
    status = services.status
    body["dependencies"] = status.for_operators()
    body["service"] = status.summary()[0]
    healthy = healthy and status.summary()[0] == "ok"
    stats = services.view.stats
    if stats is not None:
        body["cache"] = stats.as_dict()
    body["status"] = "ok" if healthy else "degraded"
    # 503 only when this instance cannot do its job (the embedded feed is not running, or it
    # is draining before it stops: send new clients elsewhere). A dependency that is down
    # degrades every instance alike: a load balancer that took them all out, or restarted
    # them, would only make things worse.
    serving = pipeline is not None or election is not None
    if gateway.draining:
        body["status"], serving = "draining", False
    body["sockets"] = gateway.connected
    body["transports"] = gateway.transports
    return body, 200 if serving else 503
