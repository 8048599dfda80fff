"""What each socket is subscribed to, and the values it is sent when it asks.

A subscription is a room per (metric, department) (`rooms.room_name`): joining it is all it
takes for the socket to receive that scope's updates, which are sent once per room, never by
looping over sockets. A socket that takes its updates batched is instead in the one room of
the group of sockets subscribed to exactly its scopes (groups.py). On subscribing, the socket
joins its rooms first and then reads the stream's top: everything after that position reaches
it through the rooms, and everything up to it is sent here, either replayed from the update
history since the position the client gives (recovery) or, when the history no longer holds
all of it, as a snapshot.

History reads (`request_historical`, and `GET /api/history` through `history`) are the one
request whose cost the client chooses: they count against the user's history budget and run
a few at a time per instance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import BaseModel

from livedash.auth.scope import visible_departments
from livedash.auth.tokens import Principal
from livedash.cluster.view import MetricView
from livedash.errors import InvalidPayload
from livedash.metrics.definitions import money
from livedash.metrics.engine import MetricValue
from livedash.realtime.clients import ClientSession, Scope, Subscribers
from livedash.realtime.fanout import FanOut
from livedash.realtime.limiter import SocketLimiter
from livedash.realtime.outbox import to_update
from livedash.realtime.requests import history_query, ordered, parse, select
from livedash.realtime.rooms import room_name
from livedash.realtime.schemas import (
    BATCH_EVENT,
    UPDATE_EVENT,
    HistoricalData,
    HistoricalPoint,
    MetricSelection,
    MetricsSnapshot,
    StreamPosition,
    SubscriptionAck,
)
from livedash.realtime.stream import Position, UpdateHistory
from livedash.settings import Settings

log = structlog.get_logger(__name__)


class Subscriptions:
    """Serves `subscribe_metrics`, `unsubscribe_metrics`, `request_snapshot` and
    `request_historical`, and sends values to a socket for the rest of the gateway."""

    def __init__(
        self,
        settings: Settings,
        fanout: FanOut,
        *,
        view: MetricView,
        limiter: SocketLimiter,
        history: UpdateHistory | None,
    ) -> None:
        """Read values from `view` and missed updates from `history` (None: no recovery)."""
        self._settings = settings
        self._fanout = fanout
        self._view = view
        self._limiter = limiter
        self._history = history
        # A few at a time, so that history reads cannot fill the event loop that every
        # screen's updates go through.
        self._history_reads = asyncio.Semaphore(settings.history_reads_at_once)
        self.subscribers = Subscribers()

    # -- events --------------------------------------------------------------------------

    async def subscribe(self, session: ClientSession, data: Any) -> BaseModel:
        """`subscribe_metrics`: join the rooms asked for, then send what came before."""
        metrics, departments = await self._select(session, data)
        wanted = {(metric, department) for metric in metrics for department in departments}
        new = wanted - session.subscriptions
        limit = self._settings.max_subscriptions
        if len(session.subscriptions) + len(new) > limit:
            raise InvalidPayload(
                f"at most {limit} subscriptions per socket: {len(session.subscriptions)} held, "
                f"{len(new)} more asked for",
                limit=limit,
                held=len(session.subscriptions),
                asked=len(new),
            )
        since = parse(MetricSelection, data).since if isinstance(data, dict) else None
        if since is None:
            since, session.since = session.since, None
        for metric, department in sorted(new, key=_scope_order):
            if not session.batched:
                await self._fanout.join(session.sid, room_name(metric, department))
            self.subscribers.add(session, (metric, department))
        if session.batched and new and not session.gone:
            await self._fanout.batch(session.sid, frozenset(session.subscriptions))
        # Joined before reading the stream's top: every update after it reaches this socket
        # through its rooms, and everything up to it is in what is sent here.
        top = await self.stream_top()
        position = on_the_wire(top)
        if since is not None and top is not None:
            missed = await self._replay(session, since, top, wanted)
            if missed is not None:
                return SubscriptionAck(
                    metrics=metrics,
                    departments=ordered(departments),
                    position=position,
                    recovered=True,
                )
        await self._send_snapshot(
            session,
            metrics,
            departments,
            position=position,
            recovered=False if since is not None else None,
            fresh=True,
        )
        return SubscriptionAck(
            metrics=metrics,
            departments=ordered(departments),
            position=position,
            recovered=False if since is not None else None,
        )

    async def unsubscribe(self, session: ClientSession, data: Any) -> BaseModel:
        """`unsubscribe_metrics`: leave the rooms asked for."""
        metrics, departments = await self._select(session, data)
        gone = {(metric, department) for metric in metrics for department in departments}
        await self.drop(session, gone & session.subscriptions)
        return SubscriptionAck(metrics=metrics, departments=ordered(departments))

    async def snapshot(self, session: ClientSession, data: Any) -> BaseModel:
        """`request_snapshot`: the current values asked for."""
        metrics, departments = await self._select(session, data)
        return await self._send_snapshot(session, metrics, departments)

    async def historical(self, session: ClientSession, data: Any) -> BaseModel:
        """`request_historical`: a metric's series over a range."""
        assert session.principal is not None  # the guard lets only authenticated sockets here
        reply = await self.history(session.principal, data)
        payload = reply.model_dump(mode="json", by_alias=True)
        await self._fanout.to_socket(session.sid, "historical_data", payload)
        return reply

    async def history(self, principal: Principal, data: Any) -> HistoricalData:
        """A `request_historical` of `principal`'s, checked, charged to its user's history
        budget and read (a few at a time): for sockets and REST alike."""
        visible = visible_departments(principal, await self._view.departments())
        query = history_query(data, visible)
        request, start, end = query.request, query.start, query.end
        await self._limiter.history(principal.subject, query.hours)
        async with self._history_reads:
            points = await self._view.history(
                request.metric, request.department, start, end, request.granularity
            )
        reply = HistoricalData(
            metric=request.metric,
            department=request.department,
            granularity=request.granularity,
            start=start,
            end=end,
            points=[
                HistoricalPoint(
                    start=point.start,
                    value=money(point.value) if request.metric == "revenue" else point.value,
                    peak=point.peak,
                )
                for point in points
            ],
        )
        return reply

    # -- for the rest of the gateway -------------------------------------------------------

    async def visible(self, session: ClientSession) -> set[str | None]:
        """The departments (None: the hospital-wide totals) the socket's identity may see."""
        if session.principal is None:
            return set()
        codes = set(await self._view.departments())
        return visible_departments(session.principal, codes)

    async def drop(self, session: ClientSession, scopes: set[Scope]) -> None:
        """Leave the rooms of `scopes`."""
        for metric, department in scopes:
            if not session.batched:
                with contextlib.suppress(KeyError, ValueError):
                    await self._fanout.leave(session.sid, room_name(metric, department))
            self.subscribers.discard(session, (metric, department))
        if session.batched and scopes and not session.gone:
            await self._fanout.batch(session.sid, frozenset(session.subscriptions))

    async def stream_top(self) -> Position | None:
        """The update stream's last position; None without a history or while it is out of
        reach."""
        if self._history is None:
            return None
        try:
            return await self._history.top()
        except Exception as error:
            log.warning("update_history_unavailable", error=str(error))
            return None

    async def send_values(
        self,
        session: ClientSession,
        values: Iterable[MetricValue],
        *,
        position: StreamPosition | None,
        recovered: bool | None,
    ) -> MetricsSnapshot:
        """Send `values` as a `metrics_snapshot`, as of `position`."""
        snapshot = MetricsSnapshot(
            values=[to_update(value) for value in values],
            server_time=datetime.now(UTC),
            position=position,
            recovered=recovered,
        )
        payload = snapshot.model_dump(mode="json", exclude={"values": {"__all__": {"position"}}})
        await self._fanout.to_socket(session.sid, "metrics_snapshot", payload)
        return snapshot

    # -- helpers -------------------------------------------------------------------------

    async def _select(self, session: ClientSession, data: Any) -> tuple[list[str], set[str | None]]:
        return select(data, await self.visible(session), self._settings.max_list_length)

    async def _replay(
        self, session: ClientSession, since: StreamPosition, top: Position, scopes: set[Scope]
    ) -> int | None:
        """Send the updates of `scopes` after `since` up to `top`, in order; None if the history
        no longer holds all of them."""
        assert self._history is not None  # there is a top only with a history
        try:
            entries = await self._history.since(Position(since.epoch, since.offset))
        except Exception as error:
            log.warning("update_history_unavailable", error=str(error))
            return None
        if entries is None:
            return None
        replayed: list[dict[str, Any]] = []
        for entry in entries:
            if entry.offset > top.offset:
                break  # after the top: it reaches the socket through its rooms
            payload = entry.payload
            if (payload.get("metric"), payload.get("department")) not in scopes:
                continue
            update = {**payload, "position": {"epoch": top.epoch, "offset": entry.offset}}
            if not session.batched:
                await self._fanout.to_socket(session.sid, UPDATE_EVENT, update)
            replayed.append(update)
        if session.batched and replayed:
            await self._fanout.to_socket(session.sid, BATCH_EVENT, {"updates": replayed})
        log.info("socket_recovered", sid=session.sid, since=since.offset, replayed=len(replayed))
        return len(replayed)

    async def _send_snapshot(
        self,
        session: ClientSession,
        metrics: Iterable[str],
        departments: set[str | None],
        *,
        position: StreamPosition | None = None,
        recovered: bool | None = None,
        fresh: bool = False,
    ) -> MetricsSnapshot:
        values = await self._view.snapshot(metrics, departments, fresh=fresh)
        return await self.send_values(session, values, position=position, recovered=recovered)


def on_the_wire(position: Position | None) -> StreamPosition | None:
    """A stream position as clients are sent it."""
    return StreamPosition(epoch=position.epoch, offset=position.offset) if position else None


def _scope_order(scope: Scope) -> tuple[str, bool, str]:
    metric, department = scope
    return (metric, department is not None, department or "")
