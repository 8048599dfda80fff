"""Alert rules from YAML: what a hospital's IT team writes, and the errors it gets back."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from livedash.alerts.config import load_alert_config, scaled
from livedash.alerts.rules import load_rules, parse_duration, parse_rules
from livedash.errors import ConfigurationError
from livedash.store.models import AlertSeverity

RULES = """
rules:
  - name: ed-full
    metric: bed_occupancy_rate
    scope: ED
    condition: above
    threshold: 1.0
    clear_at: 0.95
    severity: critical
    for: 90s
    keep_firing_for: 5m
    escalate_after: 10m
  - name: revenue-behind
    metric: revenue_today
    condition: below
    threshold: 5000
    severity: low
    active_from: "14:00"
"""


def test_a_rules_file_is_read_with_durations_scopes_and_times(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    ed, revenue = load_rules(path)
    assert (ed.name, ed.scope, ed.severity) == ("ed-full", "ED", AlertSeverity.CRITICAL)
    assert ed.pending_for == timedelta(seconds=90)
    assert ed.keep_firing_for == timedelta(minutes=5)
    assert ed.escalate_after == timedelta(minutes=10)
    assert ed.applies_to("ED")
    assert not ed.applies_to("CARD")
    assert not ed.applies_to(None)
    assert revenue.scope == "hospital"
    assert revenue.applies_to(None)
    assert revenue.active_from == time(14, 0)
    assert revenue.clear_threshold == 5000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"metric": "beds_flying"},
            "rule 1 ('ed-full'): metric: Value error, unknown metric 'beds_flying'",
        ),
        (
            {"metric": "revenue_trend"},
            "metric: Value error, metric 'revenue_trend' is not a number",
        ),
        ({"for": "soon"}, "rule 1 ('ed-full'): for: Value error, 'soon' is not a duration"),
        ({"for": -5}, "for: Value error, a duration cannot be negative"),
        ({"clear_at": 1.2}, "must not be above the threshold of an 'above' rule"),
        (
            {"severity": "warning"},
            "severity: Input should be 'critical', 'high', 'medium' or 'low'",
        ),
        ({"scope": "the ED"}, "scope: Value error, 'the ED' is not a scope"),
        ({"condition": "over"}, "condition: Input should be 'above' or 'below'"),
        ({"threshold": "lots"}, "threshold: Input should be a valid number"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"name": "Has Spaces"}, "name: String should match pattern"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_rule_and_the_field(
    change: dict[str, object], message: str
) -> None:
    rule: dict[str, object] = {
        "name": "ed-full",
        "metric": "bed_occupancy_rate",
        "scope": "ED",
        "condition": "above",
        "threshold": 1.0,
        "severity": "critical",
    }
    with pytest.raises(ConfigurationError) as refused:
        parse_rules({"rules": [{**rule, **change}]}, source="rules.yaml")
    assert str(refused.value).startswith("rules.yaml: rule 1")
    assert message in str(refused.value)


def test_names_are_unique_and_every_problem_is_reported_at_once() -> None:
    good = {"metric": "beds_free", "condition": "below", "threshold": 2, "severity": "medium"}
    with pytest.raises(ConfigurationError) as refused:
        parse_rules(
            [{"name": "a", **good}, {"name": "a", **good}, {"name": "b", **good, "for": "x"}],
            source="api",
        )
    text = str(refused.value)
    assert "rule 2 ('a'): name: 'a' is used by an earlier rule" in text
    assert "rule 3 ('b'): for:" in text


def test_a_file_that_is_not_yaml_or_not_a_list_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [unclosed")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_rules(broken)
    with pytest.raises(ConfigurationError, match="expected a list of rules"):
        parse_rules({"rules": {"name": "x"}})
    with pytest.raises(ConfigurationError, match="cannot read the alert rules"):
        load_rules(tmp_path / "missing.yaml")


def test_the_default_rules_load() -> None:
    rules = load_rules(None)
    assert {rule.name for rule in rules} >= {"hospital-occupancy-high", "emergency-waiting"}
    assert all(rule.severity in AlertSeverity for rule in rules)


@pytest.mark.parametrize(
    ("text", "seconds"), [(300, 300), ("90s", 90), ("5m", 300), ("1.5h", 5400), ("250ms", 0.25)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_the_demo_scales_the_periods_by_the_simulators_speed() -> None:
    config = load_alert_config(None)
    faster = scaled(config, 120.0)
    for rule, quick in zip(config.rules, faster.rules, strict=True):
        assert quick.pending_for * 120 == rule.pending_for
        assert quick.keep_firing_for * 120 == rule.keep_firing_for
        if rule.escalate_after is not None:
            assert quick.escalate_after is not None
            assert quick.escalate_after * 120 == rule.escalate_after
        assert (quick.threshold, quick.severity) == (rule.threshold, rule.severity)
    assert scaled(config, 1.0) is config
