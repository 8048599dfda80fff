"""The alerts under `/api/alerts`: list what the caller may see, acknowledge, resolve.

Every route needs an access token (the `/api` router's rules: rate limits, one error shape).
Acknowledging and resolving are for admins and super_admins (`forbidden` otherwise); an alert
of a department the caller may not see is `unknown_alert` (404), as if it did not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from livedash.alerts.lifecycle import MANAGING_ROLES, MAX_LISTED
from livedash.alerts.messages import AlertMessage
from livedash.alerts.silences import Silence, SilenceRequest
from livedash.auth.tokens import Principal
from livedash.errors import Forbidden
from livedash.web.api import ERROR_RESPONSES, authenticated_user
from livedash.web.deps import services

Caller = Annotated[Principal, Depends(authenticated_user)]


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

    @router.get("")
    async def list_alerts(
        request: Request,
        caller: Caller,
        include_resolved: bool = False,
        limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 100,
    ) -> list[AlertMessage]:
        """The alerts of the departments the caller may see, newest first (open ones only,
        unless `include_resolved`)."""
        desk = services(request).alert_desk
        return await desk.listed(caller, include_resolved=include_resolved, limit=limit)

    @router.get("/rules")
    async def rules(request: Request, caller: Caller) -> RuleSet:
        """The alert rules in force (admins and super_admins): the rules file's (version 0),
        or the newest set through this API."""
        if caller.role not in MANAGING_ROLES:
            raise Forbidden("only admins and super_admins see the alert rules")
        version, document = await services(request).rulebook.current()
        return RuleSet(version=version, document=document)

    @router.put("/rules")
    async def set_rules(request: Request, caller: Caller, document: dict[str, Any]) -> RuleSet:
        """Put these rules in force on every instance (super_admins): `rules`,
        `anomaly_rules` and `mute_timings`, as in the rules file. A mistake is refused with
        the rule and the field it is in, and changes nothing."""
        version = await services(request).rulebook.replace(caller, document)
        return RuleSet(version=version, document=document)

    @router.delete("/rules")
    async def reset_rules(request: Request, caller: Caller) -> RuleSet:
        """Return to the rules file (super_admins)."""
        book = services(request).rulebook
        await book.reset(caller)
        version, document = await book.current()
        return RuleSet(version=version, document=document)

    @router.get("/silences")
    async def silences(request: Request, caller: Caller) -> list[Silence]:
        """Silences not yet over, of the departments the caller may see."""
        found = services(request)
        return await found.silencer.listed(caller, found.clock.now())

    @router.post("/silences")
    async def silence(request: Request, caller: Caller, body: SilenceRequest) -> Silence:
        """Hold back the notifications of matching alerts for a while (admins and
        super_admins, for departments they may see)."""
        found = services(request)
        return await found.silencer.create(caller, body, found.clock.now())

    @router.post("/silences/{silence_id}/end")
    async def end_silence(request: Request, caller: Caller, silence_id: int) -> Silence:
        """End a silence now."""
        found = services(request)
        return await found.silencer.end(caller, silence_id, found.clock.now())

    @router.post("/{alert_id}/acknowledge")
    async def acknowledge(
        request: Request, caller: Caller, alert_id: int, body: Acknowledgement | None = None
    ) -> AlertMessage:
        """Acknowledge an open alert (admins and super_admins)."""
        given = body or Acknowledgement()
        desk = services(request).alert_desk
        return await desk.acknowledge(caller, alert_id, note=given.note, until=given.until)

    @router.post("/{alert_id}/resolve")
    async def resolve(request: Request, caller: Caller, alert_id: int) -> AlertMessage:
        """Resolve an open alert by hand (admins and super_admins)."""
        return await services(request).alert_desk.resolve(caller, alert_id)

    app.include_router(router)
