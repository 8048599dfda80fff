"""Each instance's own figures, shared through Redis, so that any instance can answer for the
whole deployment (`GET /api/realtime/stats`).

Every instance writes its report (a JSON object: its version and start time, its role, its
sockets and subscriptions, its feed lag and readiness) under `livedash:instance:<name>` every
`REPORT_SECONDS`, with a TTL of `REPORT_TTL_SECONDS`, and keeps its name in the set
`livedash:instances`. A reader takes the set, reads the reports, and drops the names whose
report has expired (an instance that died); an instance that stops removes its own at once.
Without Redis there are no others to read. `livedash status` reads the same board
(`read_reports`), with the service's settings and no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from livedash import __version__
from livedash.aio import BackgroundTasks
from livedash.cluster.shared_redis import SharedRedis, text
from livedash.cluster.state import PREFIX

log = structlog.get_logger(__name__)

REPORT_SECONDS = 2.0
REPORT_TTL_SECONDS = 10
MEMBERS = f"{PREFIX}instances"

Report = Callable[[], Mapping[str, Any]]
"""This instance's figures now (JSON-ready)."""


def report_key(name: str) -> str:
    """Where instance `name` keeps its report."""
    return f"{PREFIX}instance:{name}"


def instance_name() -> str:
    """A name for this process, unique in the deployment: host, process, and a random part
    (two instances may share a host name and a pid, in containers)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class InstanceBoard:
    """This instance's report on the shared board, and everyone's; `async with` publishes."""

    def __init__(self, redis: SharedRedis | None, report: Report, name: str | None = None) -> None:
        self.name = name or instance_name()
        self.started_at = datetime.now(UTC)
        self._redis = redis
        self._report = report
        self._key = report_key(self.name)
        self._tasks = BackgroundTasks()

    async def __aenter__(self) -> InstanceBoard:
        if self._redis is not None:
            self._tasks.spawn(self._publish_periodically(self._redis), name="instance-report")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._tasks.close()
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.client.srem(MEMBERS, self.name)
                await self._redis.client.delete(self._key)

    def current(self) -> dict[str, Any]:
        """This instance's report, now."""
        stamp = {
            "instance": self.name,
            "reported_at": datetime.now(UTC).isoformat(),
            "version": __version__,
            "started_at": self.started_at.isoformat(),
        }
        return stamp | dict(self._report())

    async def others(self) -> list[dict[str, Any]] | None:
        """The latest report of every other live instance; None when they cannot be read
        (Redis unreachable). Without Redis: none."""
        redis = self._redis
        if redis is None:
            return []
        if not redis.breaker.allow():
            return None
        try:
            found = await read_reports(redis.client, besides=self.name)
        except (RedisError, OSError) as error:
            redis.breaker.failure(error)
            return None
        redis.breaker.success()
        return found

    async def leader(self) -> dict[str, Any] | None:
        """The report of the instance that reads the feed, if another one does and its
        report can be read."""
        others = await self.others()
        return next((r for r in others or [] if r.get("role") == "leader"), None)

    async def _publish_periodically(self, redis: SharedRedis) -> None:
        client = redis.client
        while True:
            try:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.set(self._key, json.dumps(self.current()), ex=REPORT_TTL_SECONDS)
                    pipe.sadd(MEMBERS, self.name)
                    await pipe.execute()
            except (RedisError, OSError) as error:
                # The breaker and its prober report Redis down; the next report retries.
                log.debug("instance_report_failed", error=str(error))
            await asyncio.sleep(REPORT_SECONDS)


async def read_reports(client: Redis, besides: str | None = None) -> list[dict[str, Any]]:
    """The latest report of every live instance (but `besides`), by name; the names whose
    report expired (instances that died) are dropped from the set. Raises RedisError."""
    names = sorted(text(name) for name in await client.smembers(MEMBERS))
    others = [name for name in names if name != besides]
    raws = await client.mget([report_key(n) for n in others]) if others else []
    expired = [name for name, raw in zip(others, raws, strict=True) if raw is None]
    if expired:
        await client.srem(MEMBERS, *expired)
    found: list[dict[str, Any]] = []
    for raw in raws:
        with contextlib.suppress(ValueError, TypeError):
            if raw is not None and isinstance(report := json.loads(raw), dict):
                found.append(report)
    return found
