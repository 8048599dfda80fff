"""Silences and mute timings: when an alert's notifications are held back.

- A **silence** is a time window with matchers (rule, department, severity; at least one),
  made by an admin through the REST API for the departments they may see, e.g. "the ED's
  `beds-busy` until 18:00 while the ward is being refitted". It can be ended early.
- A **mute timing** recurs, from the rules file: weekdays and a time of day in the hospital's
  zone (across midnight allowed), with the same matchers, e.g. the nightly maintenance window.

Either holds back notifications (in-app, e-mail, push) and escalation of a matching alert.
The alert itself is still raised, stored, counted and shown: a silence mutes, it never hides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.alerts.lifecycle import department_codes
from livedash.alerts.messages import AlertMessage
from livedash.alerts.records import naive
from livedash.auth.scope import visible_departments
from livedash.auth.tokens import Principal
from livedash.errors import ConfigurationError, Forbidden, InvalidPayload, UnknownAlert
from livedash.store.engine import write_locking
from livedash.store.models import AlertSeverity, AlertSilence, Role

MAX_SILENCE = timedelta(days=31)
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Matchers(BaseModel):
    """Which alerts: every given field must match (`department: hospital` is the hospital's)."""

    model_config = ConfigDict(extra="forbid")

    rule: str | None = Field(default=None, max_length=64)
    department: str | None = Field(default=None, max_length=16)
    severity: AlertSeverity | None = None

    def matches(self, alert: AlertMessage) -> bool:
        department = alert.department or "hospital"
        return (
            (self.rule is None or self.rule == alert.rule)
            and (self.department is None or self.department == department)
            and (self.severity is None or self.severity.value == alert.severity)
        )


class MuteTiming(Matchers):
    """A recurring window, from the rules file."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    weekdays: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS))
    start: time
    end: time

    def covers(self, local: datetime) -> bool:
        """Whether `local` (the hospital's wall clock) falls in this window."""
        day = WEEKDAYS[local.weekday()]
        moment = local.time()
        if self.start <= self.end:
            return day in self.weekdays and self.start <= moment < self.end
        # Across midnight: the part after midnight belongs to the previous day's window.
        previous = WEEKDAYS[(local.weekday() - 1) % 7]
        return (day in self.weekdays and moment >= self.start) or (
            previous in self.weekdays and moment < self.end
        )


class SilenceRequest(Matchers):
    """A silence to make: its matchers, its window (aware times), and why."""

    starts_at: datetime | None = None
    ends_at: datetime
    comment: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _window(self) -> SilenceRequest:
        if self.rule is None and self.department is None and self.severity is None:
            raise ValueError("a silence needs at least one matcher: rule, department or severity")
        if self.ends_at.tzinfo is None or (self.starts_at and self.starts_at.tzinfo is None):
            raise ValueError("give times with their offset (ISO 8601, e.g. ...Z)")
        return self


class Silence(Matchers):
    """A stored silence."""

    id: int
    created_by: str
    starts_at: datetime
    ends_at: datetime
    comment: str | None
    ended_by: str | None = None


def parse_mute_timings(data: Any, *, source: str) -> list[MuteTiming]:
    """The `mute_timings:` of a rules file (none if absent); errors name the entry and field."""
    items = data.get("mute_timings", []) if isinstance(data, dict) else []
    if not isinstance(items, list):
        raise ConfigurationError(f"{source}: mute_timings must be a list")
    timings: list[MuteTiming] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            timings.append(MuteTiming.model_validate(item))
        except ValidationError as error:
            for problem in error.errors():
                field = ".".join(str(part) for part in problem["loc"]) or "entry"
                problems.append(f"mute timing {index + 1}: {field}: {problem['msg']}")
    if problems:
        raise ConfigurationError(f"{source}: " + "; ".join(problems))
    return timings


class Silencer:
    """Whether an alert's notifications are held back now; and the silences' REST side."""

    def __init__(
        self, database: AsyncEngine, zone: ZoneInfo, mute_timings: Iterable[MuteTiming] = ()
    ) -> None:
        self._reader = database
        self._writer = write_locking(database)
        self._zone = zone
        self.mute_timings = list(mute_timings)

    async def silenced(self, alert: AlertMessage, at: datetime) -> bool:
        local = at.astimezone(self._zone)
        if any(timing.matches(alert) and timing.covers(local) for timing in self.mute_timings):
            return True
        return any(silence.matches(alert) for silence in await self._active(at))

    async def _active(self, at: datetime) -> list[Silence]:
        moment = naive(at)
        async with self._reader.connect() as connection:
            rows = (
                await connection.execute(
                    select(*AlertSilence.__table__.c).where(
                        AlertSilence.starts_at <= moment, AlertSilence.ends_at > moment
                    )
                )
            ).mappings()
            return [_silence(row) for row in rows]

    async def listed(self, principal: Principal, at: datetime) -> list[Silence]:
        """Silences not yet over, of departments `principal` may see."""
        async with self._reader.connect() as connection:
            rows = (
                await connection.execute(
                    select(*AlertSilence.__table__.c)
                    .where(AlertSilence.ends_at > naive(at))
                    .order_by(AlertSilence.starts_at)
                )
            ).mappings()
            silences = [_silence(row) for row in rows]
        known = await self._known()
        return [s for s in silences if _may_see(principal, s.department, known)]

    async def create(self, principal: Principal, request: SilenceRequest, now: datetime) -> Silence:
        _may_manage(principal)
        known = await self._known()
        if request.department is None and principal.role is not Role.SUPER_ADMIN:
            raise Forbidden("only super_admins silence every department: name a department")
        if request.department is not None and not _may_see(principal, request.department, known):
            raise InvalidPayload(f"department: {request.department!r} is not one you may see")
        starts = request.starts_at or now
        if request.ends_at <= max(starts, now):
            raise InvalidPayload("ends_at: a silence must end in the future, after it starts")
        if request.ends_at - starts > MAX_SILENCE:
            raise InvalidPayload("ends_at: a silence lasts at most 31 days")
        async with self._writer.begin() as connection:
            row = (
                (
                    await connection.execute(
                        insert(AlertSilence)
                        .values(
                            created_by=principal.subject,
                            created_at=naive(now),
                            starts_at=naive(starts),
                            ends_at=naive(request.ends_at),
                            rule=request.rule,
                            department=request.department,
                            severity=request.severity.value if request.severity else None,
                            comment=request.comment,
                        )
                        .returning(*AlertSilence.__table__.c)
                    )
                )
                .mappings()
                .one()
            )
        return _silence(row)

    async def end(self, principal: Principal, silence_id: int, now: datetime) -> Silence:
        """End a silence now."""
        _may_manage(principal)
        known = await self._known()
        async with self._writer.begin() as connection:
            row = (
                (
                    await connection.execute(
                        select(*AlertSilence.__table__.c).where(AlertSilence.id == silence_id)
                    )
                )
                .mappings()
                .first()
            )
            if row is None or not _may_see(principal, row["department"], known):
                raise UnknownAlert(f"no silence {silence_id} among those you may see")
            ended = (
                (
                    await connection.execute(
                        update(AlertSilence)
                        .where(AlertSilence.id == silence_id)
                        .values(
                            ends_at=min(row["ends_at"], naive(now)), expired_by=principal.subject
                        )
                        .returning(*AlertSilence.__table__.c)
                    )
                )
                .mappings()
                .one()
            )
        return _silence(ended)

    async def _known(self) -> Sequence[str]:
        async with self._reader.connect() as connection:
            return list((await department_codes(connection)).values())


def _may_manage(principal: Principal) -> None:
    if principal.role not in (Role.ADMIN, Role.SUPER_ADMIN):
        raise Forbidden("only admins and super_admins silence alerts")


def _may_see(principal: Principal, department: str | None, known: Sequence[str]) -> bool:
    if department is None or department == "hospital":
        return principal.role is Role.SUPER_ADMIN
    return department in visible_departments(principal, known)


def _silence(row: Any) -> Silence:
    return Silence(
        id=row["id"],
        created_by=row["created_by"],
        starts_at=row["starts_at"].replace(tzinfo=UTC),
        ends_at=row["ends_at"].replace(tzinfo=UTC),
        rule=row["rule"],
        department=row["department"],
        severity=AlertSeverity(row["severity"]) if row["severity"] else None,
        comment=row["comment"],
        ended_by=row["expired_by"],
    )
