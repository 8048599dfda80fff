"""Settings as an operator meets them: the table of docs/settings.md, and bad values named.

`settings_table()` renders every field of `Settings` (its `LIVEDASH_` variable, type, default
and description) as the Markdown of docs/settings.md, which a test keeps equal to it
(`livedash settings-doc > docs/settings.md` regenerates it). `load_settings()` builds the
settings and, when a value cannot be used, raises one `ConfigurationError` whose message
names the variable (or the command-line option) and says why, instead of a traceback.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from livedash.errors import ConfigurationError
from livedash.settings import Settings

REGENERATE = "livedash settings-doc > docs/settings.md"
_FIELD_IN_SOURCE = re.compile(r'field "(?P<field>\w+)"')

INTRODUCTION = """\
# Settings

Every setting is read from the environment as `LIVEDASH_<NAME>` (upper case), or from a
`.env` file in the working directory with the same lines (`LIVEDASH_PORT=8080`). A variable
set in the environment wins over `.env`; a command-line option (such as `--port`) wins over
both. Lists and mappings are written as JSON: `LIVEDASH_CORS_ORIGINS='["https://ops.example"]'`.

A value that cannot be used stops `livedash` before it starts, with a message naming the
variable and why; `livedash doctor` checks the rest (secrets, ports, SMTP, Web Push keys,
the database). Durations are in the unit their name ends with. Rate limits use the `limits`
library's notation: `60/minute;10/second`.

This table is generated from `src/livedash/settings.py`: `{regenerate}`.

| Variable | Type | Default | Description |
| --- | --- | --- | --- |
"""


def variable(name: str) -> str:
    """The environment variable of the setting `name`."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return f"{prefix}{name}".upper()


def settings_table() -> str:
    """docs/settings.md: every setting's variable, type, default and description."""
    rows = [
        "| "
        + " | ".join(
            _cell(text)
            for text in (
                f"`{variable(name)}`",
                type_text(field),
                default_text(field),
                " ".join((field.description or "").split()),
            )
        )
        + " |"
        for name, field in Settings.model_fields.items()
    ]
    return INTRODUCTION.format(regenerate=REGENERATE) + "\n".join(rows) + "\n"


def undescribed() -> list[str]:
    """The settings that have no description (each must have one)."""
    return [name for name, field in Settings.model_fields.items() if not field.description]


def type_text(field: FieldInfo) -> str:
    """What a value of `field` must be, in words, with its bounds or pattern."""
    lower = upper = ""
    pattern = None
    for item in field.metadata:
        if isinstance(item, Ge):
            lower = f"{item.ge}"
        elif isinstance(item, Gt):
            lower = f"> {item.gt}"
        elif isinstance(item, Le):
            upper = f"{item.le}"
        elif isinstance(item, Lt):
            upper = f"< {item.lt}"
        elif getattr(item, "pattern", None):
            pattern = f"matching `{item.pattern}`"
    if lower.startswith(">") or upper.startswith("<"):
        bounds = " and ".join(bound for bound in (lower, upper) if bound)
    elif lower and upper:
        bounds = f"{lower} to {upper}"
    else:
        bounds = f">= {lower}" if lower else (f"<= {upper}" if upper else "")
    return ", ".join(part for part in (_annotation_text(field.annotation), bounds, pattern) if part)


_PLURAL = {str: "strings", int: "integers", float: "numbers"}


def _annotation_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    arguments = get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_annotation_text(a) for a in arguments if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in arguments)
    if origin is list:
        return f"JSON list of {_PLURAL.get(arguments[0], 'values')}"
    if origin is dict:
        return f"JSON object of {_PLURAL.get(arguments[1], 'values')}"
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "text",
        Path: "path",
        SecretStr: "secret",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_text(field: FieldInfo) -> str:
    """The default of `field` as it would be written in the environment."""
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _is_secret(field: FieldInfo) -> bool:
    return SecretStr in (field.annotation, *get_args(field.annotation))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def load_settings(options: Mapping[str, str] | None = None, **values: Any) -> Settings:
    """`Settings(**values)`, the rest from the environment; `ConfigurationError` names what
    cannot be used. `options` maps a field given in `values` to the option that gave it."""
    try:
        return Settings(**values)
    except ValidationError as error:
        raise ConfigurationError(explain(error.errors(), options or {})) from None
    except SettingsError as error:
        found = _FIELD_IN_SOURCE.search(str(error))
        name = variable(found["field"]) if found else "a LIVEDASH_ variable"
        cause = f": {error.__cause__}" if error.__cause__ is not None else ""
        raise ConfigurationError(
            f"livedash cannot start: {name} is not valid JSON{cause} (lists and mappings are "
            f'written as JSON, e.g. {name}=\'["a", "b"]\'). {_WHERE}'
        ) from None


_WHERE = (
    "Fix it in the environment or the .env file; docs/settings.md lists every setting, its "
    "type and its default."
)


def explain(errors: Sequence[Mapping[str, Any]], options: Mapping[str, str]) -> str:
    """One paragraph naming each setting of pydantic's `errors` and what is wrong with it."""
    problems = []
    for problem in errors:
        location = [str(part) for part in problem.get("loc", ())]
        if not location:  # a rule over several settings: its message names them
            problems.append(str(problem.get("msg", "")).removeprefix("Value error, "))
            continue
        field = location[0]
        name = options.get(field) or variable(field)
        inside = "".join(f"[{part}]" for part in location[1:])
        secret = field in Settings.model_fields and _is_secret(Settings.model_fields[field])
        shown = "" if secret or "input" not in problem else f"={problem['input']!r}"
        reason = str(problem.get("msg", "")).removeprefix("Value error, ")
        problems.append(f"{name}{inside}{shown} is not valid: {reason[:1].lower()}{reason[1:]}")
    return f"livedash cannot start: {'; '.join(problems)}. {_WHERE}"
