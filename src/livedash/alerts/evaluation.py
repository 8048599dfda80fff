"""One rule's state for one scope: Normal -> Pending -> Firing -> Recovering -> Normal, and Stale.

A `Condition` is driven by the metric's values as they change (`observe`) and by the clock
(`tick`, at `deadline()`: the end of a pending or keep-firing period). It returns the
transitions it made; the caller stores them and raises or resolves the alert.

- A breach (the value past the fire threshold) starts Pending; it fires once it has lasted
  the rule's `for` (at once when `for` is 0). A value back past the *clear* threshold before
  that returns to Normal; between the two thresholds (hysteresis) the state holds.
- A firing condition whose value clears goes to Recovering; it resolves (Normal) once it has
  stayed clear for `keep_firing_for`. A new breach meanwhile returns to Firing: one lasting
  condition is one alert, however often the value crosses the threshold.
- Stale data (the database down, the feed late) moves the condition to Stale, remembering
  where it was. Nothing fires or resolves while stale. When data returns the condition goes
  back to where it was, and a pending or recovering period starts again from then.
- Before `active_from` (the hospital's time of day) the rule does not apply: a breach is not
  counted yet ("revenue below X by 14:00"), and a firing condition counts as cleared (the next
  day's first value after midnight ends the day's alert).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from livedash.alerts.rules import ThresholdRule


class State(enum.StrEnum):
    NORMAL = "normal"
    PENDING = "pending"
    FIRING = "firing"
    RECOVERING = "recovering"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class Transition:
    """A condition moved from one state to another."""

    rule: str
    department: str | None
    before: State
    after: State
    at: datetime
    value: float | None


class Condition:
    """`rule` evaluated for one department (None: the hospital)."""

    def __init__(self, rule: ThresholdRule, department: str | None, zone: ZoneInfo) -> None:
        self.rule = rule
        self.department = department
        self._zone = zone
        self.state = State.NORMAL
        self.value: float | None = None
        self.since: datetime | None = None  # when the current pending or recovering began
        self._before_stale = State.NORMAL

    def deadline(self) -> datetime | None:
        """When `tick` may move this condition, if it waits for anything."""
        if self.since is None:
            return None
        if self.state is State.PENDING:
            return self.since + self.rule.pending_for
        if self.state is State.RECOVERING:
            return self.since + self.rule.keep_firing_for
        return None

    def observe(self, value: float, now: datetime) -> list[Transition]:
        """The metric's new value."""
        self.value = value
        if self.state is State.STALE:
            return []
        active = self._active(now)
        breached = active and self.rule.breached(value)
        cleared = not active or self.rule.cleared(value)
        if self.state is State.NORMAL and breached:
            return self._move(State.PENDING, now, since=now) + self.tick(now)
        if self.state is State.PENDING and cleared:
            return self._move(State.NORMAL, now)
        if self.state is State.FIRING and cleared:
            return self._move(State.RECOVERING, now, since=now) + self.tick(now)
        if self.state is State.RECOVERING and breached:
            return self._move(State.FIRING, now)
        return []

    def tick(self, now: datetime) -> list[Transition]:
        """Let a pending or keep-firing period end, if it has."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        if self.state is State.PENDING:
            return self._move(State.FIRING, now)
        return self._move(State.NORMAL, now)  # recovered

    def set_stale(self, stale: bool, now: datetime) -> list[Transition]:
        """Data stopped (or started again) being trustworthy."""
        if stale and self.state is not State.STALE:
            self._before_stale = self.state
            return self._move(State.STALE, now)
        if not stale and self.state is State.STALE:
            back = self._before_stale
            restart = now if back in (State.PENDING, State.RECOVERING) else None
            moved = self._move(back, now, since=restart)
            if self.value is not None:
                moved += self.observe(self.value, now)
            return moved
        return []

    def _active(self, now: datetime) -> bool:
        start = self.rule.active_from
        return start is None or now.astimezone(self._zone).time() >= start

    def _move(
        self, state: State, now: datetime, *, since: datetime | None = None
    ) -> list[Transition]:
        before, self.state, self.since = self.state, state, since
        return [Transition(self.rule.name, self.department, before, state, now, self.value)]


def fires(transition: Transition) -> bool:
    """The transition raises an alert (a new lasting condition)."""
    return transition.after is State.FIRING and transition.before is State.PENDING


def resolves(transition: Transition) -> bool:
    """The transition ends the alert: the condition recovered."""
    return transition.after is State.NORMAL and transition.before is State.RECOVERING
