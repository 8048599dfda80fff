"""python-socketio's pub/sub manager over the embedded default's own bus (cluster/local_bus.py).

What the Redis manager is between instances, this is between the main process and its socket
workers: an emit to a room reaches that room's sockets in every process. Messages go out
before the local sockets are served (publish_first.py), and each process writes them to its
own sockets as frames (frames.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from socketio.async_pubsub_manager import AsyncPubSubManager

from livedash.realtime.frames import FrameManager
from livedash.realtime.publish_first import PublishFirst

SOCKETIO = "sio"
"""The kind of a bus message that carries one of python-socketio's."""


class BusManager(PublishFirst, AsyncPubSubManager, FrameManager):  # type: ignore[misc]
    name = "livedash-bus"

    def __init__(self, publish: Callable[[dict[str, Any]], None]) -> None:
        """`publish` sends a bus message to the other processes."""
        super().__init__(channel="livedash")
        self._send = publish
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listening = False

    def deliver(self, message: dict[str, Any]) -> None:
        """A message from another process, for this one's sockets."""
        # python-socketio starts listening with this process's first connection: until then
        # no socket here is in any room, and a queue would only grow (as a Redis manager
        # hears nothing before it subscribes).
        if self._listening:
            self._inbox.put_nowait(message)

    async def _publish(self, data: Any) -> None:
        self._send({"t": SOCKETIO, "m": data})

    async def _listen(self) -> AsyncIterator[dict[str, Any]]:
        self._listening = True
        while True:
            yield await self._inbox.get()
