"""Reports: generated on demand on every instance, scheduled and mailed from the leader."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.changefeed.positions import load_position
from livedash.cluster.runner import FEED_CONSUMER, FeedRunner
from livedash.cluster.view import MetricView
from livedash.metrics.clock import Clock
from livedash.observability.telemetry import Telemetry
from livedash.reports.mailing import ReportMailer
from livedash.reports.scheduler import ReportScheduler
from livedash.reports.schedules import ScheduleBook
from livedash.reports.service import ReportService, configured_report_service
from livedash.services.senders import email_sender
from livedash.settings import Settings


def build_reports(
    stack: AsyncExitStack,
    settings: Settings,
    database: AsyncEngine,
    view: MetricView,
    runner: FeedRunner,
    clock: Clock,
    telemetry: Telemetry,
) -> tuple[ReportService, ScheduleBook, ReportScheduler]:
    """Reports on demand everywhere; schedules run on the leader."""

    async def feed_position() -> int:
        pipeline = runner.pipeline
        if pipeline is not None:
            return pipeline.status().position
        async with database.connect() as connection:
            return await load_position(connection, FEED_CONSUMER)

    async def publish_failing(count: int) -> None:
        pipeline = runner.pipeline
        if pipeline is not None:
            await pipeline.set_system(report_runs_failing=count)

    service = configured_report_service(
        settings, database, view, now=clock.now, feed_position=feed_position, telemetry=telemetry
    )
    stack.push_async_callback(service.close)
    book = ScheduleBook(database, settings.zone, mail=settings.smtp_host is not None)
    sender = email_sender(settings)
    mailer = None
    if sender is not None:
        mailer = ReportMailer(
            sender,
            database,
            hospital=settings.hospital_name,
            public_url=settings.public_url,
            attachment_max_bytes=settings.report_attachment_max_bytes,
        )
    scheduler = ReportScheduler(
        book,
        service,
        clock,
        settings.zone,
        mailer=mailer,
        max_attempts=settings.report_max_attempts,
        retry_seconds=settings.report_retry_seconds,
        on_failing=publish_failing,
        settle=timedelta(seconds=settings.report_settle_seconds),
    )
    runner.lead(scheduler.while_leading)
    return service, book, scheduler
