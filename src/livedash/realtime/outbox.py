"""The outbox between the metric engine and the sockets.

The engine hands over changed values without waiting for any socket. One sender task emits
them to their rooms, critical tier first, and then to the batched sockets in one emit
(`FanOut.to_batched`); a value that changes again before it was sent is replaced, so a slow
fan-out (many sockets, a slow network) delays the newest value instead of queueing stale ones,
and never holds up the change feed.

Coalescing window: an update after a quiet spell leaves at once; during a burst the sender
sends at most once per `window` seconds, each time the latest value of every metric.

Counted for Prometheus: updates sent (by tier) and superseded, and with a `Telemetry`, each
sent update's latency from the commit behind it (`commit_time`, the earliest one a coalesced
value carries) to its emit, and from its emit to its frame written to the room's sockets here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog

from livedash.metrics.definitions import METRICS, Tier
from livedash.metrics.engine import MetricValue
from livedash.observability.telemetry import Telemetry
from livedash.realtime.fanout import FanOut
from livedash.realtime.rooms import alert_room, room_name, user_room
from livedash.realtime.schemas import UPDATE_EVENT, MetricUpdate
from livedash.realtime.stream import UpdateHistory

log = structlog.get_logger(__name__)

_TIER_ORDER = {Tier.CRITICAL: 0, Tier.STANDARD: 1, Tier.HISTORICAL: 2}


class RoomScreens:
    """The screens alerts and notifications are pushed to (`livedash.alerts.messages.Screens`):
    the alert room of a department, joined by every socket that may see it, and a user's own
    room."""

    def __init__(self, fanout: FanOut) -> None:
        self._fanout = fanout

    async def to_department(self, department: str | None, event: str, payload: Any) -> None:
        await self._fanout.to_room(alert_room(department), event, payload)

    async def to_user(self, username: str, event: str, payload: Any) -> None:
        await self._fanout.to_room(user_room(username), event, payload)


def to_update(value: MetricValue) -> MetricUpdate:
    """The wire model of a metric value."""
    return MetricUpdate(
        metric=value.metric,
        department=value.department,
        value=value.value,
        version=value.version,
        timestamp=value.timestamp,
    )


def update_payload(value: MetricValue) -> dict[str, Any]:
    """The wire form (JSON-ready) of a metric value (without a stream position)."""
    return to_update(value).model_dump(mode="json", exclude={"position"})


def _tier(value: MetricValue) -> str:
    definition = METRICS.get(value.metric)
    return definition.tier.value if definition is not None else "unknown"


def _priority(value: MetricValue) -> tuple[int, int]:
    definition = METRICS.get(value.metric)
    tier = _TIER_ORDER[definition.tier] if definition is not None else len(_TIER_ORDER)
    return tier, value.version


class Outbox:
    """Latest-value-wins queue of metric updates, drained by one sender task."""

    def __init__(
        self,
        fanout: FanOut,
        *,
        window: float = 0.0,
        history: UpdateHistory | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._fanout = fanout
        self._history = history
        self._window = window
        self._telemetry = telemetry
        self.commit_time: Callable[[], datetime | None] | None = None
        """The commit time (naive UTC) behind the values being `put`, if they come from the
        feed: the start of their commit-to-emit latency."""
        self._last_sent = float("-inf")
        self._pending: dict[tuple[str, str | None], MetricValue] = {}
        self._committed: dict[tuple[str, str | None], float] = {}  # epoch seconds
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.sent = 0
        self.superseded = 0
        self.sent_by_tier: Counter[str] = Counter()

    async def __aenter__(self) -> Outbox:
        self._task = asyncio.create_task(self._run(), name="livedash-outbox")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            # Told by a flag as well as by cancel(): a client library awaited while sending
            # (redis-py) may swallow the cancellation, and the sender would wait forever
            # (seen: a test server that never stopped).
            self._closing = True
            self._ready.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._send_pending()

    def rotate(self) -> None:
        """Start a new stream epoch: this instance now leads and cannot vouch for what the
        history holds from before."""
        if self._history is not None:
            self._history.rotate()

    def put(self, values: Iterable[MetricValue]) -> None:
        """Queue values for sending; a queued older value of the same metric is dropped."""
        committed_at = self.commit_time() if self.commit_time is not None else None
        committed = committed_at.replace(tzinfo=UTC).timestamp() if committed_at else None
        for value in values:
            key = (value.metric, value.department)
            if key in self._pending:
                self.superseded += 1
            self._pending[key] = value
            if committed is not None:
                self._committed.setdefault(key, committed)
        self._ready.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._ready.wait()
            if self._closing:
                return
            quiet_until = self._last_sent + self._window
            if quiet_until > loop.time():
                await asyncio.sleep(quiet_until - loop.time())  # let the burst coalesce
            self._ready.clear()
            self._last_sent = loop.time()
            await self._send_pending()

    async def _send_pending(self) -> None:
        batch, self._pending = self._pending, {}
        committed, self._committed = self._committed, {}
        values = sorted(batch.values(), key=_priority)
        payloads = [update_payload(value) for value in values]
        if self._history is not None and payloads:
            try:
                positions = await self._history.append(payloads)
            except Exception as error:
                # Sent without a position: the history has a hole, so it starts a new epoch
                # and clients that recover across it get a fresh snapshot.
                log.warning("update_history_unavailable", error=str(error))
            else:
                for payload, position in zip(payloads, positions, strict=True):
                    payload["position"] = position.as_dict()
        telemetry = self._telemetry
        for value, payload in zip(values, payloads, strict=True):
            emitted_at, started = time.time(), time.perf_counter()
            try:
                await self._fanout.to_room(
                    room_name(value.metric, value.department), UPDATE_EVENT, payload
                )
            except Exception:
                log.exception("update_send_failed", metric=value.metric)
                continue
            self.sent += 1
            self.sent_by_tier[_tier(value)] += 1
            if telemetry is not None:
                # The room's local sockets are written to within the emit (frames.py).
                telemetry.emit_to_write.observe(time.perf_counter() - started)
                commit = committed.get((value.metric, value.department))
                if commit is not None:
                    telemetry.commit_to_emit.observe(max(emitted_at - commit, 0.0))
        if payloads:
            try:
                await self._fanout.to_batched(payloads)
            except Exception:
                log.exception("update_send_failed", batched=len(payloads))
