"""Reports under `/api/reports`: list, generate on demand, download, verify, and schedules.

A report covers the whole hospital or one department, and the caller must be allowed to see
it, as on the sockets: only a super_admin sees hospital-wide reports. A report or schedule
of a scope the caller may not see is `unknown_report` (404), as if it did not exist.
Generating answers `202 Accepted` at once with the queued report and a `Location` to poll;
the file is ready to download once its `status` is `done`. Schedules are for admins and
super_admins.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from livedash.auth.tokens import Principal
from livedash.errors import Forbidden, ReportNotReady, UnknownReport
from livedash.reports.archive import ReportInfo
from livedash.reports.catalogue import REPORT_TYPES
from livedash.reports.formats import MEDIA_TYPES
from livedash.reports.generation import ReportRequest
from livedash.reports.periods import ACCEPTED, resolve_period
from livedash.reports.schedules import ScheduleInfo, ScheduleRequest
from livedash.reports.service import Verification
from livedash.store.models import Role
from livedash.web.api import ERROR_RESPONSES, Caller, department_named, scope_of
from livedash.web.deps import services
from livedash.web.pagination import Page, PageRequest, pages
from livedash.web.problems import problem_responses

MAX_LISTED = 200
ReportPages = Annotated[PageRequest[int], Depends(pages(50, MAX_LISTED, int))]
SchedulePages = Annotated[PageRequest[int], Depends(pages(50, MAX_LISTED, int))]
NOT_YOURS = problem_responses(403, 404)
MANAGING = (Role.SUPER_ADMIN, Role.ADMIN)
ReportType = Literal["occupancy", "admissions", "emergency", "appointments", "revenue", "alerts"]


class GenerateRequest(BaseModel):
    """A report to generate: its type, scope, period and format."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: ReportType
    department: str | None = Field(
        default=None, max_length=32, description="A department code; null: the hospital."
    )
    period: str | None = Field(default=None, max_length=40, description=f"One of: {ACCEPTED}.")
    start: date | None = Field(
        default=None, alias="from", description="First local day (with `to`)."
    )
    end: date | None = Field(
        default=None, alias="to", description="The local day after the last (with `from`)."
    )
    format: Literal["json", "csv", "pdf"] = "pdf"


class ReportKind(BaseModel):
    """A report type livedash generates."""

    name: str
    title: str


class VerificationResult(BaseModel):
    """A report generated again: whether its figures are the same, and if not, why."""

    report: int
    same: bool
    reason: str
    feed_position_then: int | None
    feed_position_now: int

    @classmethod
    def of(cls, verification: Verification) -> VerificationResult:
        return cls(
            report=verification.report,
            same=verification.same,
            reason=verification.reason,
            feed_position_then=verification.feed_position_then,
            feed_position_now=verification.feed_position_now,
        )


async def _visible_report(request: Request, caller: Principal, ident: int) -> ReportInfo:
    info = await services(request).reports.archive.get(ident)
    if info.department not in await scope_of(request, caller):
        raise UnknownReport(f"no report {ident}", report=ident)
    return info


async def _visible_schedule(request: Request, caller: Principal, ident: int) -> ScheduleInfo:
    schedule = await services(request).report_schedules.get(ident)
    if schedule.department not in await scope_of(request, caller):
        raise UnknownReport(f"no report schedule {ident}", schedule=ident)
    return schedule


def _managing(caller: Principal) -> None:
    if caller.role not in MANAGING:
        raise Forbidden("only admins and super_admins manage report schedules")


