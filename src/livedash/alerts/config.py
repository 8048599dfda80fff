"""The alerting configuration of a deployment: its rules file's rules and mute timings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from livedash.alerts.rules import ThresholdRule, parse_rules, read_rules_file
from livedash.alerts.silences import MuteTiming, parse_mute_timings


@dataclass(frozen=True, slots=True)
class AlertConfig:
    rules: list[ThresholdRule]
    mute_timings: list[MuteTiming]


def load_alert_config(path: Path | None) -> AlertConfig:
    """The rules file at `path` (livedash's defaults when None); errors name the field."""
    data, source = read_rules_file(path)
    return AlertConfig(parse_rules(data, source=source), parse_mute_timings(data, source=source))
