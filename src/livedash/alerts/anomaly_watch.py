"""Anomaly rules on the leader: each completed hour is compared with its own history.

A few minutes after each local hour ends (`SETTLE`: the feed and the roll-ups have caught up),
every anomaly rule's series is assessed for each scope it applies to (`anomaly.assess`). An
anomalous hour raises an alert carrying the observed value and the expected band; later
anomalous hours update it; the next normal hour resolves it. One anomaly that lasts several
hours is one alert. Nothing is assessed while data is stale, and an hour without enough
history is never anomalous. Open anomaly alerts are read back at each term's start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import RowMapping, select
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.alerts.anomaly import AnomalyRule, Assessment, assess, completed_hour
from livedash.alerts.lifecycle import alert_message, department_codes
from livedash.alerts.messages import ALERT_EVENT, RAISED, RESOLVED, AlertMessage, Screens
from livedash.alerts.records import add_transition, change_alert, naive, raise_alert
from livedash.metrics.clock import Clock
from livedash.store.engine import write_locking
from livedash.store.models import Alert, AlertStatus

log = structlog.get_logger(__name__)

SETTLE = timedelta(minutes=2)
HOUR = timedelta(hours=1)
Key = tuple[str, int | None]  # (rule, department id)
Told = Callable[[AlertMessage, str], None]


class AnomalyWatch:
    """The anomaly rules' alerts while this instance leads; see the module's docstring."""

    def __init__(
        self,
        rules: Iterable[AnomalyRule],
        database: AsyncEngine,
        screens: Screens,
        clock: Clock,
        zone: ZoneInfo,
        *,
        stale: Callable[[], bool],
        tell: Told,
    ) -> None:
        self.rules = {rule.name: rule for rule in rules}
        self._reader = database
        self._writer = write_locking(database)
        self._screens = screens
        self._clock = clock
        self._zone = zone
        self._stale = stale
        self._tell = tell
        self._open: dict[Key, int] = {}

    async def replace_rules(self, rules: Iterable[AnomalyRule]) -> None:
        """Assess `rules` from the next hour on."""
        self.rules = {rule.name: rule for rule in rules}
        await self.restore()

    async def while_leading(self) -> None:
        """Assess each hour once it has settled, for as long as this instance leads."""
        await self.restore()
        done: datetime | None = None
        while True:
            hour = completed_hour(self._clock.now() - SETTLE, self._zone)
            if hour != done and self.rules:
                await self.assess_hour(hour)
                done = hour
            due = hour + 2 * HOUR + SETTLE  # the next hour's end, settled
            await asyncio.sleep(max((due - self._clock.now()).total_seconds(), 1.0))

    async def restore(self) -> None:
        """The anomaly alerts still open (raised before a restart or by an earlier leader)."""
        async with self._reader.connect() as connection:
            rows = await connection.execute(
                select(Alert.id, Alert.rule, Alert.department_id).where(
                    Alert.rule.in_(list(self.rules)), Alert.status != AlertStatus.RESOLVED.value
                )
            )
            self._open = {
                (rule, department): alert
                for alert, rule, department in rows.all()
                if rule is not None
            }

    async def assess_hour(self, hour_start: datetime) -> None:
        """Assess the hour beginning at `hour_start` (aware) for every rule and scope."""
        if self._stale():
            log.info("anomaly_assessment_skipped_stale", hour=hour_start.isoformat())
            return
        found: list[tuple[AnomalyRule, str | None, int | None, Assessment]] = []
        async with self._reader.connect() as connection:
            codes = await department_codes(connection)
            for rule in self.rules.values():
                scopes: list[tuple[str | None, int | None]] = (
                    [(None, None)] if rule.applies_to(None) else []
                )
                scopes += [(code, id_) for id_, code in codes.items() if rule.applies_to(code)]
                for code, department_id in scopes:
                    verdict = await assess(connection, rule, department_id, hour_start, self._zone)
                    found.append((rule, code, department_id, verdict))
        await self._record(found, hour_start)

    async def _record(
        self,
        found: list[tuple[AnomalyRule, str | None, int | None, Assessment]],
        hour_start: datetime,
    ) -> None:
        now = self._clock.now()
        told: list[tuple[AlertMessage, str]] = []
        async with self._writer.begin() as connection:
            for rule, code, department_id, verdict in found:
                key = (rule.name, department_id)
                open_id = self._open.get(key)
                if verdict.observed is None or not verdict.enough_history:
                    continue  # no data, or too little history: nothing can be said
                edge = _edge(verdict)
                band = {"expected": verdict.expected, "band_low": verdict.low}
                band["band_high"] = verdict.high
                row: RowMapping | None
                if verdict.anomalous and open_id is None:
                    raised = await raise_alert(
                        connection,
                        department_id=department_id,
                        severity=rule.severity.value,
                        title=rule.summary or _title(rule, code, hour_start, self._zone),
                        raised_at=naive(now),
                        rule=rule.name,
                        state="firing",
                        value=verdict.observed,
                        threshold=edge,
                        updated_at=naive(now),
                        **band,
                    )
                    self._open[key] = raised["id"]
                    row = raised
                    before, after, event = "normal", "firing", RAISED
                elif verdict.anomalous and open_id is not None:
                    row = await change_alert(
                        connection,
                        open_id,
                        value=verdict.observed,
                        threshold=edge,
                        updated_at=naive(now),
                        **band,
                    )
                    before, after, event = "firing", "firing", ""
                elif open_id is not None:
                    row = await change_alert(
                        connection,
                        open_id,
                        status=AlertStatus.RESOLVED.value,
                        state="normal",
                        value=verdict.observed,
                        resolved_at=naive(now),
                        updated_at=naive(now),
                        **band,
                    )
                    del self._open[key]
                    before, after, event = "firing", "normal", RESOLVED
                else:
                    continue
                await add_transition(
                    connection,
                    alert_id=row["id"] if row is not None else open_id,
                    rule=rule.name,
                    department_id=department_id,
                    before=before,
                    after=after,
                    at=now,
                    value=verdict.observed,
                )
                if row is not None:
                    told.append((alert_message(row, code, now, None), event))
        for message, event in told:
            log.info(
                "anomaly_alert", rule=message.rule, department=message.department, alert_event=event
            )
            await self._screens.to_department(
                message.department, ALERT_EVENT, message.model_dump(mode="json")
            )
            if event:
                self._tell(message, event)


def _edge(verdict: Assessment) -> float | None:
    """The side of the band the hour is past (the `threshold` an alert shows)."""
    if verdict.observed is None or verdict.low is None or verdict.high is None:
        return None
    return verdict.high if verdict.observed > verdict.high else verdict.low


def _title(rule: AnomalyRule, department: str | None, hour_start: datetime, zone: ZoneInfo) -> str:
    where = "the hospital" if department is None else department
    local = hour_start.astimezone(zone).strftime("%H:00")
    return f"Unusual {rule.series} in {where} ({local} hour)"
