"""Generating reports: on demand (queued, then polled), for the CLI, and for schedules.

A report is rendered off the event loop (`asyncio.to_thread`), so a 90-day PDF never holds
up the sockets. Every run ends as `done` with its file, or `failed` with a reason and no file.

Counted for Prometheus: runs by report type and result, the reports in flight (queued or
being generated) and, with a `Telemetry`, how long each report that was generated took.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.cluster.view import MetricView
from livedash.errors import ClientError, InvalidPayload, RateLimited
from livedash.observability.telemetry import Telemetry
from livedash.reports.archive import ReportArchive, ReportInfo
from livedash.reports.catalogue import REPORT_TYPES
from livedash.reports.document import ReportPeriod
from livedash.reports.formats import render
from livedash.reports.generation import (
    GENERATOR_VERSION,
    ReportRequest,
    build_document,
    figures_digest,
)
from livedash.reports.inputs import ReportInputs, Scope, departments
from livedash.settings import Settings

log = structlog.get_logger(__name__)

AT_ONCE = 2
"""Reports computed and rendered at once by one instance (the machine's cores)."""
QUEUED_PER_USER = 4
QUEUE_RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Verification:
    """Whether a report generated again gives the same figures, and if not, why."""

    report: int
    same: bool
    reason: str
    feed_position_then: int | None
    feed_position_now: int


class ReportService:
    """Generates reports and keeps them in the archive."""

    def __init__(
        self,
        inputs: ReportInputs,
        archive: ReportArchive,
        *,
        hospital: str,
        now: Callable[[], datetime],
        telemetry: Telemetry | None = None,
    ) -> None:
        self.inputs = inputs
        self.archive = archive
        self._hospital = hospital
        self._now = now
        self._telemetry = telemetry
        if telemetry is not None:
            telemetry.report_types(REPORT_TYPES)
        self._running: set[asyncio.Task[ReportInfo]] = set()
        self._in_flight: Counter[str] = Counter()  # queued or running, by requester
        # Reports are computed and rendered a few at a time: a burst of requests waits its
        # turn (queued) instead of taking every database connection and both cores.
        self._turns = asyncio.Semaphore(AT_ONCE)
        self.generated = 0
        self.failed = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (report type, done | failed)
        self.in_flight = 0  # runs queued for a turn or being generated
        self.refused = 0  # requests refused for the requester's reports in flight

    async def scope(self, department: str | None) -> Scope:
        """The scope of a department code (None: the hospital); unknown codes are refused."""
        if department is None:
            return Scope()
        for known in await departments(self.inputs):
            if known.code == department:
                return known
        raise InvalidPayload(f"unknown department {department!r}", department=department)

    async def submit(self, request: ReportRequest) -> ReportInfo:
        """Queue a report and generate it in the background; poll `archive.get` for it.

        A user with `QUEUED_PER_USER` reports still queued or running is asked to wait."""
        waiting = self._in_flight[request.requested_by]
        if waiting >= QUEUED_PER_USER:
            self.refused += 1
            raise RateLimited(
                f"{waiting} of your reports are still being generated: wait for one to finish",
                retry_after=QUEUE_RETRY_SECONDS,
            )
        info = await self.archive.open(
            request, self._now(), generator=GENERATOR_VERSION, schedule_id=None
        )
        task = asyncio.create_task(
            self._run(info.id, request, lambda step: None),
            name=f"report-{info.id}",
        )
        self._running.add(task)
        self._in_flight[request.requested_by] += 1
        task.add_done_callback(self._running.discard)
        task.add_done_callback(lambda _: self._in_flight.subtract([request.requested_by]))
        return info

    async def generate(
        self,
        request: ReportRequest,
        *,
        schedule_id: int | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> ReportInfo:
        """Generate a report now and return it, done or failed; `on_step` hears each step
        begin (computing, rendering, storing)."""
        info = await self.archive.open(
            request, self._now(), generator=GENERATOR_VERSION, schedule_id=schedule_id
        )
        return await self._run(info.id, request, on_step or (lambda step: None))

    async def _run(
        self, ident: int, request: ReportRequest, on_step: Callable[[str], None]
    ) -> ReportInfo:
        self.in_flight += 1
        try:
            async with self._turns:
                return await self._generate(ident, request, on_step)
        finally:
            self.in_flight -= 1

    async def _generate(
        self, ident: int, request: ReportRequest, on_step: Callable[[str], None]
    ) -> ReportInfo:
        await self.archive.started(ident)
        started = time.perf_counter()
        try:
            on_step("computing")
            document = await build_document(
                self.inputs, request, hospital=self._hospital, now=self._now()
            )
            on_step("rendering")
            content = await asyncio.to_thread(render, document, request.format)
            on_step("storing")
            info = await self.archive.store(
                ident,
                content,
                extension=request.format,
                feed_position=document.feed_position,
                figures_sha256=figures_digest(document),
                now=self._now(),
            )
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.archive.fail(ident, "cancelled", self._now()))
            raise
        except Exception as error:
            self.failed += 1
            self.outcomes[request.report_type, "failed"] += 1
            log.warning("report_failed", report=ident, error=str(error))
            return await self.archive.fail(ident, _reason(error), self._now())
        self.generated += 1
        self.outcomes[request.report_type, "done"] += 1
        if self._telemetry is not None:
            self._telemetry.report_generated(request.report_type, time.perf_counter() - started)
        log.info("report_generated", report=ident, type=request.report_type, size=info.size)
        return info

    async def verify(self, info: ReportInfo) -> Verification:
        """Generate `info`'s report again and compare its figures."""
        request = ReportRequest(
            report_type=info.report_type,
            scope=await self.scope(info.department),
            period=_period_of(info),
            format=info.format,
            requested_by=info.requested_by,
        )
        document = await build_document(
            self.inputs, request, hospital=self._hospital, now=self._now()
        )
        now_position = document.feed_position
        if info.figures_sha256 is None:
            reason, same = "the report was never completed: nothing to compare", False
        elif figures_digest(document) == info.figures_sha256:
            reason, same = "the same figures", True
        elif info.generator_version != GENERATOR_VERSION:
            reason, same = (
                f"generated by {info.generator_version}, now {GENERATOR_VERSION}: "
                "a figure's definition changed",
                False,
            )
        else:
            reason, same = (
                f"the data changed since: computed at feed position {info.feed_position}, "
                f"now {now_position}",
                False,
            )
        return Verification(info.id, same, reason, info.feed_position, now_position)

    async def settled(self) -> None:
        """Wait until every report queued so far is done or failed."""
        await asyncio.gather(*self._running, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _period_of(info: ReportInfo) -> ReportPeriod:
    zone = ZoneInfo(info.time_zone)
    return ReportPeriod(
        info.period_start.astimezone(zone),
        info.period_end.astimezone(zone),
        info.time_zone,
        info.period_label,
    )


def _reason(error: Exception) -> str:
    """What a failed run tells its reader: a client error's message, a disk's complaint."""
    if isinstance(error, ClientError):
        return error.message
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "the disk is full: no space left to write the report"
    if isinstance(error, OSError):
        return f"cannot write the report: {error.strerror or error}"
    return f"generation failed ({type(error).__name__}); see the service's log"


def configured_report_service(
    settings: Settings,
    database: AsyncEngine,
    view: MetricView,
    *,
    now: Callable[[], datetime],
    feed_position: Callable[[], Awaitable[int]],
    telemetry: Telemetry | None = None,
) -> ReportService:
    """The report service `settings` describe, over `database` and `view`."""
    archive = ReportArchive(
        database,
        settings.report_dir,
        in_database=settings.report_storage == "database",
        retention_days=settings.report_retention_days,
    )
    return ReportService(
        ReportInputs(database, view, settings.zone, feed_position),
        archive,
        hospital=settings.hospital_name,
        now=now,
        telemetry=telemetry,
    )
