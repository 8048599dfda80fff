"""The primary's metric values, departments and causes, copied to its socket workers.

The primary's feed runner publishes each batch of values (and their causes) to the bus before
the outbox sends them (`BusPublisher`, in the runner's shared-state slot, as Redis is in a
deployment); a worker keeps the newest of each key (`MirroredState`) and serves snapshots from
it with the read side of `SharedMetricState`, so `SharedView` treats it as its L2. A worker
that links up gets everything first (`sync`), then every batch, in order on its link.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from livedash.cluster.local_bus import BusHub, Message
from livedash.cluster.state import decode, decode_cause, encode, encode_cause
from livedash.metrics.causes import CAUSES_KEPT, Cause
from livedash.metrics.engine import MetricValue

MetricKey = tuple[str, str | None]

VALUES = "values"
DEPARTMENTS = "departments"


def values_message(values: Iterable[MetricValue], causes: Iterable[Cause] = ()) -> Message:
    """Each value and cause with its key and version beside it: a worker keeps them encoded
    and decodes only what it serves."""
    return {
        "t": VALUES,
        "values": [[v.metric, v.department, v.version, encode(v)] for v in values],
        "causes": [[c.metric, c.department, c.version, encode_cause(c)] for c in causes],
    }


def departments_message(departments: dict[int, str]) -> Message:
    return {"t": DEPARTMENTS, "departments": {code: id_ for id_, code in departments.items()}}


class BusPublisher:
    """The feed runner's shared state on the embedded default with socket workers."""

    # A link loses nothing, but departments are only sent with every value: a department
    # added to the hospital reaches the workers within this.
    rewrite_seconds: float | None = 10.0

    def __init__(self, hub: BusHub) -> None:
        self._hub = hub

    async def publish(self, values: Sequence[MetricValue], causes: Sequence[Cause] = ()) -> None:
        if values:
            self._hub.broadcast(values_message(values, causes))

    async def publish_departments(self, departments: dict[int, str]) -> None:
        self._hub.broadcast(departments_message(departments))

    async def version_floor(self) -> int:
        return 0  # the primary's engine is the only one, for the life of the process


class MirroredState:
    """A worker's copy of the primary's values: the read side of `SharedMetricState`."""

    def __init__(self) -> None:
        self._values: dict[MetricKey, tuple[int, str]] = {}  # version, encoded
        self._causes: dict[MetricKey, dict[int, str]] = {}  # version -> encoded
        self._departments: dict[str, int] | None = None

    def apply(self, message: Message) -> bool:
        """Take in a values or departments message; False if it is neither."""
        kind = message.get("t")
        if kind == VALUES:
            for metric, department, version, raw in message["values"]:
                key = (metric, department)
                held = self._values.get(key)
                if held is None or held[0] <= version:
                    self._values[key] = (version, raw)
            for metric, department, version, raw in message["causes"]:
                ring = self._causes.setdefault((metric, department), {})
                ring[version] = raw
                if len(ring) > CAUSES_KEPT:
                    del ring[min(ring)]
            return True
        if kind == DEPARTMENTS:
            loaded = message["departments"]
            self._departments = {str(code): int(id_) for code, id_ in loaded.items()}
            return True
        return False

    async def read(self, keys: Iterable[MetricKey]) -> dict[MetricKey, MetricValue]:
        return {key: decode(self._values[key][1]) for key in keys if key in self._values}

    async def departments(self) -> dict[str, int] | None:
        return dict(self._departments) if self._departments is not None else None

    async def causes(self, metric: str, department: str | None) -> list[Cause]:
        ring = self._causes.get((metric, department), {})
        return [decode_cause(ring[version]) for version in sorted(ring, reverse=True)]

    async def get_json(self, key: str) -> Any:
        return None  # history series: read from the database by the view

    async def put_json(self, key: str, value: Any, ttl: int) -> None:
        return None
