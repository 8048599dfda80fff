"""What the dashboard shows, over REST: snapshots, history, departments, realtime stats.

Every route follows the sockets' rules (the `/api` router's token, rate limit and problem
details on top): the values come from the same view, checked by the same functions
(`livedash.realtime.requests`), and a caller sees the departments its token names
(`livedash.auth.scope`). A department outside them is `forbidden` (403); a code that names
no department is `unknown_department` (404) to a super_admin, `forbidden` to anyone else.
`hospital` names the hospital-wide totals, which only super_admins see; a snapshot without a
department holds every scope the caller may see, as `request_snapshot` without departments
does.

- `GET /api/snapshot` and `GET /api/departments/{code}/snapshot`: current values (as a
  socket's `metrics_snapshot`) and the stream position P they are current at: a socket that
  subscribes with `since: P` gets every update after them.
- `GET /api/history`: a `request_historical`, charged to the same history budget.
- `GET /api/departments`: the departments the caller may see.
- `GET /api/realtime/stats` (super_admins, like `/health`'s details): sockets and
  subscriptions by tier on this instance and on every instance of the deployment, with each
  instance's role, version, start, feed lag and readiness.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select as select_rows

from livedash.auth.tokens import Principal
from livedash.errors import Forbidden
from livedash.metrics.definitions import HISTORY_SERIES, Tier
from livedash.realtime.outbox import to_update
from livedash.realtime.requests import ordered, select
from livedash.realtime.schemas import (
    MAX_NAME_LENGTH,
    MAX_NAMES,
    HistoricalData,
    MetricsSnapshot,
)
from livedash.realtime.subscriptions import on_the_wire
from livedash.store.models import Department, Role
from livedash.web.api import ERROR_RESPONSES, Caller, department_named, scope_of
from livedash.web.deps import services
from livedash.web.pagination import Page, PageRequest, pages
from livedash.web.problems import problem_responses

SERIES = "One of " + ", ".join(f"`{name}`" for name in HISTORY_SERIES) + "."
DEPARTMENT = "A department's code, or `hospital`: the hospital-wide totals."

Metrics = Annotated[
    list[str] | None,
    Query(
        max_length=MAX_NAMES,
        description="Only these metrics (repeat the parameter); all of them when left out.",
    ),
]
# Values sent as a socket's `metrics_snapshot` sends them: no stream position in each value.
_AS_SNAPSHOT: dict[str, Any] = {"recovered": True, "values": {"__all__": {"position"}}}
DepartmentPages = Annotated[PageRequest[str], Depends(pages(100, 500, str))]


class DepartmentInfo(BaseModel):
    """A department the caller may see."""

    code: str
    name: str


class TierCount(BaseModel):
    """Who is subscribed to one tier's metrics."""

    subscribers: int = Field(description="Sockets subscribed to at least one of its metrics.")
    subscriptions: int = Field(description="(metric, department) subscriptions, all sockets.")


class SocketWorkerStats(BaseModel):
    """An embedded instance's socket workers (`LIVEDASH_SOCKET_WORKERS`)."""

    configured: int = Field(description="Socket workers it runs.")
    ready: list[str] = Field(description="Those taking connections now, by name.")
    handed_over: int = Field(description="New WebSocket sessions handed to a worker, ever.")
    served_by_main: int = Field(
        description="New WebSocket sessions the main process served (no worker ready), ever."
    )
    restarts: int = Field(description="Workers started again after they ended.")


class InstanceStats(BaseModel):
    """One instance's sockets, as it last reported them (this instance's: now)."""

    instance: str
    reported_at: datetime
    connections: int = Field(description="Socket.IO sessions.")
    authenticated: int = Field(description="Sessions signed in.")
    transports: int = Field(description="Engine.IO connections, with a session or not.")
    tiers: dict[Tier, TierCount]
    # Optional: an instance of an older release, during a rolling upgrade, reports none.
    role: Literal["leader", "follower"] | None = Field(
        default=None, description="`leader`: it reads the change feed."
    )
    version: str | None = Field(default=None, description="Its livedash release.")
    started_at: datetime | None = None
    feed_lag_seconds: float | None = Field(
        default=None, description="The leader's: how far its change feed is behind (seconds)."
    )
    ready: bool | None = Field(default=None, description="What its `/health/ready` says.")
    failing: list[str] = Field(
        default_factory=list, description="The readiness checks it fails, by name."
    )
    socket_workers: SocketWorkerStats | None = Field(
        default=None,
        description="Its socket workers, whose sockets the figures above include; none: "
        "it serves every socket itself.",
    )


class DeploymentStats(BaseModel):
    """Every live instance's figures, summed."""

    connections: int
    authenticated: int
    transports: int
    tiers: dict[Tier, TierCount]
    instances: list[InstanceStats]
    complete: bool = Field(
        description="False when the other instances' reports could not be read (Redis out "
        "of reach): then only this instance is counted."
    )


class RealtimeStats(BaseModel):
    """Sockets and subscriptions by tier: this instance, and the whole deployment (the
    instances that share its Redis; without Redis, this one)."""

    instance: InstanceStats
    deployment: DeploymentStats


