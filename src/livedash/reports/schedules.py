"""Report schedules: stored, validated, and claimed by one instance per run.

A schedule names a report (type, department, format), a cron expression in the hospital's
time zone, what to do about runs missed while the service was down (`misfire`), and the
users it is mailed to. A run is claimed by moving the schedule's `next_run_at` on from the
value read, in one conditional UPDATE: of two instances that both see it due, one claims it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.errors import InvalidPayload, UnknownReport
from livedash.reports.catalogue import REPORT_TYPES
from livedash.reports.cron import next_run, validate_cron
from livedash.reports.generation import FORMATS
from livedash.store.models import (
    NotificationPreference,
    ReportRecord,
    ReportSchedule,
    Role,
    User,
)
from livedash.timeutil import as_aware, naive_utc

Misfire = Literal["run_once", "skip"]
MAX_RECIPIENTS = 50


class ScheduleRequest(BaseModel):
    """A new schedule, as the API and the CLI take it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    report_type: str
    department: str | None = None
    format: Literal["json", "csv", "pdf"] = "pdf"
    cron: str = Field(
        max_length=128,
        description="Five cron fields in the hospital's time zone, or @hourly, @daily, "
        "@weekly, @monthly.",
    )
    misfire: Misfire = Field(
        default="run_once",
        description="Runs missed while the service was down: `run_once` runs the latest "
        "of them once at start-up, `skip` waits for the next.",
    )
    recipients: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)

    @field_validator("name")
    @classmethod
    def _one_line(cls, name: str) -> str:
        # The name is the e-mails' subject, where a line break would fail every run.
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise ValueError("one line of text, without line breaks or control characters")
        return name


class ScheduleInfo(BaseModel):
    """A stored schedule and how its runs went."""

    id: int
    name: str
    report_type: str
    department: str | None
    format: str
    cron: str
    misfire: str
    recipients: list[str]
    created_by: str
    created_at: datetime
    paused: bool
    next_run_at: datetime
    last_run_at: datetime | None
    last_report_id: int | None
    failures: int
    last_error: str | None
    retry_at: datetime | None
    retry_of: datetime | None


_COLUMNS = [getattr(ReportSchedule, name) for name in ScheduleInfo.model_fields]
_MOMENTS = ("created_at", "next_run_at", "last_run_at", "retry_at", "retry_of")


def _info(row: Any) -> ScheduleInfo:
    values = dict(row._mapping)
    for name in _MOMENTS:
        if values[name] is not None:
            values[name] = as_aware(values[name])
    return ScheduleInfo.model_validate(values)


