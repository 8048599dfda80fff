"""Alert rules: what to watch, when it is a problem, and how loud.

A threshold rule names a metric, a scope, a comparison with a fire threshold and a clear
threshold (hysteresis: between the two the state holds), a severity, a pending period (`for`:
how long the breach must last before the alert fires), a keep-firing period (how long a
cleared condition must stay cleared before the alert resolves), and optionally an escalation
delay and a time of day from which the rule applies (revenue "by 14:00").

Rules come from a YAML file (`LIVEDASH_ALERT_RULES_FILE`, or the defaults shipped with livedash)
or from the REST API; both go through `parse_rules`, whose errors name the rule and the field.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from livedash.errors import ConfigurationError
from livedash.metrics.definitions import METRICS
from livedash.store.models import AlertSeverity

HOSPITAL = "hospital"
EVERY_DEPARTMENT = "each_department"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_LABELS = "_trend"  # metrics whose value is a word (increasing, decreasing, stable)


def parse_duration(value: Any) -> timedelta:
    """`300`, `"90s"`, `"5m"`, `"1.5h"` or a timedelta, as a non-negative timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a text such as '5m'")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration: use seconds or a text such as '5m', '2h'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class ScopedRule(BaseModel):
    """What every kind of rule has: a name, a scope ("hospital", "each_department" or a
    department's code), a severity and a summary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    scope: str = HOSPITAL
    severity: AlertSeverity
    summary: str = Field(default="", max_length=500)

    @field_validator("scope")
    @classmethod
    def _scope(cls, scope: str) -> str:
        if scope in (HOSPITAL, EVERY_DEPARTMENT) or re.fullmatch(r"[A-Z0-9_]{1,16}", scope):
            return scope
        raise ValueError(
            f"{scope!r} is not a scope: use 'hospital', 'each_department' or a department code"
        )

    def applies_to(self, department: str | None) -> bool:
        """Whether this rule watches `department`'s value (None: the hospital's)."""
        if self.scope == HOSPITAL:
            return department is None
        if self.scope == EVERY_DEPARTMENT:
            return department is not None
        return department == self.scope


class ThresholdRule(ScopedRule):
    """One threshold rule (see the module's docstring)."""

    metric: str
    condition: Literal["above", "below"]
    threshold: float
    clear_at: float | None = None
    pending_for: Duration = Field(default=timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    escalate_after: Duration | None = None
    active_from: time | None = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; `livedash metrics` lists them")
        if metric.endswith(_LABELS):
            raise ValueError(f"metric {metric!r} is not a number a threshold can be compared with")
        return metric

    @model_validator(mode="after")
    def _hysteresis(self) -> ThresholdRule:
        clear = self.clear_threshold
        if self.condition == "above" and clear > self.threshold:
            raise ValueError(
                f"clear_at ({clear}) must not be above the threshold of an 'above' rule"
            )
        if self.condition == "below" and clear < self.threshold:
            raise ValueError(
                f"clear_at ({clear}) must not be below the threshold of a 'below' rule"
            )
        return self

    @field_validator("escalate_after")
    @classmethod
    def _escalated_only_when_urgent(cls, delay: timedelta | None, info: Any) -> timedelta | None:
        severity = info.data.get("severity")
        if delay is not None and severity not in (AlertSeverity.HIGH, AlertSeverity.CRITICAL):
            raise ValueError("only high and critical alerts escalate")
        if delay is not None and delay.total_seconds() <= 0:
            raise ValueError("escalate_after must be longer than 0")
        return delay

    @property
    def clear_threshold(self) -> float:
        return self.threshold if self.clear_at is None else self.clear_at

    def breached(self, value: float) -> bool:
        """The value is on the wrong side of the fire threshold."""
        return value > self.threshold if self.condition == "above" else value < self.threshold

    def cleared(self, value: float) -> bool:
        """The value is back on the right side of the clear threshold."""
        clear = self.clear_threshold
        return value <= clear if self.condition == "above" else value >= clear


def parse_rules(data: Any, *, source: str = "rules") -> list[ThresholdRule]:
    """Rules from decoded YAML or JSON: `{"rules": [...]}` or a list. A bad one raises
    `ConfigurationError` naming the rule and the field."""
    items = data.get("rules") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigurationError(f"{source}: expected a list of rules under `rules:`")
    rules: list[ThresholdRule] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        label = item.get("name") if isinstance(item, dict) else None
        where = f"rule {index + 1}" + (f" ({label!r})" if isinstance(label, str) else "")
        try:
            rule = ThresholdRule.model_validate(item)
        except ValidationError as error:
            for problem in error.errors():
                field = ".".join(str(part) for part in problem["loc"]) or "rule"
                problems.append(f"{where}: {field}: {problem['msg']}")
            continue
        if rule.name in seen:
            problems.append(f"{where}: name: {rule.name!r} is used by an earlier rule")
            continue
        seen.add(rule.name)
        rules.append(rule)
    if problems:
        raise ConfigurationError(f"{source}: " + "; ".join(problems))
    return rules


def load_rules(path: Path | None) -> list[ThresholdRule]:
    """The rules in the YAML file at `path`, or livedash's defaults when `path` is None."""
    data, source = read_rules_file(path)
    return parse_rules(data, source=source)


def read_rules_file(path: Path | None) -> tuple[Any, str]:
    """The decoded YAML of the rules file at `path` (livedash's defaults when None)."""
    if path is None:
        text = resources.files("livedash.alerts").joinpath("default_rules.yaml").read_text()
        source = "the default alert rules"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(f"cannot read the alert rules at {path}: {error}") from error
        source = str(path)
    try:
        return yaml.safe_load(text), source
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{source}: not valid YAML: {error}") from error