def install_dashboard_api(app: FastAPI) -> None:
    """Add the snapshot, history, departments and realtime stats routes to `app`."""
    router = APIRouter(prefix="/api", tags=["dashboard"], responses=ERROR_RESPONSES)
    forbidden_or_unknown = problem_responses(403, 404)

    @router.get("/snapshot", responses=forbidden_or_unknown, response_model_exclude=_AS_SNAPSHOT)
    async def snapshot(
        request: Request,
        caller: Caller,
        department: Annotated[
            str | None, Query(max_length=MAX_NAME_LENGTH, description=DEPARTMENT)
        ] = None,
        metrics: Metrics = None,
    ) -> MetricsSnapshot:
        """Current values of every scope the caller may see (or of one `department`; or
        `hospital`, the hospital-wide totals), and the stream position they are current at."""
        named = None if department is None else [department_named(department)]
        return await _snapshot(request, caller, named, metrics)

    @router.get(
        "/departments/{code}/snapshot",
        responses=forbidden_or_unknown,
        response_model_exclude=_AS_SNAPSHOT,
    )
    async def department_snapshot(
        request: Request,
        caller: Caller,
        code: Annotated[str, Path(max_length=MAX_NAME_LENGTH, description=DEPARTMENT)],
        metrics: Metrics = None,
    ) -> MetricsSnapshot:
        """Current values of one department (`hospital`: the hospital-wide totals)."""
        return await _snapshot(request, caller, [department_named(code)], metrics)

    @router.get("/departments")
    async def departments(
        request: Request, caller: Caller, page: DepartmentPages
    ) -> Page[DepartmentInfo]:
        """The departments the caller may see, by code."""
        visible = await scope_of(request, caller)
        query = select_rows(Department.code, Department.name).order_by(Department.code)
        if page.after is not None:
            query = query.where(Department.code > page.after)
        async with services(request).database.connect() as connection:
            rows = (await connection.execute(query)).all()
        shown = [DepartmentInfo(code=c, name=n) for c, n in rows if c in visible]
        return page.of(shown[: page.fetch], lambda department: department.code)

    @router.get("/history", responses=forbidden_or_unknown)
    async def history(
        request: Request,
        caller: Caller,
        metric: Annotated[str, Query(max_length=MAX_NAME_LENGTH, description=SERIES)],
        start: Annotated[datetime, Query(alias="from", description="ISO 8601; UTC if no zone.")],
        end: Annotated[datetime, Query(alias="to", description="ISO 8601; UTC if no zone.")],
        department: Annotated[
            str, Query(max_length=MAX_NAME_LENGTH, description=DEPARTMENT)
        ] = "hospital",
        granularity: Annotated[
            Literal["hour", "day"], Query(description="By hour, or by hospital-time day.")
        ] = "hour",
    ) -> HistoricalData:
        """A stored series over a range, as `request_historical` gives it: the same checks
        (at most 31 days by hour, 366 by day) and the same history budget."""
        named = department_named(department)
        await scope_of(request, caller, [named])
        asked = {"metric": metric, "department": named, "from": start, "to": end}
        return await services(request).gateway.history(
            caller, {**asked, "granularity": granularity}
        )

    @router.get("/realtime/stats", responses=problem_responses(403))
    async def realtime_stats(request: Request, caller: Caller) -> RealtimeStats:
        """Sockets and subscriptions by tier, on this instance and on every instance of the
        deployment (super_admins)."""
        if caller.role is not Role.SUPER_ADMIN:
            raise Forbidden("the realtime stats are for super_admins")
        board = services(request).instances
        others = await board.others()
        here = InstanceStats.model_validate(board.current())
        listed = [here]
        for report in others or []:
            try:
                listed.append(InstanceStats.model_validate(report))
            except ValidationError:
                continue  # another release's report
        return RealtimeStats(instance=here, deployment=_summed(listed, others is not None))

    app.include_router(router)


async def _snapshot(
    request: Request,
    caller: Principal,
    named: list[str | None] | None,
    metrics: list[str] | None,
) -> MetricsSnapshot:
    """The values of `metrics` (None: all) for the `named` departments (None: every one the
    caller may see)."""
    found = services(request)
    visible = await scope_of(request, caller, named or [])
    wanted, scopes = select(
        {"metrics": metrics, "departments": named}, visible, found.settings.max_list_length
    )
    # Read before the values, which are then at least as new as every update up to it.
    top = await found.gateway.stream_top()
    values = await found.view.snapshot(wanted, ordered(scopes), fresh=True)
    return MetricsSnapshot(
        values=[to_update(value) for value in values],
        server_time=datetime.now(UTC),
        position=on_the_wire(top),
    )


def _summed(instances: list[InstanceStats], complete: bool) -> DeploymentStats:
    return DeploymentStats(
        connections=sum(i.connections for i in instances),
        authenticated=sum(i.authenticated for i in instances),
        transports=sum(i.transports for i in instances),
        tiers={
            tier: TierCount(
                subscribers=sum(i.tiers[tier].subscribers for i in instances if tier in i.tiers),
                subscriptions=sum(
                    i.tiers[tier].subscriptions for i in instances if tier in i.tiers
                ),
            )
            for tier in Tier
        },
        instances=sorted(instances, key=lambda i: i.instance),
        complete=complete,
    )
