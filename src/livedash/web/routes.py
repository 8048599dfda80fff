"""Page routes (the dashboard, the REST API's docs at `/docs`) and the health endpoint.

`/health` tells anyone whether the instance serves (its status and HTTP code, for a load
balancer); what an operator needs beyond that (role, feed position, slot, cache, sockets)
goes only to a `super_admin` token, since feed positions and change times say how much
happens in the hospital.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from livedash.errors import Forbidden
from livedash.services import Services
from livedash.store.models import Role
from livedash.web.api import verified_user
from livedash.web.deps import services
from livedash.web.problems import problem_responses

STATIC_DIR = Path(__file__).parent / "static"
_bearer = HTTPBearer(auto_error=False, description="A super_admin access token, for the details.")


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

    # The token is optional: the empty requirement says so to OpenAPI clients.
    @router.get(
        "/health",
        responses=problem_responses(401, 403),
        openapi_extra={"security": [{}, {"HTTPBearer": []}]},
    )
    async def health(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> JSONResponse:
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
