"""The alerts under `/api/alerts`: list what the caller may see, acknowledge, resolve.

Every route needs an access token (the `/api` router's rules: rate limits, problem details,
pages). Acknowledging and resolving are for admins and super_admins (`forbidden` otherwise);
an alert of a department the caller may not see is `unknown_alert` (404), as if it did not
exist. A list filtered by a department outside the caller's is `forbidden`, as a snapshot is.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from livedash.alerts.lifecycle import MANAGING_ROLES, MAX_LISTED, OPEN, AlertFilter
from livedash.alerts.messages import AlertMessage
from livedash.alerts.silences import Silence, SilenceRequest
from livedash.errors import Forbidden
from livedash.realtime.schemas import MAX_NAME_LENGTH
from livedash.store.models import AlertSeverity, AlertStatus
from livedash.web.api import ERROR_RESPONSES, Caller, department_named, scope_of
from livedash.web.deps import services
from livedash.web.pagination import Page, PageRequest, pages
from livedash.web.problems import problem_responses

AlertPages = Annotated[PageRequest[int], Depends(pages(100, MAX_LISTED, int))]
SilencePages = Annotated[PageRequest[int], Depends(pages(100, MAX_LISTED, int))]
Name = Annotated[str, Field(max_length=MAX_NAME_LENGTH)]
NOT_YOURS = problem_responses(403, 404)


class Acknowledgement(BaseModel):
    """An acknowledgement: an optional note, and an optional expiry (aware ISO 8601) after
    which the alert counts as unacknowledged again."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=500)
    until: AwareDatetime | None = None


class RuleSet(BaseModel):
    """The alert rules in force: `version` 0 is the rules file."""

    version: int
    document: dict[str, Any]


def install_alerts_api(app: FastAPI) -> None:
    router = APIRouter(prefix="/api/alerts", tags=["alerts"], responses=ERROR_RESPONSES)

    @router.get("", responses=NOT_YOURS)
    async def list_alerts(
        request: Request,
        caller: Caller,
        page: AlertPages,
        status: Annotated[
            list[AlertStatus] | None,
            Query(max_length=3, description="Default: `active` and `acknowledged`."),
        ] = None,
        severity: Annotated[list[AlertSeverity] | None, Query(max_length=4)] = None,
        department: Annotated[
            list[Name] | None,
            Query(max_length=50, description="A code, or `hospital`: the hospital's own."),
        ] = None,
        rule: Annotated[list[Name] | None, Query(max_length=50)] = None,
        since: Annotated[AwareDatetime | None, Query(description="Raised at or after.")] = None,
        until: Annotated[AwareDatetime | None, Query(description="Raised before.")] = None,
    ) -> Page[AlertMessage]:
        """The alerts of the departments the caller may see, newest first. Each filter may
        be repeated (any of its values matches), and every filter given must match."""
        departments = None if department is None else [department_named(d) for d in department]
        if departments is not None:
            await scope_of(request, caller, departments)
        wanted = AlertFilter(
            statuses=frozenset(s.value for s in status) if status else OPEN,
            severities=frozenset(s.value for s in severity) if severity else None,
            departments=frozenset(departments) if departments is not None else None,
            rules=frozenset(rule) if rule else None,
            since=since,
            until=until,
        )
        desk = services(request).alert_desk
        rows = await desk.listed(caller, wanted, before=page.after, limit=page.fetch)
        return page.of(rows, lambda alert: alert.id)

    @router.get("/rules", responses=problem_responses(403))
    async def rules(request: Request, caller: Caller) -> RuleSet:
        """The alert rules in force (admins and super_admins): the rules file's (version 0),
        or the newest set through this API."""
        if caller.role not in MANAGING_ROLES:
            raise Forbidden("only admins and super_admins see the alert rules")
        version, document = await services(request).rulebook.current()
        return RuleSet(version=version, document=document)

    @router.put("/rules", responses=problem_responses(403))
    async def set_rules(request: Request, caller: Caller, document: dict[str, Any]) -> RuleSet:
        """Put these rules in force on every instance (super_admins): `rules`,
        `anomaly_rules` and `mute_timings`, as in the rules file. A mistake is refused with
        the rule and the field it is in, and changes nothing."""
        version = await services(request).rulebook.replace(caller, document)
        return RuleSet(version=version, document=document)

    @router.delete("/rules", responses=problem_responses(403))
    async def reset_rules(request: Request, caller: Caller) -> RuleSet:
        """Return to the rules file (super_admins)."""
        book = services(request).rulebook
        await book.reset(caller)
        version, document = await book.current()
        return RuleSet(version=version, document=document)

    @router.get("/silences")
    async def silences(request: Request, caller: Caller, page: SilencePages) -> Page[Silence]:
        """Silences not yet over, of the departments the caller may see, newest first."""
        found = services(request)
        listed = await found.silencer.listed(caller, found.clock.now())
        newest_first = sorted(listed, key=lambda silence: silence.id, reverse=True)
        return page.within(newest_first, lambda silence: silence.id, descending=True)

    @router.post("/silences", responses=problem_responses(403))
    async def silence(request: Request, caller: Caller, body: SilenceRequest) -> Silence:
        """Hold back the notifications of matching alerts for a while (admins and
        super_admins, for departments they may see)."""
        found = services(request)
        return await found.silencer.create(caller, body, found.clock.now())

    @router.post("/silences/{silence_id}/end", responses=NOT_YOURS)
    async def end_silence(request: Request, caller: Caller, silence_id: int) -> Silence:
        """End a silence now."""
        found = services(request)
        return await found.silencer.end(caller, silence_id, found.clock.now())

    @router.post("/{alert_id}/acknowledge", responses=NOT_YOURS)
    async def acknowledge(
        request: Request, caller: Caller, alert_id: int, body: Acknowledgement | None = None
    ) -> AlertMessage:
        """Acknowledge an open alert (admins and super_admins)."""
        given = body or Acknowledgement()
        desk = services(request).alert_desk
        return await desk.acknowledge(caller, alert_id, note=given.note, until=given.until)

    @router.post("/{alert_id}/resolve", responses=NOT_YOURS)
    async def resolve(request: Request, caller: Caller, alert_id: int) -> AlertMessage:
        """Resolve an open alert by hand (admins and super_admins)."""
        return await services(request).alert_desk.resolve(caller, alert_id)

    app.include_router(router)
