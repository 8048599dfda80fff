"""A socket.io client wrapper that records every event and lets a test await one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio

EVENTS = (
    "authenticated",
    "auth_error",
    "dashboard_update",
    "metrics_snapshot",
    "historical_data",
    "connection_status",
    "error",
)


class Recorder:
    """Every event the client received, in order, and a way to await the next match.

    With `record=False` nothing is kept (a long run would hold every update), but `until`
    still wakes on every event.
    """

    def __init__(self, client: socketio.AsyncClient, *, record: bool = True) -> None:
        self.record = record
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()
        self._taken: set[int] = set()
        self.disconnected = asyncio.Event()
        self.client = client
        self._attach(client)

    def _attach(self, client: socketio.AsyncClient) -> None:
        client.on("*", self._record)
        client.on("disconnect", self._on_disconnect)

    async def _record(self, event: str, data: Any = None) -> None:
        async with self._changed:
            if self.record:
                self.events.append((event, data))
            self._changed.notify_all()

    async def _on_disconnect(self, *args: Any) -> None:
        self.disconnected.set()

    def received(self, event: str) -> list[Any]:
        """Payloads of `event` received so far."""
        return [data for name, data in self.events if name == event]

    async def next(
        self,
        event: str,
        where: Callable[[Any], bool] = lambda _: True,
        *,
        within: float = 10.0,
    ) -> Any:
        """The earliest `event` payload matching `where` not returned before; waits for it."""

        def find() -> tuple[Any] | None:
            for index, (name, data) in enumerate(self.events):
                if index not in self._taken and name == event and where(data):
                    self._taken.add(index)
                    return (data,)
            return None

        async with asyncio.timeout(within), self._changed:
            found = await self._changed.wait_for(find)
        return found[0] if found is not None else None

    def view(self) -> dict[tuple[str, str | None], Any]:
        """What a screen shows: for each metric and department, the newest value received."""
        newest: dict[tuple[str, str | None], tuple[int, Any]] = {}
        for name, data in self.events:
            values = data["values"] if name == "metrics_snapshot" else [data]
            if name not in ("metrics_snapshot", "dashboard_update"):
                continue
            for value in values:
                key = (value["metric"], value["department"])
                if key not in newest or newest[key][0] < value["version"]:
                    newest[key] = (value["version"], value["value"])
        return {key: value for key, (_, value) in newest.items()}

    async def until(self, condition: Callable[[], bool], *, within: float = 10.0) -> None:
        """Wait until `condition` holds, re-checked after every event received."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(condition)

    async def call(self, event: str, data: Any = None, *, within: float = 10.0) -> Any:
        """Emit `event` and return the server's acknowledgement."""
        return await self.client.call(event, data, timeout=within)


def update_of(metric: str, department: str | None, value: Any = None) -> Callable[[Any], bool]:
    """Matches a `dashboard_update` of `metric` for `department` (and `value`, if given)."""

    def match(update: Any) -> bool:
        return bool(
            update["metric"] == metric
            and update["department"] == department
            and (value is None or update["value"] == value)
        )

    return match
