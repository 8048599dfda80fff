"""Metric values shared through Redis, so every instance serves the same snapshot.

The elected leader writes each published value under its own key with the tier's TTL
(critical 5 s, standard 30 s, historical 5 min) and rewrites all of them well within the
shortest TTL, so the keys live as long as a leader does. When no leader writes any more, the
values expire and readers fall back to the database instead of serving stale numbers.

With each batch of values it writes, in the same round trip, the causes recorded for them
(`livedash.metrics.causes`): each key's newest causes as a capped list, newest first, which
followers read to explain a value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from redis.asyncio import Redis

from livedash.metrics.causes import CAUSES_KEPT, Cause, Reason, RowChange
from livedash.metrics.definitions import METRICS, Tier, Value
from livedash.metrics.engine import MetricValue

PREFIX = "livedash:"
TIER_TTL_SECONDS = {Tier.CRITICAL: 5, Tier.STANDARD: 30, Tier.HISTORICAL: 300}
DEPARTMENTS_TTL_SECONDS = 300
# A cause explains the past, so it outlives the leader that wrote it; a key that no longer
# changes (a department gone) expires a day after its last cause.
CAUSES_TTL_SECONDS = 24 * 3600
MetricKey = tuple[str, str | None]

# KEYS: the version floor, one key per value, then one causes list per cause. ARGV: the number
# of values, the causes' cap and TTL, then version, encoded value, TTL per value, then the
# encoded causes. Versions stay below 2^53, exact as Lua numbers; the floor is written from
# its ARGV string. One command for the whole batch: as a pipeline of LPUSH, LTRIM and EXPIRE
# per cause, the write was 13.5 % of a leader's samples at 200 writes a second (6.3 % now,
# docs/performance.md), and a pipeline asks SCRIPT EXISTS first, a second round trip each time.
_PUBLISH = """
local values = tonumber(ARGV[1])
local kept, causes_ttl = tonumber(ARGV[2]), ARGV[3]
local floor = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local highest, highest_raw = floor, nil
for i = 2, values + 1 do
  local at = (i - 2) * 3 + 3
  local version = tonumber(ARGV[at + 1])
  local current = redis.call('GET', KEYS[i])
  local stored = nil
  if current then
    local ok, decoded = pcall(cjson.decode, current)
    if ok and type(decoded) == 'table' then stored = tonumber(decoded['version']) end
  end
  if stored == nil or stored <= version then
    redis.call('SET', KEYS[i], ARGV[at + 2], 'EX', ARGV[at + 3])
  end
  if version > highest then highest, highest_raw = version, ARGV[at + 1] end
end
if highest_raw then redis.call('SET', KEYS[1], highest_raw) end
for i = values + 2, #KEYS do
  redis.call('LPUSH', KEYS[i], ARGV[values * 2 + i + 2])
  redis.call('LTRIM', KEYS[i], 0, kept - 1)
  redis.call('EXPIRE', KEYS[i], causes_ttl)
