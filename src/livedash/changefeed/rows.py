"""Decoding captured rows into the Python values the models declare.

Writers differ in how they spell a value: SQLite hands booleans over as 0/1, a `sqlite3`
shell may write `2026-01-01 08:00` where SQLAlchemy writes microseconds. The metric engine
must not care, so every source decodes through the model's column types here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer

from livedash.store.models import Base
from livedash.timeutil import naive_utc


def parse_timestamp(value: Any) -> datetime | None:
    """A naive UTC datetime from a stored value (ISO text, or a datetime)."""
    if isinstance(value, datetime):
        return naive_utc(value)
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return naive_utc(datetime.fromisoformat(text))


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "t", "yes")
    return bool(value)


def _integer(value: Any) -> int:
    return value if type(value) is int else int(value)


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


def _decoder(column_type: Any) -> Callable[[Any], Any] | None:
    if isinstance(column_type, DateTime):
        return parse_timestamp
    if isinstance(column_type, Boolean):
        return _boolean
    if isinstance(column_type, Integer):
        return _integer
    if isinstance(column_type, JSON):
        return _json
    return None


@functools.cache
def _decoders(table: str) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """The columns of `table` that need decoding, with their decoders (worked out once)."""
    if table not in Base.metadata.tables:
        return ()
    pairs = ((column.name, _decoder(column.type)) for column in Base.metadata.tables[table].columns)
    return tuple((name, decoder) for name, decoder in pairs if decoder is not None)


def decode_row(table: str, raw: Mapping[Any, Any]) -> dict[str, Any]:
    """`raw` with each known column converted to its model's Python type."""
    decoded = dict(raw)
    for name, decode in _decoders(table):
        value = decoded.get(name)
        if value is None:
            continue
        try:
            decoded[name] = decode(value)
        except (TypeError, ValueError):
            # A value no reading can make sense of counts as missing, the same way on
            # every path (feed and rebuild), so the engine's sums stay consistent.
            decoded[name] = None
    return decoded
