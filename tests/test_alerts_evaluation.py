"""A rule's condition on a controlled clock: pending, hysteresis, flapping, stale data, time of
day. What a hospital sees is the transitions: one alert per lasting condition, none on stale
data."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from livedash.alerts.evaluation import Condition, State, Transition, fires, resolves
from livedash.alerts.rules import ThresholdRule
from livedash.store.models import AlertSeverity

ZONE = ZoneInfo("Europe/Paris")
START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _rule(**fields: object) -> ThresholdRule:
    base: dict[str, object] = {
        "name": "occupancy-high",
        "metric": "bed_occupancy_rate",
        "condition": "above",
        "threshold": 0.9,
        "severity": AlertSeverity.HIGH,
    }
    return ThresholdRule.model_validate({**base, **fields})


def _states(transitions: list[Transition]) -> list[tuple[State, State]]:
    return [(t.before, t.after) for t in transitions]


def test_a_breach_fires_only_once_it_has_lasted_the_pending_period() -> None:
    condition = Condition(_rule(**{"for": "5m"}), None, ZONE)
    moved = condition.observe(0.95, START)
    assert _states(moved) == [(State.NORMAL, State.PENDING)]
    assert condition.deadline() == START + timedelta(minutes=5)
    assert condition.tick(START + timedelta(minutes=4, seconds=59)) == []
    assert condition.observe(0.97, START + timedelta(minutes=2)) == []  # still pending
    fired = condition.tick(START + timedelta(minutes=5))
    assert _states(fired) == [(State.PENDING, State.FIRING)]
    assert fires(fired[0])
    assert fired[0].value == 0.97


def test_a_breach_shorter_than_the_pending_period_never_fires() -> None:
    condition = Condition(_rule(**{"for": "5m"}), None, ZONE)
    condition.observe(0.95, START)
    moved = condition.observe(0.80, START + timedelta(minutes=3))
    assert _states(moved) == [(State.PENDING, State.NORMAL)]
    assert condition.tick(START + timedelta(minutes=10)) == []


def test_hysteresis_holds_between_the_thresholds_and_keep_firing_delays_the_resolution() -> None:
    condition = Condition(_rule(clear_at=0.85, keep_firing_for="2m"), None, ZONE)
    assert [fires(t) for t in condition.observe(0.92, START)] == [False, True]
    assert condition.observe(0.88, START + timedelta(minutes=1)) == []  # between: still firing
    assert condition.state is State.FIRING
    moved = condition.observe(0.84, START + timedelta(minutes=2))
    assert _states(moved) == [(State.FIRING, State.RECOVERING)]
    assert condition.tick(START + timedelta(minutes=3)) == []
    resolved = condition.tick(START + timedelta(minutes=4))
    assert _states(resolved) == [(State.RECOVERING, State.NORMAL)]
    assert resolves(resolved[0])


def test_a_value_crossing_the_threshold_every_few_seconds_is_one_alert() -> None:
    condition = Condition(_rule(keep_firing_for="1m"), None, ZONE)
    transitions: list[Transition] = []
    for step in range(120):  # ten minutes, crossing every 5 seconds
        now = START + timedelta(seconds=5 * step)
        transitions += condition.tick(now)
        transitions += condition.observe(0.95 if step % 2 == 0 else 0.85, now)
    assert sum(fires(t) for t in transitions) == 1
    assert not any(resolves(t) for t in transitions)
    assert condition.state in (State.FIRING, State.RECOVERING)


def test_stale_data_neither_fires_nor_resolves_and_restarts_the_periods_after() -> None:
    pending = Condition(_rule(**{"for": "5m"}), None, ZONE)
    pending.observe(0.95, START)
    assert _states(pending.set_stale(True, START + timedelta(minutes=1))) == [
        (State.PENDING, State.STALE)
    ]
    assert pending.tick(START + timedelta(minutes=30)) == []
    assert pending.observe(0.99, START + timedelta(minutes=31)) == []
    back = pending.set_stale(False, START + timedelta(minutes=32))
    assert _states(back) == [(State.STALE, State.PENDING)]
    assert pending.tick(START + timedelta(minutes=36)) == []  # five minutes from the return
    assert fires(pending.tick(START + timedelta(minutes=37))[0])

    firing = Condition(_rule(), None, ZONE)
    firing.observe(0.95, START)
    firing.set_stale(True, START + timedelta(minutes=1))
    assert firing.observe(0.10, START + timedelta(minutes=2)) == []  # cleared, but stale
    assert firing.state is State.STALE
    back = firing.set_stale(False, START + timedelta(minutes=3))
    assert _states(back) == [
        (State.STALE, State.FIRING),
        (State.FIRING, State.RECOVERING),
        (State.RECOVERING, State.NORMAL),
    ]


def test_a_below_rule_applies_only_from_its_time_of_day() -> None:
    rule = _rule(
        name="revenue-low",
        metric="revenue_today",
        condition="below",
        threshold=1000,
        severity=AlertSeverity.LOW,
        active_from=time(14, 0),
    )
    condition = Condition(rule, None, ZONE)
    morning = datetime(2026, 12, 7, 12, 59, tzinfo=ZONE)  # Paris time
    assert condition.observe(200, morning) == []
    afternoon = datetime(2026, 12, 7, 14, 0, tzinfo=ZONE)
    assert [fires(t) for t in condition.observe(250, afternoon)] == [False, True]
    # The next day's first value (before 14:00) ends the day's alert.
    midnight = datetime(2026, 12, 8, 0, 0, 5, tzinfo=ZONE)
    assert [resolves(t) for t in condition.observe(0, midnight)] == [False, True]
