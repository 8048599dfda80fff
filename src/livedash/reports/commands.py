"""What `livedash report …` does, without a running service: the same report service over
the configured database, reading the stored roll-ups as a follower would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path

from livedash.changefeed.positions import load_position
from livedash.cluster.runner import FEED_CONSUMER
from livedash.cluster.view import SharedView
from livedash.errors import InvalidPayload
from livedash.metrics.clock import SystemClock
from livedash.reports.archive import ReportInfo
from livedash.reports.generation import ReportRequest
from livedash.reports.inputs import departments
from livedash.reports.periods import resolve_period
from livedash.reports.schedules import ScheduleBook, ScheduleInfo, ScheduleRequest
from livedash.reports.service import ReportService, configured_report_service
from livedash.settings import Settings
from livedash.store.engine import create_engine

CLI_USER = "cli"


@asynccontextmanager
async def report_service(settings: Settings) -> AsyncIterator[ReportService]:
    """A report service over the configured database, for one command."""
    database = create_engine(settings.database_url)
    clock = SystemClock()
    try:
        view = SharedView(database, None, settings.zone, clock, leader_pipeline=lambda: None)

        async def feed_position() -> int:
            async with database.connect() as connection:
                return await load_position(connection, FEED_CONSUMER)

        service = configured_report_service(
            settings, database, view, now=clock.now, feed_position=feed_position
        )
        yield service
        await service.close()
    finally:
        await database.dispose()


async def run_generate(
    settings: Settings,
    *,
    report_type: str,
    period: str | None,
    start: date | None,
    end: date | None,
    department: str | None,
    output_format: str,
    out: Path,
    on_step: Callable[[str], None],
) -> ReportInfo:
    """Generate one report into `out`; the archive keeps it too."""
    async with report_service(settings) as service:
        request = ReportRequest(
            report_type=report_type,
            scope=await service.scope(department),
            period=resolve_period(
                period, start=start, end=end, zone=settings.zone, now=datetime.now(UTC)
            ),
            format=output_format,
            requested_by=CLI_USER,
        )
        info = await service.generate(request, on_step=on_step)
        if info.status == "done":
            on_step("writing")
            content = await service.archive.content(info.id)
            partial = out.with_name(f".{out.name}.partial")
            try:
                partial.write_bytes(content)
                partial.replace(out)
            except OSError as error:
                raise InvalidPayload(
                    f"cannot write {out}: {error.strerror or error}; the report is kept as "
                    f"report {info.id} in the archive"
                ) from error
            finally:
                partial.unlink(missing_ok=True)
        return info


async def run_list(settings: Settings, *, report_type: str | None, limit: int) -> list[ReportInfo]:
    async with report_service(settings) as service:
        return await service.archive.listed(report_type=report_type, limit=limit)


async def run_schedule_create(settings: Settings, request: ScheduleRequest) -> ScheduleInfo:
    async with report_service(settings) as service:
        book = ScheduleBook(
            service.inputs.database, settings.zone, mail=settings.smtp_host is not None
        )
        known = {scope.code for scope in await departments(service.inputs) if scope.code}
        return await book.create(request, created_by=CLI_USER, known=known, now=datetime.now(UTC))


async def run_schedule_list(settings: Settings) -> list[ScheduleInfo]:
    async with report_service(settings) as service:
        return await ScheduleBook(
            service.inputs.database, settings.zone, mail=settings.smtp_host is not None
        ).listed()


async def run_schedule_change(settings: Settings, ident: int, action: str) -> ScheduleInfo | None:
    """Pause, resume or delete a schedule (None once deleted)."""
    async with report_service(settings) as service:
        book = ScheduleBook(
            service.inputs.database, settings.zone, mail=settings.smtp_host is not None
        )
        if action == "pause":
            return await book.pause(ident)
        if action == "resume":
            return await book.resume(ident, datetime.now(UTC))
        await book.delete(ident)
        return None


def _book(service: ReportService, settings: Settings) -> ScheduleBook:
    return ScheduleBook(service.inputs.database, settings.zone, mail=settings.smtp_host is not None)
