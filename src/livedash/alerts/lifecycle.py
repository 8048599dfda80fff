"""What people do with alerts: list them, acknowledge them, resolve them by hand.

Only admins and super_admins acknowledge or resolve, and only alerts of departments they may
see (super_admins also the hospital's); anyone else gets `forbidden`, and an alert outside the
caller's departments is `unknown_alert`, as if it did not exist. Any instance serves these:
the change is stored, recorded as a transition with its actor, and pushed to the alert's
screens as an `alert` event.

An acknowledgement may carry a note and an expiry (`until`), after which the alert counts as
unacknowledged again. Resolving by hand ends the alert even while its condition lasts; the
rule then raises a new one only after the condition has cleared and come back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.alerts.messages import ALERT_EVENT, RESOLVED, AlertMessage, Screens
from livedash.alerts.records import add_transition, alert_row, change_alert, naive
from livedash.alerts.rules import ThresholdRule
from livedash.auth.scope import visible_departments
from livedash.auth.tokens import Principal
from livedash.errors import Forbidden, InvalidPayload, UnknownAlert
from livedash.metrics.clock import Clock
from livedash.store.engine import write_locking
from livedash.store.models import Alert, AlertStatus, Department, Role

MANAGING_ROLES = frozenset({Role.ADMIN, Role.SUPER_ADMIN})
MAX_LISTED = 500
OPEN = frozenset({AlertStatus.ACTIVE.value, AlertStatus.ACKNOWLEDGED.value})


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts a list holds; every field given must match (None: any)."""

    statuses: frozenset[str] = OPEN
    severities: frozenset[str] | None = None
    departments: frozenset[str | None] | None = None
    """Department codes; None in it: the hospital's own alerts."""
    rules: frozenset[str] | None = None
    since: datetime | None = None
    """Raised at or after."""
    until: datetime | None = None
    """Raised before."""


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def alert_message(
    row: RowMapping, department: str | None, at: datetime, rule: ThresholdRule | None
) -> AlertMessage:
    """The `alert` event of a stored alert row, as of `at`."""
    return AlertMessage(
        id=row["id"],
        rule=row["rule"],
        department=department,
        severity=row["severity"],
        state=row["state"],
        status=row["status"],
        title=row["title"],
        value=row["value"],
        threshold=row["threshold"],
        clear_at=rule.clear_threshold if rule is not None else None,
        metric=rule.metric if rule is not None else None,
        raised_at=_aware(row["raised_at"]) or at,
        at=at,
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=_aware(row["acknowledged_at"]),
        acknowledgement_note=row["acknowledgement_note"],
        acknowledged_until=_aware(row["acknowledged_until"]),
        resolved_at=_aware(row["resolved_at"]),
        resolved_by=row["resolved_by"],
        escalation_level=row["escalation_level"],
        expected=row["expected"],
        band_low=row["band_low"],
        band_high=row["band_high"],
    )


