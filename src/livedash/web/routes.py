"""Page routes and the health endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install_routes(app: FastAPI) -> None:
    """Add the dashboard page, its static assets and `/health` to `app`."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @router.get("/health")
    async def health(request: Request) -> JSONResponse:
        """Liveness and what an operator needs: role, feed, slot, cache."""
        runner = getattr(request.app.state, "runner", None)
        if runner is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        election = getattr(request.app.state, "election", None)
        body: dict[str, Any] = {
            "role": "follower" if election is not None and not election.leading else "leader",
            "sockets": request.app.state.gateway.connected,
        }
        pipeline = runner.pipeline
        healthy = True
        if pipeline is not None:
            status = pipeline.status()
            healthy = status.running and status.last_error is None
            body.update(
                feed_position=status.position,
                last_change_at=status.last_change_at.isoformat() if status.last_change_at else None,
                last_error=status.last_error,
            )
            slot = await runner.feed_status()
            if slot:
                body["slot"] = slot
        elif election is None:
            healthy = False  # the embedded default always reads the feed
        status = getattr(request.app.state, "status", None)
        if status is not None:
            body["dependencies"] = status.for_operators()
            body["service"] = status.summary()[0]
            healthy = healthy and status.summary()[0] == "ok"
        stats = getattr(getattr(request.app.state, "view", None), "stats", None)
        if stats is not None:
            body["cache"] = stats.as_dict()
        body["status"] = "ok" if healthy else "degraded"
        # 503 only when this instance cannot do its job (the embedded feed is not running,
        # or it is draining before it stops: send new clients elsewhere). A dependency that
        # is down degrades every instance alike: a load balancer that took them all out, or
        # restarted them, would only make things worse.
        serving = pipeline is not None or election is not None
        if request.app.state.gateway.draining:
            body["status"], serving = "draining", False
        return JSONResponse(body, status_code=200 if serving else 503)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
