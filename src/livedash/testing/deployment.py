"""A production-like deployment, all throwaway: PostgreSQL (`wal_level=logical`), Redis,
several `livedash serve` instances and nginx in front of them (deploy/nginx.conf).

Everything runs on free loopback ports under one root directory and is stopped by the caller's
`ExitStack`, Ctrl-C included; no service of the machine is touched. The instances get their
settings from the environment only (none of the caller's `LIVEDASH_*` variables), one shared
JWT secret, and one feed slot. `HealthMonitor` then watches every instance's `/health`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from livedash.auth.tokens import issue_token
from livedash.settings import Settings
from livedash.store.migrate import upgrade
from livedash.store.models import Role
from livedash.testing.hospital import OPERATOR, User, add_users
from livedash.testing.servers import NginxServer, PostgresServer, RedisServer
from livedash.testing.service import (
    MANY_CLIENTS,
    ServiceProcess,
    bench_settings,
    wait_for_leader,
)

DATABASE = "hospital"
HEALTH_SAMPLE_SECONDS = 0.25


@dataclass
class Deployment:
    """What `start_deployment` started, and how long it took."""

    postgres: PostgresServer
    redis: RedisServer
    instances: list[ServiceProcess]
    nginx: NginxServer
    url: str
    """The database's SQLAlchemy URL."""
    dsn: str
    settings: Settings
    """The instances' own: tokens signed with them are accepted."""
    operator: str
    """A super_admin's (OPERATOR) token: /health shows it its details."""
    healthy_seconds: float
    """From starting the instances until every /health answered 200."""
    elected_seconds: float
    """From then until exactly one instance led."""
    roles: list[str]
    seeded: Any = None
    """What `seed` returned."""

    def pids(self) -> dict[str, int]:
        """The servers' main processes, by name."""
        found = {"postgres": self.postgres.process, "redis": self.redis.process}
        found["nginx"] = self.nginx.process
        return {name: process.pid for name, process in found.items() if process is not None}


def start_deployment(
    stack: contextlib.ExitStack,
    root: Path,
    *,
    instances: int,
    slot: str,
    seed: Callable[[str, str], Awaitable[Any]],
    users: Iterable[User],
    env: Mapping[str, str] | None = None,
) -> Deployment:
    """Start everything under `root`, each server stopped by `stack`.

    `seed(url, dsn)` fills the migrated database before any instance starts (what it returns
    is kept as `seeded`); `users` (and OPERATOR) are added to it; `env` is added to every
    instance's environment. A start-up that fails says so with each instance's last lines."""
    postgres = PostgresServer(root / "postgres").init()
    stack.callback(postgres.stop)
    postgres.start()
    asyncio.run(postgres.create_database(DATABASE))
    url, dsn = postgres.url(DATABASE), postgres.dsn(DATABASE)
    upgrade(url)
    seeded = asyncio.run(_seed(seed, url, dsn))
    add_users(dsn, [*users, (OPERATOR, Role.SUPER_ADMIN, [])])
    redis = RedisServer(root / "redis")
    stack.callback(redis.stop)
    redis.start()

    workdir = root / "instances"
    workdir.mkdir()
    settings = bench_settings(url, workdir)
    secret = settings.signing_key()
    operator = issue_token(settings, OPERATOR, Role.SUPER_ADMIN)
    environment = {
        "LIVEDASH_DATABASE_URL": url,
        "LIVEDASH_REDIS_URL": redis.url,
        "LIVEDASH_FEED_SLOT": slot,
        **MANY_CLIENTS,
        **(env or {}),
    }
    services = [
        ServiceProcess(
            workdir,
            secret,
            env=environment,
            isolated=True,
            name=f"instance-{number}",
            health_token=operator,
        )
        for number in range(1, instances + 1)
    ]
    started = time.monotonic()
    for service in services:
        stack.enter_context(service)
    try:
        for service in services:
            service.wait_healthy()
        healthy = time.monotonic() - started
        elected, roles = wait_for_leader(services)
    except RuntimeError as error:
        logs = "\n".join(f"{s.log_path.name} (last lines):\n{s.log_tail()}" for s in services)
        raise RuntimeError(f"{error}\n{logs}") from error
    nginx = NginxServer(root / "nginx", upstreams=[service.port for service in services])
    stack.callback(nginx.stop)
    nginx.start()
    return Deployment(
        postgres,
        redis,
        services,
        nginx,
        url,
        dsn,
        settings,
        operator,
        healthy,
        elected,
        roles,
        seeded,
    )


async def _seed(seed: Callable[[str, str], Awaitable[Any]], url: str, dsn: str) -> Any:
    return await seed(url, dsn)


@dataclass(slots=True)
class HealthSample:
    at: float
    healthy: bool
    roles: list[str]
    feeds: int = 0
    """Instances whose /health shows a running feed (feed_position): more than one is two
    readers of one slot."""


@dataclass
class HealthMonitor:
    """Every instance's /health, a few times a second: is the service healthy?

    Healthy: every instance answers 200, and exactly one is the leader with a running feed."""

    instances: list[ServiceProcess]
    samples: list[HealthSample] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while True:
                at = time.time()
                answers = await asyncio.gather(*(self._one(session, i) for i in self.instances))
                leaders = [body for code, body in answers if body.get("role") == "leader"]
                healthy = (
                    all(code == 200 for code, _ in answers)
                    and len(leaders) == 1
                    and "feed_position" in leaders[0]
                )
                roles = [str(body.get("role", "down")) for _, body in answers]
                feeds = sum(1 for _, body in answers if "feed_position" in body)
                self.samples.append(HealthSample(at, healthy, roles, feeds))
                await asyncio.sleep(HEALTH_SAMPLE_SECONDS)

    @staticmethod
    async def _one(
        session: aiohttp.ClientSession, service: ServiceProcess
    ) -> tuple[int, dict[str, Any]]:
        try:
            async with session.get(
                f"{service.url}/health", headers=service.health_headers
            ) as response:
                return response.status, dict(await response.json())
        except Exception:
            return 0, {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def roles(self) -> list[str]:
        """Each instance's role at the last sample."""
        return self.samples[-1].roles if self.samples else []

    async def healthy_after(self, moment: float, deadline: float) -> float | None:
        """The time of the first healthy sample taken after `moment`; None past `deadline`."""
        checked = 0
        while time.time() < deadline:
            for sample in self.samples[checked:]:
                if sample.at >= moment and sample.healthy:
                    return sample.at
            checked = len(self.samples)
            await asyncio.sleep(HEALTH_SAMPLE_SECONDS / 2)
        return None
