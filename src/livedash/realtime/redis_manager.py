"""python-socketio's Redis manager: other instances first, and a capped reconnect delay.

Order: the message is published first and the local sockets are served while it travels
(publish_first.py says why).

Reconnecting: the stock manager doubles its wait after every failed attempt to resubscribe,
without bound: after a minute without Redis an instance would wait another minute before its
sockets hear the other instances again. Here the wait grows with jitter to at most 2 s.

Missed messages: Redis pub/sub keeps nothing for a subscriber that is away, and the stock
manager gives up a publish that failed twice with a log line. Both lose updates for the other
instances' sockets, so both are reported: `on_resync` listeners hear when this instance's
subscription is (re)confirmed (whatever was published before it is missed here) and when
another instance announces, on a channel of its own, that it could not reach the others
(`announce_resync`); `on_publish_failed` listeners hear of every publish given up.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import socketio
from redis.asyncio import Redis

from livedash.aio import BackgroundTasks
from livedash.cluster.shared_redis import text
from livedash.realtime.frames import FrameManager
from livedash.realtime.publish_first import PublishFirst


class CappedRedisManager(PublishFirst, socketio.AsyncRedisManager, FrameManager):  # type: ignore[misc]
    max_wait = 2.0
    connected: bool

    def __init__(self, subscriber: Redis, *, channel: str) -> None:
        # The URL only tells the stock manager which client library to use: the client is
        # the process's own (`SharedRedis.subscriber`), never one more connection pool.
        super().__init__("redis://", channel=channel)
        self._subscriber = subscriber
        self._closing = BackgroundTasks()
        # Its own channel: the updates' channel is read without looking into every payload.
        self.resync_channel = f"{self.channel}:resync"
        self._resync_names = (self.resync_channel, self.resync_channel.encode())
        self._resync_listeners: list[Callable[[str], None]] = []
        self._publish_failed_listeners: list[Callable[[BaseException], None]] = []

    def on_resync(self, listener: Callable[[str], None]) -> None:
        """Call `listener(reason)` whenever this instance's sockets may have missed messages."""
        self._resync_listeners.append(listener)

    def on_publish_failed(self, listener: Callable[[BaseException], None]) -> None:
        """Call `listener(error)` when a message could not be published to the others."""
        self._publish_failed_listeners.append(listener)

    async def announce_resync(self) -> None:
        """Tell every other instance that its sockets may have missed messages from here."""
        if not self.connected:
            self._redis_connect()
        await self.redis.publish(self.resync_channel, self.host_id)

    async def _publish(self, data: Any) -> Any:
        # The stock manager's two attempts, but a message given up is reported, not only logged.
        for attempt in (1, 2):
            try:
                if not self.connected:
                    self._redis_connect()
                return await self.redis.publish(self.channel, self.json.dumps(data))
            except Exception as error:
                self.connected = False
                if attempt == 2:
                    self._get_logger().error("Cannot publish to redis, giving up (%s)", error)
                    for listener in self._publish_failed_listeners:
                        listener(error)
        return None

    def _redis_connect(self) -> None:
        previous = getattr(self, "pubsub", None)
        if previous is not None:
            # Its connection goes back to the shared client's pool (the stock manager dropped
            # a whole client instead).
            self._closing.spawn(previous.aclose())
        self.redis = self._subscriber
        # The stock manager ignores subscription confirmations; the confirmation is the moment
        # from which this instance hears everything published.
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
        self.connected = True

    def _request_resync(self, reason: str) -> None:
        for listener in self._resync_listeners:
            listener(reason)

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        wait = 0.1
        subscribed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    # In this order: once the last is confirmed, both are heard.
                    await self.pubsub.subscribe(self.channel, self.resync_channel)
                    subscribed = True
                    wait = 0.1
                async for message in self.pubsub.listen():
                    if message.get("channel") not in self._resync_names:
                        yield message  # the stock listener keeps this channel's messages only
                    elif message.get("type") == "subscribe":
                        self._request_resync("subscribed")
                    elif text(message.get("data")) != self.host_id:
                        self._request_resync("announced")
            except Exception as error:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Being stopped: a cancellation that reached redis-py mid-read can come
                    # out as another error, and a retry would outlive the process's shutdown.
                    raise
                self._get_logger().warning(
                    "Cannot receive from redis; retrying in %.1f s (%s)", wait, error
                )
                subscribed = False
                await asyncio.sleep(wait * random.uniform(0.5, 1.0))
                wait = min(wait * 2, self.max_wait)
