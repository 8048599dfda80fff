"""The alerting configuration of a deployment: its rules file's rules and mute timings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from livedash.alerts.anomaly import AnomalyRule
from livedash.alerts.rules import ThresholdRule, parse_rules, read_rules_file
from livedash.alerts.silences import MuteTiming, parse_mute_timings
from livedash.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class AlertConfig:
    rules: list[ThresholdRule]
    mute_timings: list[MuteTiming]
    anomaly_rules: list[AnomalyRule]


def load_alert_config(path: Path | None) -> AlertConfig:
    """The rules file at `path` (livedash's defaults when None); errors name the field."""
    data, source = read_rules_file(path)
    return parse_alert_config(data, source=source)


def parse_alert_config(data: Any, *, source: str) -> AlertConfig:
    """An alerting configuration from decoded YAML or JSON (`rules`, `anomaly_rules`,
    `mute_timings`); `ConfigurationError` names the entry and the field of each mistake."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: expected a mapping with `rules:`")
    unknown = sorted(set(data) - {"rules", "anomaly_rules", "mute_timings"})
    if unknown:
        raise ConfigurationError(
            f"{source}: {unknown[0]}: not a section (rules, anomaly_rules, mute_timings)"
        )
    rules = parse_rules(data, source=source)
    anomaly_rules = parse_anomaly_rules(data, source=source)
    taken = {rule.name for rule in rules}
    clashes = sorted(rule.name for rule in anomaly_rules if rule.name in taken)
    if clashes:
        raise ConfigurationError(
            f"{source}: anomaly rule {clashes[0]!r}: name: used by a threshold rule too"
        )
    return AlertConfig(rules, parse_mute_timings(data, source=source), anomaly_rules)


def scaled(config: AlertConfig, scale: float) -> AlertConfig:
    """`config` with the threshold rules' periods divided by `scale` (data `scale` times faster
    than real time: the demo's simulator)."""
    if scale == 1.0:
        return config

    def faster(rule: ThresholdRule) -> ThresholdRule:
        escalate = rule.escalate_after / scale if rule.escalate_after is not None else None
        return rule.model_copy(
            update={
                "pending_for": rule.pending_for / scale,
                "keep_firing_for": rule.keep_firing_for / scale,
                "escalate_after": escalate,
            }
        )

    return AlertConfig(
        [faster(rule) for rule in config.rules], config.mute_timings, config.anomaly_rules
    )


def parse_anomaly_rules(data: Any, *, source: str) -> list[AnomalyRule]:
    """The `anomaly_rules:` of a rules file (none if absent); errors name the rule and field."""
    items = data.get("anomaly_rules", []) if isinstance(data, dict) else []
    if not isinstance(items, list):
        raise ConfigurationError(f"{source}: anomaly_rules must be a list")
    found: list[AnomalyRule] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        label = item.get("name") if isinstance(item, dict) else None
        where = f"anomaly rule {index + 1}" + (f" ({label!r})" if isinstance(label, str) else "")
        try:
            found.append(AnomalyRule.model_validate(item))
        except ValidationError as error:
            for problem in error.errors():
                field = ".".join(str(part) for part in problem["loc"]) or "rule"
                problems.append(f"{where}: {field}: {problem['msg']}")
    names = [rule.name for rule in found]
    problems += [
        f"anomaly rule {name!r}: name: used twice" for name in names if names.count(name) > 1
    ]
    if problems:
        raise ConfigurationError(f"{source}: " + "; ".join(dict.fromkeys(problems)))
    return found
