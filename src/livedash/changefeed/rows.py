"""Decoding captured rows into the Python values the models declare.

Writers differ in how they spell a value: SQLite hands booleans over as 0/1, a `sqlite3`
shell may write `2026-01-01 08:00` where SQLAlchemy writes microseconds. The metric engine
must not care, so every source decodes through the model's column types here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer

from livedash.store.models import Base


def parse_timestamp(value: Any) -> datetime | None:
    """A naive UTC datetime from a stored value (ISO text, or a datetime)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _decode_value(column_type: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column_type, DateTime):
        return parse_timestamp(value)
    if isinstance(column_type, Boolean):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "t", "yes")
        return bool(value)
    if isinstance(column_type, Integer):
        return int(value)
    if isinstance(column_type, JSON) and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def decode_row(table: str, raw: Mapping[Any, Any]) -> dict[str, Any]:
    """`raw` with each known column converted to its model's Python type."""
    if table not in Base.metadata.tables:
        return dict(raw)
    columns = Base.metadata.tables[table].columns
    decoded = dict(raw)
    for column in columns:
        if column.name in decoded:
            try:
                decoded[column.name] = _decode_value(column.type, decoded[column.name])
            except (TypeError, ValueError):
                # A value no reading can make sense of counts as missing, the same way on
                # every path (feed and rebuild), so the engine's sums stay consistent.
                decoded[column.name] = None
    return decoded
