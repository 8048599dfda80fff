"""Which alert rules are in force: the rules file's, until a super_admin sets others.

Rules set through the REST API (`PUT /api/alerts/rules`) are validated as the file is (a
mistake names the rule and the field, and changes nothing), stored as a new version in
`alert_rule_sets`, and in force from then on, on every instance: the leader applies them at
once when it served the request, and otherwise within `FOLLOW_SECONDS`. `DELETE` returns to
the file. The document is kept as it was sent, so what `GET` shows is what was written.

Alerts of a rule that is removed or changed stay open until a person resolves them or, for a
rule that is still there, its condition clears.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.alerts.config import AlertConfig, parse_alert_config, scaled
from livedash.auth.tokens import Principal
from livedash.errors import ConfigurationError, Forbidden, InvalidPayload
from livedash.store.engine import write_locking
from livedash.store.models import AlertRuleSet, Role

log = structlog.get_logger(__name__)

FOLLOW_SECONDS = 5.0
Apply = Callable[[AlertConfig], Awaitable[None]]


class RuleBook:
    """The alerting configuration in force; see the module's docstring."""

    def __init__(
        self,
        database: AsyncEngine,
        file_document: dict[str, Any],
        *,
        time_scale: float = 1.0,
    ) -> None:
        self._reader = database
        self._writer = write_locking(database)
        self._file_document = file_document
        self._scale = time_scale
        self._appliers: list[Apply] = []
        self._applied_version = 0  # the rules file is in force from the start
        self._changed = asyncio.Event()

    def on_change(self, apply: Apply) -> None:
        """Call `apply` with the new configuration whenever the rules in force change (on
        the instance that follows them: the leader)."""
        self._appliers.append(apply)

    async def current(self) -> tuple[int, dict[str, Any]]:
        """The version in force (0: the rules file) and its document."""
        async with self._reader.connect() as connection:
            row = (
                await connection.execute(
                    select(AlertRuleSet.version, AlertRuleSet.document)
                    .order_by(AlertRuleSet.version.desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            return 0, self._file_document
        return int(row[0]), dict(row[1])

    async def replace(self, principal: Principal, document: Any) -> int:
        """Put `document`'s rules in force; the new version. `InvalidPayload` names the
        mistake, and nothing changes."""
        _may_edit(principal)
        try:
            parse_alert_config(document, source="rules")
        except ConfigurationError as error:
            raise InvalidPayload(str(error)) from error
        async with self._writer.begin() as connection:
            latest = await connection.scalar(select(func.max(AlertRuleSet.version)))
            version = int(latest or 0) + 1
            await connection.execute(
                insert(AlertRuleSet).values(
                    version=version,
                    document=document,
                    updated_by=principal.subject,
                    updated_at=datetime.now(UTC).replace(tzinfo=None),
                )
            )
        log.info("alert_rules_replaced", version=version, by=principal.subject)
        self._changed.set()
        return version

    async def reset(self, principal: Principal) -> None:
        """Return to the rules file."""
        _may_edit(principal)
        async with self._writer.begin() as connection:
            await connection.execute(delete(AlertRuleSet))
        log.info("alert_rules_reset", by=principal.subject)
        self._changed.set()

    async def follow(self) -> None:
        """Apply the rules in force whenever they change (a leader task)."""
        while True:
            version, document = await self.current()
            if version != self._applied_version:
                try:
                    config = scaled(parse_alert_config(document, source="rules"), self._scale)
                except ConfigurationError as error:  # stored by an older livedash, say
                    log.error("alert_rules_unusable", version=version, error=str(error))
                else:
                    for apply in self._appliers:
                        await apply(config)
                    log.info("alert_rules_applied", version=version)
                self._applied_version = version
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FOLLOW_SECONDS):
                    await self._changed.wait()


def _may_edit(principal: Principal) -> None:
    if principal.role is not Role.SUPER_ADMIN:
        raise Forbidden("only super_admins change the alert rules")