class AlertDesk:
    """Alerts as people see and handle them (REST and the page)."""

    def __init__(
        self,
        database: AsyncEngine,
        screens: Screens,
        clock: Clock,
        rules: Callable[[], Mapping[str, ThresholdRule]],
        *,
        announce: Callable[[AlertMessage, str], None] | None = None,
    ) -> None:
        self._reader = database
        self._writer = write_locking(database)
        self._screens = screens
        self._clock = clock
        self._rules = rules  # the rules in force now (they can be replaced)
        self._announce = announce

    async def listed(
        self,
        principal: Principal,
        wanted: AlertFilter | None = None,
        *,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AlertMessage]:
        """The alerts `principal` may see that match `wanted` (default: the open ones),
        newest first; with `before`, only those of a smaller id (the next page)."""
        wanted = wanted or AlertFilter()
        now = self._clock.now()
        async with self._reader.connect() as connection:
            codes = await department_codes(connection)
            visible = visible_departments(principal, codes.values())
            shown = visible if wanted.departments is None else visible & wanted.departments
            ids = [id_ for id_, code in codes.items() if code in shown]
            in_scope: ColumnElement[bool] = Alert.department_id.in_(ids)
            if None in shown:
                in_scope = or_(in_scope, Alert.department_id.is_(None))
            query = (
                select(*Alert.__table__.c)
                .where(in_scope, Alert.status.in_(sorted(wanted.statuses)))
                .order_by(Alert.id.desc())
                .limit(min(limit, MAX_LISTED + 1))
            )
            if before is not None:
                query = query.where(Alert.id < before)
            if wanted.severities is not None:
                query = query.where(Alert.severity.in_(sorted(wanted.severities)))
            if wanted.rules is not None:
                query = query.where(Alert.rule.in_(sorted(wanted.rules)))
            if wanted.since is not None:
                query = query.where(Alert.raised_at >= naive(wanted.since))
            if wanted.until is not None:
                query = query.where(Alert.raised_at < naive(wanted.until))
            rows = (await connection.execute(query)).mappings().all()
        return [self._message(row, codes, now) for row in rows]

    async def acknowledge(
        self,
        principal: Principal,
        alert_id: int,
        *,
        note: str | None = None,
        until: datetime | None = None,
    ) -> AlertMessage:
        now = self._clock.now()
        if until is not None and until <= now:
            raise InvalidPayload("until: the acknowledgement's expiry must be in the future")
        changes = {
            "acknowledged_by": principal.subject,
            "acknowledged_at": naive(now),
            "acknowledgement_note": note,
            "acknowledged_until": naive(until) if until is not None else None,
        }
        return await self._change(principal, alert_id, "acknowledged", changes)

    async def resolve(self, principal: Principal, alert_id: int) -> AlertMessage:
        now = self._clock.now()
        changes = {
            "status": AlertStatus.RESOLVED.value,
            "resolved_at": naive(now),
            "resolved_by": principal.subject,
        }
        return await self._change(principal, alert_id, "resolved", changes)

    async def _change(
        self, principal: Principal, alert_id: int, action: str, changes: dict[str, Any]
    ) -> AlertMessage:
        if principal.role not in MANAGING_ROLES:
            raise Forbidden(f"only admins and super_admins may mark an alert {action}")
        now = self._clock.now()
        async with self._writer.begin() as connection:
            codes = await department_codes(connection)
            row = await alert_row(connection, alert_id)
            department = codes.get(row["department_id"]) if row is not None else None
            if row is None or department not in visible_departments(principal, codes.values()):
                raise UnknownAlert(f"no alert {alert_id} among those you may see")
            if row["status"] == AlertStatus.RESOLVED.value:
                raise InvalidPayload(f"alert {alert_id} is resolved already")
            if action == "acknowledged":
                changes = {**changes, "status": AlertStatus.ACKNOWLEDGED.value}
            changed = await change_alert(connection, alert_id, **changes, updated_at=naive(now))
            if changed is None:  # resolved meanwhile (by its rule, or by someone else)
                raise InvalidPayload(f"alert {alert_id} is resolved already")
            await add_transition(
                connection,
                alert_id=alert_id,
                rule=row["rule"] or "",
                department_id=row["department_id"],
                before=row["status"],
                after=changed["status"],
                at=now,
                value=row["value"],
                actor=principal.subject,
            )
        message = self._message(changed, codes, now)
        if action == "resolved" and self._announce is not None:
            self._announce(message, RESOLVED)  # those told of it hear it ended
        await self._screens.to_department(
            message.department, ALERT_EVENT, message.model_dump(mode="json")
        )
        return message

    def _message(self, row: RowMapping, codes: Mapping[int, str], now: datetime) -> AlertMessage:
        department_id = row["department_id"]
        department = codes.get(department_id) if department_id is not None else None
        rule = self._rules().get(row["rule"]) if row["rule"] is not None else None
        return alert_message(row, department, now, rule)


async def department_codes(connection: AsyncConnection) -> dict[int, str]:
    rows = (await connection.execute(select(Department.id, Department.code))).all()
    return {row[0]: row[1] for row in rows}
