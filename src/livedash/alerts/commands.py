"""What `livedash alerts …` does, without a running service: the alert desk and the silencer
the REST API uses, over the configured database, for a named operator.

The operator acts as a super_admin (whoever runs the command can read the database anyway)
under the name it gives, which the silences table keeps as `created_by` / `expired_by`: the
audit trail shows who silenced what from the shell, as it shows who did from the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.alerts.config import parse_alert_config
from livedash.alerts.lifecycle import OPEN, AlertDesk, AlertFilter, department_codes
from livedash.alerts.messages import AlertMessage
from livedash.alerts.rulebook import RuleBook
from livedash.alerts.rules import ThresholdRule, read_rules_file
from livedash.alerts.silences import Silence, Silencer, SilenceRequest
from livedash.auth.tokens import Principal
from livedash.errors import ConfigurationError, InvalidPayload
from livedash.metrics.clock import SystemClock
from livedash.settings import Settings
from livedash.store.engine import open_database
from livedash.store.models import Alert, AlertSeverity, AlertStatus, Role

log = structlog.get_logger(__name__)

HOSPITAL = "hospital"
"""What a department filter or matcher names for the hospital's own alerts."""


class _NoScreens:
    """The CLI pushes to no socket: listing and silencing send no `alert` event."""

    async def to_department(self, department: str | None, event: str, payload: Any) -> None:
        """Nothing to push to."""

    async def to_user(self, username: str, event: str, payload: Any) -> None:
        """Nothing to push to."""


def operator(name: str) -> Principal:
    """The principal the CLI acts as: a super_admin named `name`, for the audit trail."""
    now = datetime.now(UTC)
    return Principal(
        subject=name,
        role=Role.SUPER_ADMIN,
        departments=frozenset(),
        expires_at=now + timedelta(minutes=5),
        issued_at=now,
        token_id=None,
    )


@dataclass(frozen=True, slots=True)
class _Rules:
    threshold: Mapping[str, ThresholdRule]
    names: frozenset[str]


async def _rules_in_force(settings: Settings, database: AsyncEngine) -> _Rules:
    """The rules in force: the newest set through the API, else the rules file."""
    document, source = read_rules_file(settings.alert_rules_file)
    _version, current = await RuleBook(database, document).current()
    try:
        config = parse_alert_config(current, source=source)
    except ConfigurationError as error:
        log.warning("alert_rules_unusable", error=str(error))
        return _Rules({}, frozenset())
    threshold = {rule.name: rule for rule in config.rules}
    return _Rules(threshold, frozenset({*threshold, *(r.name for r in config.anomaly_rules)}))


async def run_list_alerts(
    settings: Settings,
    *,
    departments: Iterable[str] = (),
    severities: Iterable[AlertSeverity] = (),
    statuses: Iterable[AlertStatus] = (),
    limit: int = 100,
) -> list[AlertMessage]:
    """The alerts matching the filters (default: the open ones), newest first; a department
    is a code or `hospital`."""
    named = list(departments)
    wanted = AlertFilter(
        statuses=frozenset(s.value for s in statuses) or OPEN,
        severities=frozenset(s.value for s in severities) or None,
        departments=frozenset(None if d == HOSPITAL else d for d in named) or None,
    )
    async with open_database(settings.database_url) as database:
        await _known_departments(database, named)
        rules = await _rules_in_force(settings, database)
        desk = AlertDesk(database, _NoScreens(), SystemClock(), lambda: rules.threshold)
        return await desk.listed(operator("cli"), wanted, limit=limit)


async def run_silence(settings: Settings, request: SilenceRequest, by: str) -> Silence:
    """Silence matching alerts as the operator `by`; `InvalidPayload` for a rule that no
    rule in force and no alert has, or a department the hospital does not have."""
    async with open_database(settings.database_url) as database:
        if request.department is not None:
            await _known_departments(database, [request.department])
        if request.rule is not None:
            rules = await _rules_in_force(settings, database)
            if request.rule not in rules.names and not await _raised_by(database, request.rule):
                known = ", ".join(sorted(rules.names)) or "none"
                raise InvalidPayload(
                    f"rule: no rule in force and no alert is called {request.rule!r} "
                    f"(the rules: {known})"
                )
        silencer = Silencer(database, settings.zone)
        silence = await silencer.create(operator(by), request, datetime.now(UTC))
    log.info(
        "audit_silence_created",
        silence=silence.id,
        by=by,
        rule=silence.rule,
        department=silence.department,
        severity=silence.severity,
        ends_at=silence.ends_at.isoformat(),
    )
    return silence


async def run_list_silences(settings: Settings) -> list[Silence]:
    """The silences not yet over, soonest first."""
    async with open_database(settings.database_url) as database:
        return await Silencer(database, settings.zone).listed(operator("cli"), datetime.now(UTC))


async def run_end_silence(settings: Settings, silence_id: int, by: str) -> Silence:
    """End a silence now, as the operator `by`; `UnknownAlert` if there is none."""
    async with open_database(settings.database_url) as database:
        ended = await Silencer(database, settings.zone).end(
            operator(by), silence_id, datetime.now(UTC)
        )
    log.info("audit_silence_ended", silence=silence_id, by=by)
    return ended


async def _known_departments(database: AsyncEngine, named: Iterable[str]) -> None:
    """`InvalidPayload` unless each of `named` is a department code or `hospital`."""
    async with database.connect() as connection:
        codes = set((await department_codes(connection)).values())
    unknown = sorted(set(named) - codes - {HOSPITAL})
    if unknown:
        raise InvalidPayload(
            f"department: {', '.join(map(repr, unknown))} is not a department of this hospital "
            f"(its codes: {', '.join(sorted(codes)) or 'none yet'}; or `{HOSPITAL}`)"
        )


async def _raised_by(database: AsyncEngine, rule: str) -> bool:
    async with database.connect() as connection:
        found = await connection.scalar(select(Alert.id).where(Alert.rule == rule).limit(1))
    return found is not None
