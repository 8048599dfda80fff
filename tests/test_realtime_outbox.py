"""The outbox: latest value wins, critical first, bursts coalesce, the feed never waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from livedash.metrics.engine import MetricValue
from livedash.realtime.outbox import Outbox
from livedash.realtime.rooms import room_name

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class SlowSockets:
    """A fan-out whose sends to rooms wait until the test lets them through; every send is
    recorded."""

    def __init__(self) -> None:
        self.sends: list[list[dict[str, Any]]] = []  # to the batched sockets
        self.to_rooms: list[tuple[str, dict[str, Any]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = asyncio.Condition()
        self.entered = asyncio.Event()

    @property
    def sent(self) -> list[dict[str, Any]]:
        return [payload for send in self.sends for payload in send]

    async def join(self, sid: str, room: str) -> None:
        raise NotImplementedError

    async def leave(self, sid: str, room: str) -> None:
        raise NotImplementedError

    async def to_socket(self, sid: str, event: str, payload: Any) -> None:
        raise NotImplementedError

    async def to_room(self, room: str, event: str, payload: Any) -> None:
        self.entered.set()
        await self.gate.wait()
        self.to_rooms.append((room, payload))

    async def batch(self, sid: str, scopes: frozenset[tuple[str, str | None]]) -> None:
        raise NotImplementedError

    async def to_batched(self, payloads: list[dict[str, Any]]) -> None:
        async with self.arrived:
            self.sends.append(payloads)
            self.arrived.notify_all()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5), self.arrived:
            await self.arrived.wait_for(lambda: len(self.sent) >= count)


def value(metric: str, version: int, number: int, department: str | None = "ED") -> MetricValue:
    return MetricValue(metric, department, number, version, AT)


async def test_a_slow_fanout_gets_the_latest_values_critical_first() -> None:
    sockets = SlowSockets()
    async with Outbox(sockets) as outbox:
        sockets.gate.clear()
        outbox.put([value("patients_total", 1, 10)])
        await sockets.entered.wait()  # the sender took it and is stuck on the slow socket
        outbox.put([value("appointments_today", 2, 1), value("patients_total", 3, 11)])
        outbox.put([value("admissions_trend", 4, 0), value("patients_total", 5, 12)])
        outbox.put([value("beds_free", 6, 3), value("appointments_today", 7, 2)])
        sockets.gate.set()
        await sockets.until(5)
    sends = [[(payload["metric"], payload["value"]) for payload in send] for send in sockets.sends]
    assert sends == [
        [("patients_total", 10)],
        [
            ("patients_total", 12),  # 11 was superseded while waiting
            ("beds_free", 3),
            ("appointments_today", 2),  # standard after critical
            ("admissions_trend", 0),  # historical last
        ],
    ]
    assert outbox.superseded == 2
    # Each value to its room too, in the same order, before the batched sockets get them.
    assert sockets.to_rooms == [
        (room_name(payload["metric"], payload["department"]), payload) for payload in sockets.sent
    ]
    assert sockets.to_rooms[1][0] == room_name("patients_total", "ED")


async def test_a_burst_within_the_window_leaves_as_one_update() -> None:
    sockets = SlowSockets()
    async with Outbox(sockets, window=0.2) as outbox:
        outbox.put([value("patients_total", 1, 1)])
        await sockets.until(1)  # after a quiet spell: at once
        for version in range(2, 12):
            outbox.put([value("patients_total", version, version)])
        await sockets.until(2)
    assert [payload["value"] for payload in sockets.sent] == [1, 11]
    assert outbox.superseded == 9


async def test_pending_updates_are_sent_on_shutdown() -> None:
    sockets = SlowSockets()
    outbox = Outbox(sockets, window=60)
    async with outbox:
        outbox.put([value("patients_total", 1, 1)])
        await sockets.until(1)
        outbox.put([value("patients_total", 2, 2, department=None)])
    assert [payload["department"] for payload in sockets.sent] == ["ED", None]
