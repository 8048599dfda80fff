"""Why a value changed, over REST: `GET /api/metrics/{metric}/changes`.

The same answer as a socket's `explain_metric`, from the same gateway method: the value's last
updates (before, after, by how much, when) and the rows behind each (table, operation, id,
commit time, department; never their content). Scope as everywhere: a department outside the
caller's is `forbidden` (403), `hospital` is for super_admins, and a code that names no
department is `unknown_department` (404) to a super_admin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Query, Request

from livedash.realtime.schemas import MAX_NAME_LENGTH, MetricChanges
from livedash.web.api import ERROR_RESPONSES, HOSPITAL, Caller, department_named, scope_of
from livedash.web.deps import services
from livedash.web.problems import problem_responses


def install_changes_api(app: FastAPI) -> None:
    """Add `GET /api/metrics/{metric}/changes` to `app`."""
    router = APIRouter(prefix="/api", tags=["dashboard"], responses=ERROR_RESPONSES)

    @router.get("/metrics/{metric}/changes", responses=problem_responses(403, 404))
    async def changes(
        request: Request,
        caller: Caller,
        metric: Annotated[str, Path(max_length=MAX_NAME_LENGTH, description="A metric's name.")],
        department: Annotated[
            str,
            Query(
                max_length=MAX_NAME_LENGTH,
                description="A department's code, or `hospital`: the hospital-wide totals.",
            ),
        ] = HOSPITAL,
    ) -> MetricChanges:
        """The last updates of a metric's value for one department, newest first, and the
        row changes behind each."""
        named = department_named(department)
        await scope_of(request, caller, [named])
        asked = {"metric": metric, "department": named}
        return await services(request).gateway.changes(caller, asked)

    app.include_router(router)
