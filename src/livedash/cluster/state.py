"""Metric values shared through Redis, so every instance serves the same snapshot.

The elected leader writes each published value under its own key with the tier's TTL
(critical 5 s, standard 30 s, historical 5 min) and rewrites all of them well within the
shortest TTL, so the keys live as long as a leader does. When no leader writes any more, the
values expire and readers fall back to the database instead of serving stale numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from livedash.metrics.definitions import METRICS, Tier
from livedash.metrics.engine import MetricValue

PREFIX = "livedash:"
TIER_TTL_SECONDS = {Tier.CRITICAL: 5, Tier.STANDARD: 30, Tier.HISTORICAL: 300}
DEPARTMENTS_TTL_SECONDS = 300
MetricKey = tuple[str, str | None]

# KEYS: the version floor, then one key per value; ARGV: version, encoded value, TTL per value.
# Versions stay below 2^53, exact as Lua numbers; the floor is written from its ARGV string.
_PUBLISH = """
local floor = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local highest, highest_raw = floor, nil
for i = 2, #KEYS do
  local at = (i - 2) * 3
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
return 1
"""


def value_key(metric: str, department: str | None) -> str:
    return f"{PREFIX}m:{metric}|{department or ''}"


def ttl_of(metric: str) -> int:
    definition = METRICS.get(metric)
    tier = definition.tier if definition is not None else Tier.CRITICAL
    return TIER_TTL_SECONDS[tier]


def encode(value: MetricValue) -> str:
    raw: Any = value.value
    kind = "decimal" if isinstance(raw, Decimal) else "plain"
    return json.dumps(
        {
            "metric": value.metric,
            "department": value.department,
            "department_id": value.department_id,
            "value": str(raw) if kind == "decimal" else raw,
            "kind": kind,
            "version": value.version,
            "timestamp": value.timestamp.isoformat(),
        },
        separators=(",", ":"),
    )


def decode(raw: str | bytes) -> MetricValue:
    data = json.loads(raw)
    value = Decimal(data["value"]) if data["kind"] == "decimal" else data["value"]
    return MetricValue(
        metric=data["metric"],
        department=data["department"],
        value=value,
        version=int(data["version"]),
        timestamp=datetime.fromisoformat(data["timestamp"]),
        department_id=data["department_id"],
    )


class SharedMetricState:
    """The leader's metric values, versions and departments, in Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._publish = redis.register_script(_PUBLISH)

    async def publish(self, values: Sequence[MetricValue]) -> None:
        """Store `values` (each with its tier's TTL) and raise the version floor.

        A stored value is never replaced by an older version of it, nor the floor lowered:
        the periodic rewrite of every value may reach Redis after a newer update did.
        """
        if not values:
            return
        keys = [f"{PREFIX}version"]
        arguments: list[str | int] = []
        for value in values:
            keys.append(value_key(value.metric, value.department))
            arguments += [value.version, encode(value), ttl_of(value.metric)]
        await self._publish(keys=keys, args=arguments)

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
