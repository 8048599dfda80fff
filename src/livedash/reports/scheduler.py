"""Running report schedules on the leader: on time, once, retried, and seen when failing.

Only the instance that reads the change feed runs schedules (`FeedRunner.lead`); a run is
also claimed in the database (`ScheduleBook.claim`), so two instances that briefly both
believe they lead still run it once.

- **Misfires.** When a term starts, a schedule whose run was missed by more than
  `MISFIRE_GRACE` (the service was down) follows its `misfire` policy: `run_once` runs the
  latest missed run once, `skip` waits for the next one. Either way it never runs a backlog.
- **Retries.** A failed run (the report, or the relay refusing the e-mail) is tried again
  after `retry_seconds`, doubling each time, up to `max_attempts` in all for each run; its
  error stays on the schedule (`failures`: the latest run's failed attempts, `last_error`)
  until a run succeeds.
- **Seen.** The number of schedules whose last run failed is handed to `on_failing`: the
  service publishes it as the `report_runs_failing` metric, which the default alert rules
  raise an alert on, and Prometheus exports it.
- **Settling.** A run starts `settle` after its time (`report_settle_seconds`, 30 s), so that
  a report of the day before includes what was committed in its last second.
- **Retention.** Old reports are removed once an hour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog

from livedash.metrics.clock import Clock
from livedash.notifications.notice import DeliveryError
from livedash.reports.cron import next_run, runs_between, schedule_kind
from livedash.reports.generation import ReportRequest
from livedash.reports.mailing import ReportMailer
from livedash.reports.periods import previous_period
from livedash.reports.schedules import ScheduleBook, ScheduleInfo
from livedash.reports.service import ReportService

log = structlog.get_logger(__name__)

MISFIRE_GRACE = timedelta(minutes=5)
POLL_SECONDS = 30.0  # schedules changed on another instance are seen within this
RETENTION_EVERY = timedelta(hours=1)


class ReportScheduler:
    """The leader's loop over report schedules."""

    def __init__(
        self,
        book: ScheduleBook,
        service: ReportService,
        clock: Clock,
        zone: ZoneInfo,
        *,
        mailer: ReportMailer | None,
        max_attempts: int,
        retry_seconds: float,
        on_failing: Callable[[int], Awaitable[None]],
        settle: timedelta = timedelta(0),
    ) -> None:
        self._book = book
        self._service = service
        self._clock = clock
        self._zone = zone
        self._mailer = mailer
        self._max_attempts = max_attempts
        self._retry = retry_seconds
        self._on_failing = on_failing
        self._settle = settle
        self._changed = asyncio.Event()
        self._ticking = asyncio.Lock()
        self._last_expiry: datetime | None = None
        self.runs = 0
        self.failures = 0
        self.skipped = 0
        self.failing = 0

    def changed(self) -> None:
        """A schedule was created, resumed or removed here: look again now."""
        self._changed.set()

    async def while_leading(self) -> None:
        starting = True
        while True:
            self._changed.clear()
            try:
                await self.tick(starting=starting)
                starting = False
            except Exception:  # the database did not answer; the runs are still due
                log.exception("report_schedules_failed")
            earliest = await self._earliest()
            wait = POLL_SECONDS
            if earliest is not None:
                due = earliest + self._settle - self._clock.now()
                wait = min(wait, max(due.total_seconds(), 0.0))
            try:
                async with asyncio.timeout(wait):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def _earliest(self) -> datetime | None:
        try:
            return await self._book.earliest()
        except Exception:
            return None

    async def tick(self, *, starting: bool = False) -> None:
        """Run every run and retry due now, after any tick still under way here."""
        async with self._ticking:
            now = self._clock.now()
            # The scheduler's clock runs `settle` behind: a run at midnight starts once the
            # changes committed just before midnight have come through the feed.
            settled = now - self._settle
            for schedule in await self._book.due(settled):
                await self._due(schedule, settled, starting=starting)
            await self._publish_failing()
            if self._last_expiry is None or now - self._last_expiry >= RETENTION_EVERY:
                self._last_expiry = now
                removed = await self._service.archive.expire(now)
                if removed:
                    log.info("reports_expired", removed=removed)

    async def _due(self, schedule: ScheduleInfo, now: datetime, *, starting: bool) -> None:
        if schedule.retry_at is not None and schedule.retry_at <= now < schedule.next_run_at:
            if schedule.retry_of is None or not await self._book.claim(schedule, retry_at=None):
                return
            await self._run(schedule, schedule.retry_of, now, retrying=True)
            return
        missed = runs_between(
            schedule.cron, schedule.next_run_at - timedelta(microseconds=1), now, self._zone
        )
        following = next_run(schedule.cron, now, self._zone)
        if not await self._book.claim(schedule, next_run_at=following, retry_at=None):
            return  # another instance claimed it
        late = now - schedule.next_run_at > MISFIRE_GRACE
        if (len(missed) > 1 or (starting and late)) and schedule.misfire == "skip":
            self.skipped += len(missed)
            log.info("report_runs_skipped", schedule=schedule.id, missed=len(missed))
            return
        await self._run(
            schedule, missed[-1] if missed else schedule.next_run_at, now, retrying=False
        )

    async def _run(
        self, schedule: ScheduleInfo, run_at: datetime, now: datetime, *, retrying: bool
    ) -> None:
        """Generate the report of the run scheduled at `run_at`, and mail it."""
        self.runs += 1
        period = previous_period(schedule_kind(schedule.cron), run_at, self._zone)
        error: str | None = None
        report_id: int | None = None
        try:
            request = ReportRequest(
                report_type=schedule.report_type,
                scope=await self._service.scope(schedule.department),
                period=period,
                format=schedule.format,
                requested_by=f"schedule:{schedule.id}",
                parameters={"schedule": schedule.id, "run_at": run_at.isoformat()},
            )
            report = await self._service.generate(request, schedule_id=schedule.id)
            report_id = report.id
            if report.status != "done":
                error = report.error or "generation failed"
            elif self._mailer is not None and schedule.recipients:
                content = await self._service.archive.content(report.id)
                problems = await self._mailer.send(schedule, report, content)
                if problems:
                    log.warning("report_recipients_skipped", schedule=schedule.id, why=problems)
        except DeliveryError as failure:
            error = f"e-mail not delivered: {failure}"
        except Exception as failure:
            log.exception("report_run_failed", schedule=schedule.id)
            error = getattr(failure, "message", None) or f"{type(failure).__name__}"
        if error is None:
            await self._book.claim(
                await self._book.get(schedule.id),
                last_run_at=now,
                last_report_id=report_id,
                failures=0,
                last_error=None,
                retry_at=None,
                retry_of=None,
            )
            return
        self.failures += 1
        # Each run has its own attempts: one whose predecessor spent its retries still gets them.
        failures = schedule.failures + 1 if retrying else 1
        retry = failures < self._max_attempts
        log.warning("report_run_failed", schedule=schedule.id, error=error, retry=retry)
        await self._book.claim(
            await self._book.get(schedule.id),
            last_run_at=now,
            last_report_id=report_id,
            failures=failures,
            last_error=error[:500],
            retry_at=now + timedelta(seconds=self._retry * 2 ** (failures - 1)) if retry else None,
            retry_of=run_at if retry else None,
        )

    async def _publish_failing(self) -> None:
        self.failing = await self._book.failing()
        await self._on_failing(self.failing)