end
return 1
"""


def value_key(metric: str, department: str | None) -> str:
    return f"{PREFIX}m:{metric}|{department or ''}"


def ttl_of(metric: str) -> int:
    definition = METRICS.get(metric)
    tier = definition.tier if definition is not None else Tier.CRITICAL
    return TIER_TTL_SECONDS[tier]


def causes_key(metric: str, department: str | None) -> str:
    return f"{PREFIX}c:{metric}|{department or ''}"


def _plain(raw: Value) -> tuple[Any, str]:
    """A value as JSON holds it, and its kind (decimals as exact strings)."""
    return (str(raw), "decimal") if isinstance(raw, Decimal) else (raw, "plain")


def _typed(raw: Any, kind: str) -> Value:
    return Decimal(raw) if kind == "decimal" and raw is not None else raw


def encode(value: MetricValue) -> str:
    raw, kind = _plain(value.value)
    return json.dumps(
        {
            "metric": value.metric,
            "department": value.department,
            "department_id": value.department_id,
            "value": raw,
            "kind": kind,
            "version": value.version,
            "timestamp": value.timestamp.isoformat(),
        },
        separators=(",", ":"),
    )


def encode_cause(cause: Cause) -> str:
    before, before_kind = _plain(cause.before)
    after, after_kind = _plain(cause.after)
    return json.dumps(
        {
            "metric": cause.metric,
            "department": cause.department,
            "version": cause.version,
            "at": cause.at.isoformat(),
            "before": [before, before_kind],
            "after": [after, after_kind],
            "reason": cause.reason.value,
            "changes": [
                [c.table, c.op, c.row_id, c.committed_at.isoformat(), c.department]
                for c in cause.changes
            ],
            "more": cause.more_changes,
        },
        separators=(",", ":"),
    )


def decode_cause(raw: str | bytes) -> Cause:
    data = json.loads(raw)
    return Cause(
        metric=data["metric"],
        department=data["department"],
        version=int(data["version"]),
        at=datetime.fromisoformat(data["at"]),
        before=_typed(*data["before"]),
        after=_typed(*data["after"]),
        reason=Reason(data["reason"]),
        changes=tuple(
            RowChange(
                table=str(table),
                op=str(op),
                row_id=row_id,
                committed_at=datetime.fromisoformat(committed_at),
                department=department,
            )
            for table, op, row_id, committed_at, department in data["changes"]
        ),
        more_changes=bool(data["more"]),
    )


def decode(raw: str | bytes) -> MetricValue:
    data = json.loads(raw)
    return MetricValue(
        metric=data["metric"],
        department=data["department"],
        value=_typed(data["value"], data["kind"]),
        version=int(data["version"]),
        timestamp=datetime.fromisoformat(data["timestamp"]),
        department_id=data["department_id"],
    )


class ValuesShared(Protocol):
    """Where the process that reads the feed shares its values: Redis (`SharedMetricState`)
    or, on the embedded default, the bus to its socket workers (`livedash.cluster.mirror`)."""

    rewrite_seconds: float | None
    """How often every value is written again (values that expire), or None."""

    async def publish(
        self, values: Sequence[MetricValue], causes: Sequence[Cause] = ()
    ) -> None: ...

    async def publish_departments(self, departments: dict[int, str]) -> None: ...

    async def version_floor(self) -> int: ...


class SharedValues(Protocol):
    """The read side: what a process that does not read the feed serves values from."""

    async def read(self, keys: Iterable[MetricKey]) -> dict[MetricKey, MetricValue]: ...

    async def departments(self) -> dict[str, int] | None: ...

    async def causes(self, metric: str, department: str | None) -> list[Cause]: ...

    async def get_json(self, key: str) -> Any: ...

    async def put_json(self, key: str, value: Any, ttl: int) -> None: ...


class SharedMetricState:
    """The leader's metric values, versions and departments, in Redis."""

    rewrite_seconds: float | None = 2.0  # well within the critical tier's 5 s TTL

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._publish = redis.register_script(_PUBLISH)

    async def publish(self, values: Sequence[MetricValue], causes: Sequence[Cause] = ()) -> None:
        """Store `values` (each with its tier's TTL) and raise the version floor; add `causes`
        to their keys' lists (the newest `CAUSES_KEPT`), in the same round trip.

        A stored value is never replaced by an older version of it, nor the floor lowered:
        the periodic rewrite of every value may reach Redis after a newer update did.
        """
        if not values:
            return
        keys = [f"{PREFIX}version"]
        arguments: list[str | int] = [len(values), CAUSES_KEPT, CAUSES_TTL_SECONDS]
        for value in values:
            keys.append(value_key(value.metric, value.department))
            arguments += [value.version, encode(value), ttl_of(value.metric)]
        for cause in causes:
            keys.append(causes_key(cause.metric, cause.department))
            arguments.append(encode_cause(cause))
        await self._publish(keys=keys, args=arguments)

    async def causes(self, metric: str, department: str | None) -> list[Cause]:
        """The causes the leader wrote for a key, newest first."""
        raws = await self._redis.lrange(causes_key(metric, department), 0, CAUSES_KEPT - 1)
        found: list[Cause] = []
        for raw in raws:
            try:
                found.append(decode_cause(raw))
            except (ValueError, KeyError, TypeError):  # not ours (another release?): skipped
                continue
        return sorted(found, key=lambda cause: cause.version, reverse=True)

    async def publish_departments(self, departments: dict[int, str]) -> None:
        await self._redis.set(
            f"{PREFIX}departments",
            json.dumps({code: identifier for identifier, code in departments.items()}),
            ex=DEPARTMENTS_TTL_SECONDS,
        )

    async def departments(self) -> dict[str, int] | None:
        """Department codes to ids as the leader knows them, or None when unknown."""
        raw = await self._redis.get(f"{PREFIX}departments")
        if raw is None:
            return None
        loaded = json.loads(raw)
        return {str(code): int(identifier) for code, identifier in loaded.items()}

    async def read(self, keys: Iterable[MetricKey]) -> dict[MetricKey, MetricValue]:
        """The stored values of `keys` (missing ones are left out)."""
        wanted = list(keys)
        if not wanted:
            return {}
        raws = await self._redis.mget([value_key(metric, dept) for metric, dept in wanted])
        found: dict[MetricKey, MetricValue] = {}
        for key, raw in zip(wanted, raws, strict=True):
            if raw is None:
                continue
            try:
                found[key] = decode(raw)
            except (ValueError, KeyError, TypeError):  # not ours (another release?): a miss
                continue
        return found

    async def version_floor(self) -> int:
        """The highest version any leader has published (0 if none)."""
        raw = await self._redis.get(f"{PREFIX}version")
        return int(raw) if raw is not None else 0

    async def get_json(self, key: str) -> Any:
        raw = await self._redis.get(PREFIX + key)
        return json.loads(raw) if raw is not None else None

    async def put_json(self, key: str, value: Any, ttl: int) -> None:
        await self._redis.set(PREFIX + key, json.dumps(value, default=str), ex=ttl)
