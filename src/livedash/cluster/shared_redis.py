"""The one owner of Redis in a process: its clients, its circuit breaker and its prober.

As arq's `ArqRedis` owns its pool, `SharedRedis` owns two clients on one URL: `client` for
commands (short timeouts, so that a hung Redis costs at most two seconds), and `subscriber`
for pub/sub, whose reads wait for as long as the channel is quiet. Every user takes this
object, or its `pool`, and never a URL: the metric state, the update history, the Socket.IO
manager and the rate limiters.

The `breaker` ("cache") opens on failures, which users report (`failure`, `trip`), and a
prober pings Redis every second while the object is open, with backoff and jitter while
Redis is down, closing the breaker when it answers again.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from livedash.aio import BackgroundTasks
from livedash.observability.breaker import CircuitBreaker

log = structlog.get_logger(__name__)

COMMAND_TIMEOUT_SECONDS = 2.0
PROBE_SECONDS = 1.0


class SharedRedis:
    """Redis for one process; `async with` opens the prober and closes the clients."""

    def __init__(self, url: str, breaker: CircuitBreaker) -> None:
        self.url = url
        self.breaker = breaker
        self.pool = ConnectionPool.from_url(
            url, socket_timeout=COMMAND_TIMEOUT_SECONDS, socket_connect_timeout=2.0
        )
        self.client = Redis(connection_pool=self.pool)
        self.subscriber = Redis.from_url(
            url, socket_connect_timeout=2.0, socket_keepalive=True, health_check_interval=10
        )
        self._tasks = BackgroundTasks()

    async def __aenter__(self) -> SharedRedis:
        self._tasks.spawn(self._probe(), name="redis-probe")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._tasks.close()
        await self.subscriber.aclose()
        await self.client.aclose()
        await self.pool.aclose()

    async def _probe(self) -> None:
        """Ping every second; while Redis is down, retry with backoff and jitter."""
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0),
            retry=retry_if_exception_type((RedisError, OSError)),
        )
        while True:
            async for attempt in retrying:
                with attempt:
                    try:
                        await self.client.ping()
                    except (RedisError, OSError) as error:
                        self.breaker.failure(error)
                        raise
            self.breaker.success()
            await asyncio.sleep(PROBE_SECONDS)


def text(value: object) -> str:
    """A Redis reply as text: redis-py answers bytes unless the client decodes."""
    return value.decode() if isinstance(value, bytes) else str(value)
