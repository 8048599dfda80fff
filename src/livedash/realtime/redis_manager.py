"""python-socketio's Redis manager, with its reconnect delay capped.

The stock manager doubles its wait after every failed attempt to resubscribe, without bound:
after a minute without Redis an instance would wait another minute before its sockets hear
the other instances again. Here the wait grows with jitter to at most `max_wait` seconds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import socketio


class CappedRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    max_wait = 2.0

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        wait = 0.1
        subscribed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    await self.pubsub.subscribe(self.channel)
                    subscribed = True
                    wait = 0.1
                async for message in self.pubsub.listen():
                    yield message
            except Exception as error:
                self._get_logger().warning(
                    "Cannot receive from redis; retrying in %.1f s (%s)", wait, error
                )
                subscribed = False
                await asyncio.sleep(wait * random.uniform(0.5, 1.0))
                wait = min(wait * 2, self.max_wait)
