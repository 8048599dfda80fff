"""Rules evaluated on the leader: each changed value moves its conditions, a timer ends pending
and keep-firing periods, and every transition is stored and pushed to the screens.

`AlertService` is a feed consumer (`livedash.services` registers it): it hears every batch of
changed values while this instance reads the feed, and runs `while_leading` meanwhile. A value
reaches only the conditions of its own (metric, department): a dictionary lookup, whatever the
number of rules.

Stored: a firing condition raises an `alerts` row (which the active-alert metrics count), its
later states update that row, and its recovery resolves it; each transition is a row of
`alert_transitions`. A new leader reads the open rows back, so a condition that fired before a
restart or a takeover stays one alert.

Stale: while the database is down, or the feed is later than `alert_stale_after_seconds`,
every condition is stale; nothing fires or resolves on data that old.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import RowMapping, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.aio import BackgroundTasks
from livedash.alerts.evaluation import Condition, State, Transition, fires, resolves
from livedash.alerts.lifecycle import alert_message, department_codes
from livedash.alerts.messages import (
    ALERT_EVENT,
    ESCALATED,
    RAISED,
    RESOLVED,
    AlertMessage,
    Screens,
)
from livedash.alerts.records import add_transition, alert_row, change_alert, naive, raise_alert
from livedash.alerts.rules import ThresholdRule
from livedash.metrics.clock import Clock
from livedash.metrics.engine import MetricValue
from livedash.store.engine import write_locking
from livedash.store.models import Alert, AlertStatus

log = structlog.get_logger(__name__)

Key = tuple[str, str | None]  # (rule, department)
AlertListener = Callable[[AlertMessage, str, int], Awaitable[None]]
"""Hears an alert event: the alert, `raised`/`escalated`/`resolved`, the escalation level."""
TICK_RETRY_SECONDS = 1.0
MAX_ESCALATION_LEVEL = 2  # 1: the department's admins; 2: the super_admins


@dataclass(slots=True)
class _Turn:
    """One alert's events waiting to be announced, in order (asyncio's lock is FIFO)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


@dataclass(slots=True)
class _Watched:
    condition: Condition
    department_id: int | None
    alert_id: int | None = None
    escalate_at: datetime | None = None  # when to look whether someone acknowledged it


