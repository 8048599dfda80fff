"""The REST API under `/api`: bearer tokens, per-user rate limits, problem details, pages.

Every route on the router needs a valid access token and counts against its user's
`rate_limit_rest`; the page, its static files and `/health` are outside the router and
neither authenticated nor limited. Errors are problem details (`livedash.web.problems`), lists
are pages (`livedash.web.pagination`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from livedash.auth.scope import visible_departments
from livedash.auth.tokens import Principal
from livedash.errors import NotAuthenticated, UnknownDepartment
from livedash.metrics.definitions import METRICS, Tier
from livedash.realtime.requests import check_visible
from livedash.store.models import Role
from livedash.web.deps import services
from livedash.web.pagination import Page, PageRequest, pages
from livedash.web.problems import problem_responses

ERROR_RESPONSES = problem_responses(401, 422, 429, 503)
"""What any route of the `/api` routers may answer: its token, its request, its rate limit,
the database (which checks every token's user)."""

MetricPages = Annotated[PageRequest[int], Depends(pages(100, 200, int))]
_bearer = HTTPBearer(auto_error=False, description="An access token, as `livedash token` prints.")


class MetricInfo(BaseModel):
    """One metric livedash serves."""

    name: str
    tier: Tier
    description: str


async def authenticated_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, once its token is verified and its user's rate limit allows the request
    (more for a user with sockets open here: a wall of screens on one account)."""
    principal = await verified_user(request, credentials)
    found = services(request)
    user = principal.subject
    await found.rest_limiter.hit(user, units=found.gateway.sockets_of(user))
    return principal


async def verified_user(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller, once its token is verified (signature, claims, the users table)."""
    if credentials is None:
        raise NotAuthenticated("send an access token as `Authorization: Bearer <token>`")
    return await services(request).authenticator.authenticate(credentials.credentials)


Caller = Annotated[Principal, Depends(authenticated_user)]
"""The authenticated caller of a route (a FastAPI dependency)."""

HOSPITAL = "hospital"
"""How a path or query names the hospital-wide totals (and the hospital's own alerts)."""


def department_named(code: str) -> str | None:
    """A department as a path or query names it (None: the hospital-wide totals)."""
    return None if code == HOSPITAL else code


async def scope_of(
    request: Request, caller: Principal, named: Iterable[str | None] = ()
) -> set[str | None]:
    """The departments `caller` may see, once every one `named` is among them.

    A code that names no department is `unknown_department` (404) to a super_admin, who would
    see it if it existed; to anyone else it is `forbidden` (403), whether it exists or not,
    as on the sockets.
    """
    known = await services(request).view.departments()
    visible = visible_departments(caller, known)
    named = list(named)
    for department in named:
        if department is not None and department not in known and caller.role is Role.SUPER_ADMIN:
            raise UnknownDepartment("no department has this code")
    check_visible(named, visible)
    return visible


def install_api(app: FastAPI) -> None:
    """Add the `/api` routes (the metric catalogue) to `app`."""
    router = APIRouter(
        prefix="/api", dependencies=[Depends(authenticated_user)], responses=ERROR_RESPONSES
    )

    metric_list = [
        MetricInfo(name=d.name, tier=d.tier, description=d.description) for d in METRICS.values()
    ]
    order = {info.name: index for index, info in enumerate(metric_list)}

    @router.get("/metrics")
    async def metrics(page: MetricPages) -> Page[MetricInfo]:
        """Every metric: its name, tier and meaning, in the catalogue's order."""
        return page.within(metric_list, lambda info: order[info.name], descending=False)

    app.include_router(router)