def install_reports_api(app: FastAPI) -> None:
    router = APIRouter(prefix="/api/reports", tags=["reports"], responses=ERROR_RESPONSES)

    @router.get("/types")
    async def report_types(caller: Caller) -> list[ReportKind]:
        """Every report type: its name and title."""
        return [ReportKind(name=name, title=title) for name, (title, _) in REPORT_TYPES.items()]

    @router.get("/schedules", responses=problem_responses(403))
    async def schedules(
        request: Request, caller: Caller, page: SchedulePages
    ) -> Page[ScheduleInfo]:
        """The schedules of the scopes the caller may see, oldest first."""
        _managing(caller)
        visible = await scope_of(request, caller)
        book = services(request).report_schedules
        found: list[ScheduleInfo] = []
        after = page.after
        while len(found) < page.fetch:
            batch = await book.listed(after_id=after, limit=page.fetch)
            found += [s for s in batch if s.department in visible]
            if len(batch) < page.fetch:
                break
            after = batch[-1].id
        return page.of(found[: page.fetch], lambda schedule: schedule.id)

    @router.post("/schedules", status_code=201, responses=problem_responses(403))
    async def create_schedule(
        request: Request, caller: Caller, body: ScheduleRequest
    ) -> ScheduleInfo:
        """Schedule a report (admins and super_admins, for a scope they may see). Each
        recipient must be an active user with an e-mail address who may see it too."""
        _managing(caller)
        await scope_of(request, caller, [body.department])
        found = services(request)
        schedule = await found.report_schedules.create(
            body,
            created_by=caller.subject,
            known=set(await found.view.departments()),
            now=found.clock.now(),
        )
        found.report_scheduler.changed()
        return schedule

    @router.get("/schedules/{schedule_id}", responses=NOT_YOURS)
    async def schedule(request: Request, caller: Caller, schedule_id: int) -> ScheduleInfo:
        """One schedule and how its runs went (`failures`, `last_error`, `retry_at`)."""
        _managing(caller)
        return await _visible_schedule(request, caller, schedule_id)

    @router.post("/schedules/{schedule_id}/pause", responses=NOT_YOURS)
    async def pause(request: Request, caller: Caller, schedule_id: int) -> ScheduleInfo:
        """Stop running a schedule until it is resumed."""
        _managing(caller)
        await _visible_schedule(request, caller, schedule_id)
        return await services(request).report_schedules.pause(schedule_id)

    @router.post("/schedules/{schedule_id}/resume", responses=NOT_YOURS)
    async def resume(request: Request, caller: Caller, schedule_id: int) -> ScheduleInfo:
        """Run a paused schedule again, from its next run on (missed runs are not made up)."""
        _managing(caller)
        await _visible_schedule(request, caller, schedule_id)
        found = services(request)
        resumed = await found.report_schedules.resume(schedule_id, found.clock.now())
        found.report_scheduler.changed()
        return resumed

    @router.delete("/schedules/{schedule_id}", status_code=204, responses=NOT_YOURS)
    async def delete_schedule(request: Request, caller: Caller, schedule_id: int) -> Response:
        """Delete a schedule; the reports it made stay."""
        _managing(caller)
        await _visible_schedule(request, caller, schedule_id)
        await services(request).report_schedules.delete(schedule_id)
        return Response(status_code=204)

    @router.get("", responses=NOT_YOURS)
    async def list_reports(
        request: Request,
        caller: Caller,
        page: ReportPages,
        report_type: Annotated[ReportType | None, Query(alias="type")] = None,
        department: Annotated[str | None, Query(max_length=32)] = None,
        status: Literal["queued", "running", "done", "failed"] | None = None,
    ) -> Page[ReportInfo]:
        """Reports of the scopes the caller may see, newest first; `department` is a code
        or `hospital`."""
        if department is not None:
            scopes: list[str | None] = [department_named(department)]
            await scope_of(request, caller, scopes)
        else:
            scopes = sorted(await scope_of(request, caller), key=lambda code: code or "")
        rows = await services(request).reports.archive.listed(
            report_type=report_type,
            department=scopes,
            status=status,
            before_id=page.after,
            limit=page.fetch,
        )
        return page.of(rows, lambda report: report.id)

    @router.post("", status_code=202, responses=problem_responses(403, 404))
    async def generate(
        request: Request, response: Response, caller: Caller, body: GenerateRequest
    ) -> ReportInfo:
        """Queue a report; poll its `Location` until `status` is `done` (or `failed`, with
        its `error`), then download it."""
        await scope_of(request, caller, [body.department])
        found = services(request)
        report = await found.reports.submit(
            ReportRequest(
                report_type=body.type,
                scope=await found.reports.scope(body.department),
                period=resolve_period(
                    body.period,
                    start=body.start,
                    end=body.end,
                    zone=found.settings.zone,
                    now=found.clock.now(),
                ),
                format=body.format,
                requested_by=caller.subject,
            )
        )
        response.headers["Location"] = f"/api/reports/{report.id}"
        return report

    @router.get("/{report_id}", responses=NOT_YOURS)
    async def report(request: Request, caller: Caller, report_id: int) -> ReportInfo:
        """One report's metadata and status."""
        return await _visible_report(request, caller, report_id)

    @router.get(
        "/{report_id}/download",
        responses={
            **NOT_YOURS,
            **problem_responses(409),
            200: {"content": {media: {} for media in MEDIA_TYPES.values()}},
        },
        response_class=Response,
    )
    async def download(request: Request, caller: Caller, report_id: int) -> Response:
        """The report's file (JSON, CSV or PDF), once it is `done`."""
        info = await _visible_report(request, caller, report_id)
        if info.status != "done":
            raise ReportNotReady(f"report {report_id} is {info.status}", status=info.status)
        content = await services(request).reports.archive.content(report_id)
        name = f"{info.report_type}-{info.department or 'hospital'}-{info.period_label}"
        return Response(
            content,
            media_type=MEDIA_TYPES[info.format],
            headers={
                "Content-Disposition": f'attachment; filename="{_safe(name)}.{info.format}"',
                "X-Content-SHA256": info.sha256 or "",
            },
        )

    @router.post("/{report_id}/verify", responses=NOT_YOURS)
    async def verify(request: Request, caller: Caller, report_id: int) -> VerificationResult:
        """Generate the report again and say whether its figures are the same, or why not."""
        info = await _visible_report(request, caller, report_id)
        return VerificationResult.of(await services(request).reports.verify(info))

    app.include_router(router)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120]
