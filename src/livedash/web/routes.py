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
        pipeline = getattr(request.app.state, "pipeline", None)
        if pipeline is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        status = pipeline.status()
        body: dict[str, Any] = {
            "status": "ok" if status.running and status.last_error is None else "degraded",
            "feed_position": status.position,
            "last_change_at": status.last_change_at.isoformat() if status.last_change_at else None,
            "last_error": status.last_error,
            "sockets": request.app.state.gateway.connected,
        }
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
