"""Running the service: the server alone, or the demo (server + simulator) in one process."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
import uvicorn

from livedash.app import create_app
from livedash.settings import Settings

log = structlog.get_logger(__name__)


def _server(settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level.lower(),
        lifespan="on",
        proxy_headers=True,
    )
    return uvicorn.Server(config)


async def run_service(settings: Settings) -> None:
    """Serve until interrupted (SIGINT/SIGTERM)."""
    await _server(settings).serve()


async def run_demo(settings: Settings, *, seed: int, speed: float) -> None:
    """Serve, and run the simulator against the same database until interrupted."""
    from livedash.simulator import HospitalSimulator

    server = _server(settings)
    stop = asyncio.Event()
    async with HospitalSimulator(settings.database_url, seed=seed, zone=settings.zone) as simulator:
        simulation = asyncio.create_task(simulator.run(speed=speed, stop=stop))
        try:
            await server.serve()
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                events = await simulation
                log.info("simulator_stopped", events=events)