class AlertService:
    """The rules' conditions while this instance leads; see the module's docstring."""

    def __init__(
        self,
        rules: Iterable[ThresholdRule],
        database: AsyncEngine,
        screens: Screens,
        clock: Clock,
        zone: ZoneInfo,
        *,
        stale_after_seconds: float,
        listeners: Iterable[AlertListener] = (),
    ) -> None:
        self.rules: dict[str, ThresholdRule] = {}
        self._by_metric: dict[str, list[ThresholdRule]] = {}
        self._use(rules)
        self._database = write_locking(database)
        self._screens = screens
        self._clock = clock
        self._zone = zone
        self._stale_after = stale_after_seconds
        self._watched: dict[Key, _Watched] = {}
        self._by_value: dict[tuple[str, str | None], list[_Watched]] = {}
        self._restored = False
        self._stale = False
        self._database_down = False
        self._feed_late = False
        self._listeners = list(listeners)
        # Listeners (notifications) run apart: nothing they do may hold up the feed.
        self._background = BackgroundTasks()
        self._lock = asyncio.Lock()  # batches and ticks apply one at a time, in order
        # Recordings run one at a time in the order they were made (asyncio's lock is FIFO).
        self._recording = asyncio.Lock()
        self._announcing: dict[int, _Turn] = {}  # per alert: its events in order
        self._deadline_changed = asyncio.Event()
        self.raised: Counter[str] = Counter()  # alerts raised here (rules, anomalies), by severity

    def _use(self, rules: Iterable[ThresholdRule]) -> None:
        self.rules = {rule.name: rule for rule in rules}
        self._by_metric = {}
        for rule in self.rules.values():
            self._by_metric.setdefault(rule.metric, []).append(rule)

    async def replace_rules(self, rules: Iterable[ThresholdRule]) -> None:
        """Evaluate `rules` from now on. Open alerts of rules still there carry on (read
        back from the database); those of rules gone wait for a person to resolve them."""
        async with self._lock, self._recording:  # what was decided is stored first
            self._use(rules)
            self._watched.clear()
            self._by_value.clear()
            self._restored = False
            await self._restore()
        self._deadline_changed.set()

    # -- the consumer ----------------------------------------------------------------------

    async def on_updates(self, values: list[MetricValue]) -> None:
        now = self._clock.now()
        async with self._lock:
            moved: list[tuple[_Watched, Transition]] = []
            stale = self._staleness(values)
            if stale != self._stale:
                self._stale = stale
                for watched in self._watched.values():
                    moved += [(watched, t) for t in watched.condition.set_stale(stale, now)]
            if not self._restored:
                try:
                    await self._restore()
                except Exception as error:  # judged once the open alerts can be read back
                    log.warning("alert_restore_failed", error=str(error))
                    return
            for value in values:
                number = _number(value.value)
                if number is None:
                    continue
                for watched in self._conditions(value):
                    moved += [(watched, t) for t in watched.condition.observe(number, now)]
        if moved:
            # Stored apart, in order: a database that makes writers wait (SQLite's lock held
            # by the hospital's application) must not hold up the feed and every screen.
            self._background.spawn(self._record_in_order(moved), name="livedash-alert-record")
            self._deadline_changed.set()  # only a transition moves a deadline

    async def _record_in_order(self, moved: list[tuple[_Watched, Transition]]) -> None:
        try:
            async with self._recording:
                await self._record(moved)
        except Exception:
            log.exception("alert_record_failed", transitions=len(moved))

    async def while_leading(self) -> None:
        """End pending and keep-firing periods on time, while this instance leads; what it
        knew is forgotten when it stops (a later term starts from the stored alerts)."""
        try:
            await self._follow_deadlines()
        finally:
            self._forget()
            await self._background.close()

    async def _follow_deadlines(self) -> None:
        while True:
            self._deadline_changed.clear()
            deadlines = [
                deadline
                for watched in self._watched.values()
                for deadline in (watched.condition.deadline(), watched.escalate_at)
                if deadline is not None
            ]
            wait = (
                max((min(deadlines) - self._clock.now()).total_seconds(), 0.0)
                if deadlines
                else None
            )
            try:
                async with asyncio.timeout(wait):
                    await self._deadline_changed.wait()
                continue
            except TimeoutError:
                pass
            try:
                await self.tick()
            except Exception:  # the database did not answer: the periods are still due
                log.exception("alert_tick_failed")
                await asyncio.sleep(TICK_RETRY_SECONDS)

    async def tick(self) -> None:
        """Move every condition whose period has ended, and escalate every alert nobody
        acknowledged in time (the clock's now)."""
        now = self._clock.now()
        async with self._lock:  # decided under the lock, stored after it: never the feed's wait
            if not self._restored:
                await self._restore()
            moved = [
                (watched, transition)
                for watched in self._watched.values()
                for transition in watched.condition.tick(now)
            ]
            due = [
                watched
                for watched in self._watched.values()
                if watched.escalate_at is not None and watched.escalate_at <= now
            ]
        async with self._recording:
            await self._record(moved)
            for watched in due:
                await self._escalate(watched, now)

    async def _escalate(self, watched: _Watched, now: datetime) -> None:
        """Tell the next tier of an alert still unacknowledged (acknowledgements are made on
        any instance, so the stored row decides)."""
        rule = watched.condition.rule
        delay = rule.escalate_after
        watched.escalate_at = None
        if watched.alert_id is None or delay is None:
            return
        async with self._database.begin() as connection:
            row = await alert_row(connection, watched.alert_id)
            if row is None or row["status"] == AlertStatus.RESOLVED.value:
                return
            until = row["acknowledged_until"]
            if row["acknowledged_at"] is not None and (until is None or until > naive(now)):
                if until is not None:  # counts as unacknowledged again from then
                    watched.escalate_at = until.replace(tzinfo=UTC) + delay
                return
            level = row["escalation_level"] + 1
            row = await change_alert(
                connection,
                watched.alert_id,
                escalation_level=level,
                status=AlertStatus.ACTIVE.value,
                updated_at=naive(now),
            )
            if row is None:
                return  # resolved meanwhile
            await add_transition(
                connection,
                alert_id=watched.alert_id,
                rule=rule.name,
                department_id=watched.department_id,
                before=f"level {level - 1}",
                after=f"level {level}",
                at=now,
                value=row["value"],
            )
        if level < MAX_ESCALATION_LEVEL:
            watched.escalate_at = now + delay
        message = alert_message(row, watched.condition.department, now, rule)
        log.warning("alert_escalated", alert=message.id, rule=rule.name, level=level)
        await self._screens.to_department(
            message.department, ALERT_EVENT, message.model_dump(mode="json")
        )
        self.announce(message, ESCALATED, level)

    # -- conditions ------------------------------------------------------------------------

    def _staleness(self, values: list[MetricValue]) -> bool:
        """Whether data is stale after this batch: the database down, or the feed late."""
        for value in values:
            if value.department is not None:
                continue
            if value.metric == "database_up":
                self._database_down = not bool(value.value)
            elif value.metric == "feed_lag_seconds":
                number = _number(value.value)
                self._feed_late = number is not None and number > self._stale_after
        return self._database_down or self._feed_late

    def _conditions(self, value: MetricValue) -> list[_Watched]:
        key = (value.metric, value.department)
        found = self._by_value.get(key)
        if found is None:
            found = self._by_value[key] = [
                self._watch(rule, value.department, value.department_id)
                for rule in self._by_metric.get(value.metric, ())
                if rule.applies_to(value.department)
            ]
        return found

    def _watch(
        self, rule: ThresholdRule, department: str | None, department_id: int | None
    ) -> _Watched:
        key = (rule.name, department)
        watched = self._watched.get(key)
        if watched is None:
            condition = Condition(rule, department, self._zone)
            watched = self._watched[key] = _Watched(condition, department_id)
            if self._stale:
                condition.set_stale(True, self._clock.now())
        elif watched.department_id is None:
            watched.department_id = department_id
        return watched

    def _forget(self) -> None:
        self._watched.clear()
        self._by_value.clear()
        self._restored = self._stale = self._database_down = self._feed_late = False

    async def _restore(self) -> None:
        """Once per term, before the first value: the conditions of the alerts still open
        (raised before a restart or by an earlier leader) start firing. Under `_lock`."""
        if self._restored:
            return
        async with self._database.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        Alert.id,
                        Alert.rule,
                        Alert.department_id,
                        Alert.raised_at,
                        Alert.value,
                        Alert.escalation_level,
                    ).where(Alert.rule.is_not(None), Alert.status != AlertStatus.RESOLVED.value)
                )
            ).all()
            codes = await department_codes(connection)
        self._restored = True
        now = self._clock.now()
        for alert_id, name, department_id, raised_at, value, level in rows:
            rule = self.rules.get(name) if name is not None else None
            if rule is None:
                continue  # its rule was removed: the alert stays for a person to resolve
            department = codes.get(department_id) if department_id is not None else None
            watched = self._watch(rule, department, department_id)
            if watched.alert_id is None:
                watched.alert_id = alert_id
                watched.condition.state = State.FIRING
                watched.condition.value = value
                if rule.escalate_after is not None and level < MAX_ESCALATION_LEVEL:
                    due = raised_at.replace(tzinfo=UTC) + rule.escalate_after * (level + 1)
                    watched.escalate_at = max(due, now)

    # -- storing and telling ---------------------------------------------------------------

    async def _record(self, moved: list[tuple[_Watched, Transition]]) -> None:
        if not moved:
            return
        messages: dict[int, AlertMessage] = {}  # a screen needs each alert's latest state
        events: list[tuple[AlertMessage, str]] = []
        async with self._database.begin() as connection:
            for watched, transition in moved:
                row = await self._store(connection, watched, transition)
                if row is not None:
                    message = messages[row["id"]] = alert_message(
                        row, transition.department, transition.at, watched.condition.rule
                    )
                    if fires(transition):
                        events.append((message, RAISED))
                    elif resolves(transition):
                        events.append((message, RESOLVED))
                if resolves(transition):
                    watched.alert_id = watched.escalate_at = None
        for message in messages.values():
            log.info(
                "alert_" + (message.state or message.status),
                rule=message.rule,
                department=message.department,
                alert=message.id,
                value=message.value,
            )
            await self._screens.to_department(
                message.department, ALERT_EVENT, message.model_dump(mode="json")
            )
        for message, event in events:
            self.announce(message, event, 0)
        self._deadline_changed.set()  # an escalation may be due from now on

    @property
    def stale(self) -> bool:
        """Whether data is too old to judge now (the database down, or the feed late)."""
        return self._stale

    def announce(self, message: AlertMessage, event: str, level: int = 0) -> None:
        """Hand an alert event to the listeners (notifications), apart from the caller. An
        alert's events go one after another (its resolution never overtakes its raising);
        different alerts' go side by side."""
        if event == RAISED:
            self.raised[message.severity] += 1
        self._background.spawn(self._announce_in_order(message, event, level))

    async def _announce_in_order(self, message: AlertMessage, event: str, level: int) -> None:
        turn = self._announcing.setdefault(message.id, _Turn())
        turn.waiting += 1
        try:
            async with turn.lock:
                for listener in self._listeners:
                    await _logged(listener, message, event, level)
        finally:
            turn.waiting -= 1
            if turn.waiting == 0:
                del self._announcing[message.id]

    async def _store(
        self, connection: AsyncConnection, watched: _Watched, transition: Transition
    ) -> RowMapping | None:
        """Store one transition; the alert's row as it now is, if the condition has one."""
        rule = watched.condition.rule
        at = naive(transition.at)
        row: RowMapping | None = None
        if fires(transition) and watched.alert_id is None:
            row = await raise_alert(
                connection,
                department_id=watched.department_id,
                severity=rule.severity.value,
                title=rule.summary or _title(rule, transition.department),
                raised_at=at,
                rule=rule.name,
                state=transition.after.value,
                value=transition.value,
                threshold=rule.threshold,
                updated_at=at,
            )
            watched.alert_id = row["id"]
            if rule.escalate_after is not None:
                watched.escalate_at = transition.at + rule.escalate_after
        elif watched.alert_id is not None:
            changes: dict[str, Any] = {
                "state": transition.after.value,
                "value": transition.value,
                "updated_at": at,
            }
            if resolves(transition):
                changes.update(status=AlertStatus.RESOLVED.value, resolved_at=at)
            row = await change_alert(connection, watched.alert_id, **changes)
            if row is None:
                # Resolved by a person meanwhile: this condition no longer has an alert; a
                # new one is raised once it has cleared and breached again.
                watched.alert_id = watched.escalate_at = None
        await add_transition(
            connection,
            alert_id=watched.alert_id,
            rule=rule.name,
            department_id=watched.department_id,
            before=transition.before.value,
            after=transition.after.value,
            at=transition.at,
            value=transition.value,
        )
        return row


async def _logged(listener: AlertListener, message: AlertMessage, event: str, level: int) -> None:
    try:
        await listener(message, event, level)
    except Exception:
        log.exception("alert_listener_failed", alert=message.id, alert_event=event)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _title(rule: ThresholdRule, department: str | None) -> str:
    where = "the hospital" if department is None else department
    sign = ">" if rule.condition == "above" else "<"
    return f"{rule.metric} {sign} {rule.threshold:g} in {where}"