class ScheduleBook:
    """The report_schedules table."""

    def __init__(self, database: AsyncEngine, zone: ZoneInfo, *, mail: bool) -> None:
        """`mail`: whether e-mail is configured (a schedule's recipients need it)."""
        self._database = database
        self._zone = zone
        self._mail = mail

    async def create(
        self, request: ScheduleRequest, *, created_by: str, known: set[str], now: datetime
    ) -> ScheduleInfo:
        """Store a schedule after checking everything it names (`known`: department codes)."""
        if request.report_type not in REPORT_TYPES:
            raise InvalidPayload(
                f"unknown report type {request.report_type!r}; one of: {', '.join(REPORT_TYPES)}"
            )
        if request.format not in FORMATS:
            raise InvalidPayload(f"unknown format {request.format!r}")
        if request.department is not None and request.department not in known:
            raise InvalidPayload(f"unknown department {request.department!r}")
        expression = validate_cron(request.cron)
        if request.recipients and not self._mail:
            raise InvalidPayload(
                "e-mail is not configured (LIVEDASH_SMTP_HOST): a schedule with recipients "
                "would mail nobody; configure it, or schedule without recipients"
            )
        await self._check_recipients(request.recipients, request.department)
        values = {
            **request.model_dump(),
            "cron": expression,
            "recipients": sorted(set(request.recipients)),
            "created_by": created_by,
            "created_at": naive_utc(now),
            "paused": False,
            "next_run_at": naive_utc(next_run(expression, now, self._zone)),
            "failures": 0,
        }
        async with self._database.begin() as connection:
            result = await connection.execute(insert(ReportSchedule).values(**values))
            ident = int(result.inserted_primary_key[0])  # type: ignore[index]
        return await self.get(ident)

    async def _check_recipients(self, usernames: list[str], department: str | None) -> None:
        """Every recipient is an active user with an e-mail address who may see the scope."""
        _, refused = await sort_recipients(self._database, usernames, department)
        for username, reason in refused.items():
            raise InvalidPayload(f"recipient {username!r} {reason}")

    async def get(self, ident: int) -> ScheduleInfo:
        async with self._database.connect() as connection:
            row = (
                await connection.execute(select(*_COLUMNS).where(ReportSchedule.id == ident))
            ).first()
        if row is None:
            raise UnknownReport(f"no report schedule {ident}", schedule=ident)
        return _info(row)

    async def listed(self, *, after_id: int | None = None, limit: int = 100) -> list[ScheduleInfo]:
        query = select(*_COLUMNS).order_by(ReportSchedule.id).limit(limit)
        if after_id is not None:
            query = query.where(ReportSchedule.id > after_id)
        async with self._database.connect() as connection:
            return [_info(row) for row in await connection.execute(query)]

    async def pause(self, ident: int) -> ScheduleInfo:
        await self._set(ident, paused=True)
        return await self.get(ident)

    async def resume(self, ident: int, now: datetime) -> ScheduleInfo:
        """Resume from now on: the runs missed while paused are not made up."""
        schedule = await self.get(ident)
        await self._set(
            ident,
            paused=False,
            next_run_at=naive_utc(next_run(schedule.cron, now, self._zone)),
            retry_at=None,
            retry_of=None,
        )
        return await self.get(ident)

    async def delete(self, ident: int) -> None:
        """Delete a schedule; the reports it made stay (their parameters still name it)."""
        await self.get(ident)
        async with self._database.begin() as connection:
            await connection.execute(
                update(ReportRecord)
                .where(ReportRecord.schedule_id == ident)
                .values(schedule_id=None)
            )
            await connection.execute(delete(ReportSchedule).where(ReportSchedule.id == ident))

    async def due(self, now: datetime) -> list[ScheduleInfo]:
        """Schedules with a run or a retry due at `now`, not paused."""
        moment = naive_utc(now)
        query = select(*_COLUMNS).where(
            ReportSchedule.paused.is_(False),
            (ReportSchedule.next_run_at <= moment) | (ReportSchedule.retry_at <= moment),
        )
        async with self._database.connect() as connection:
            return [_info(row) for row in await connection.execute(query)]

    async def earliest(self) -> datetime | None:
        """The next moment any schedule has something due."""
        async with self._database.connect() as connection:
            rows = list(
                await connection.execute(
                    select(ReportSchedule.next_run_at, ReportSchedule.retry_at).where(
                        ReportSchedule.paused.is_(False)
                    )
                )
            )
        moments = [m for row in rows for m in row if m is not None]
        return as_aware(min(moments)) if moments else None

    async def failing(self) -> int:
        """How many schedules' last run failed."""
        async with self._database.connect() as connection:
            count = await connection.scalar(select(func.count()).where(ReportSchedule.failures > 0))
        return int(count or 0)

    async def claim(self, schedule: ScheduleInfo, **changes: Any) -> bool:
        """Apply `changes` if nobody else has since: the claim of one run or retry."""
        condition = [ReportSchedule.id == schedule.id]
        for name in ("next_run_at", "retry_at"):
            seen = getattr(schedule, name)
            column = getattr(ReportSchedule, name)
            condition.append(column.is_(None) if seen is None else column == naive_utc(seen))
        values = {
            name: naive_utc(value) if isinstance(value, datetime) else value
            for name, value in changes.items()
        }
        async with self._database.begin() as connection:
            result = await connection.execute(
                update(ReportSchedule).where(*condition).values(**values)
            )
            return bool(result.rowcount)

    async def _set(self, ident: int, **values: Any) -> None:
        await self.get(ident)
        values = {k: naive_utc(v) if isinstance(v, datetime) else v for k, v in values.items()}
        async with self._database.begin() as connection:
            await connection.execute(
                update(ReportSchedule).where(ReportSchedule.id == ident).values(**values)
            )


async def sort_recipients(
    database: AsyncEngine, usernames: list[str], department: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The e-mail address of each recipient who may receive a report of `department`'s scope,
    and why each other one may not (in the order given)."""
    if not usernames:
        return {}, {}
    async with database.connect() as connection:
        users = {
            row.username: row
            for row in await connection.execute(
                select(User.username, User.role, User.departments, User.active).where(
                    User.username.in_(usernames)
                )
            )
        }
        emails = {
            row.username: row.email
            for row in await connection.execute(
                select(NotificationPreference.username, NotificationPreference.email).where(
                    NotificationPreference.username.in_(usernames)
                )
            )
        }
    addresses: dict[str, str] = {}
    refused: dict[str, str] = {}
    for username in usernames:
        user = users.get(username)
        if user is None or not user.active:
            refused[username] = "is not an active user"
        elif not may_see(user.role, user.departments, department):
            where = "the whole hospital" if department is None else department
            refused[username] = f"may not see {where}"
        elif not emails.get(username):
            refused[username] = "has no e-mail address in their notification preferences"
        else:
            addresses[username] = str(emails[username])
    return addresses, refused


def may_see(role: str, departments: list[str] | None, department: str | None) -> bool:
    """Whether a user of `role` over `departments` may see a report's scope."""
    if role == Role.SUPER_ADMIN.value:
        return True
    return department is not None and department in (departments or [])
