"""How routes reach the process's services: the lifespan yields them as `services`, and
Starlette hands lifespan state to every request (`request.state`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from livedash.services import Services

SERVICES = "services"
"""The lifespan state's key for `Services`."""


def services(request: Request) -> Services:
    """The process's services (a FastAPI dependency)."""
    found: Services = getattr(request.state, SERVICES)
    return found
