"""The Redis manager's listener stops with the Socket.IO server: python-socketio's own
shutdown left it running, retrying against the closed client, and an instance then did not
exit on SIGTERM until it was killed (20 s per stop in the cluster tests)."""

from __future__ import annotations

import asyncio

from livedash.cluster.shared_redis import SharedRedis
from livedash.observability.breaker import CircuitBreaker
from livedash.realtime.redis_manager import CappedRedisManager
from livedash.realtime.server import GatewayServer
from livedash.testing.servers import RedisServer


async def test_shutting_the_server_down_stops_the_redis_listener(
    redis_server: RedisServer,
) -> None:
    async with SharedRedis(redis_server.url, CircuitBreaker("redis")) as redis:
        server = GatewayServer(session_deadline=5.0, async_mode="asgi")
        manager = CappedRedisManager(redis.subscriber, channel="livedash-test")
        subscribed = asyncio.Event()
        manager.on_resync(lambda reason: subscribed.set() if reason == "subscribed" else None)
        server.use_manager(manager)
        manager.initialize()  # what the first connection does
        async with asyncio.timeout(10):
            await subscribed.wait()
        listener = manager.thread
        assert not listener.done()

        await server.shutdown()

        assert listener.done()
