"""One feed reader per deployment: the instance holding a PostgreSQL advisory lock.

The lock lives on a dedicated connection. If the leader's process dies, PostgreSQL ends its
session and releases the lock; another instance, polling every `poll_seconds`, takes it and
resumes the slot from its confirmed position. A leader that loses its lock's connection
steps down at once, before anyone else can be elected on the same lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from livedash.aio import cancel_and_wait
from livedash.observability.breaker import CircuitBreaker
from livedash.store.engine import libpq_dsn

log = structlog.get_logger(__name__)

Hook = Callable[[], Awaitable[None]]
Deposed = Callable[[bool], Awaitable[None]]  # called with True when the database was lost
# A dead peer (no FIN, e.g. a powered-off machine) is noticed by TCP keepalives in seconds.
_KEEPALIVE = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "2",
}


class LeaderElection:
    """Runs `on_elected` when this instance takes the lock, `on_deposed` when it loses it."""

    def __init__(
        self,
        database_url: str,
        key: int,
        *,
        poll_seconds: float,
        on_elected: Hook,
        on_deposed: Deposed,
        name: str = "",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._dsn = libpq_dsn(database_url)
        self._key = key
        self._poll = poll_seconds
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._name = name
        self._breaker = breaker
        self.leading = False
        self.elected = asyncio.Event()
        self.decided = asyncio.Event()
        """Set once the first campaign knows whether this instance leads (and has started)."""
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None

    async def __aenter__(self) -> LeaderElection:
        self._task = asyncio.create_task(self._run(), name="livedash-election")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self._step_down()
        await self._close()

    async def _run(self) -> None:
        while True:
            try:
                await self._campaign()
            except Exception as error:
                # Any failure, not only the expected ones: asyncpg raises InternalClientError
                # on a connection broken mid-query (PostgreSQL killed), and an election task
                # that died of it kept `leading` set while another instance took the lock
                # (two feed readers, found by bench/soak.py).
                log.warning(
                    "leader_connection_lost",
                    error=str(error) or type(error).__name__,
                    kind=type(error).__name__,
                    leading=self.leading,
                )
                if self._breaker is not None:
                    self._breaker.failure(error)
                await self._step_down(lost=True)
            await self._step_down()
            await self._close()
            await asyncio.sleep(self._poll)

    async def _campaign(self) -> None:
        self._connection = await asyncpg.connect(
            self._dsn, timeout=self._poll * 5, server_settings=_KEEPALIVE
        )
        if self._breaker is not None:
            self._breaker.success()
        # Polled rather than blocking in pg_advisory_lock: a blocked call would hide a dead
        # connection until TCP noticed, and the wait must stay cancellable at shutdown.
        while True:
            if await self._connection.fetchval("SELECT pg_try_advisory_lock($1)", self._key):
                break
            self.decided.set()
            await asyncio.sleep(self._poll)
        self.leading = True
        self.elected.set()
        log.info("leader_elected", instance=self._name)
        try:
            await self._on_elected()
        finally:
            self.decided.set()
        while True:  # hold the lock; notice at once when its connection is gone
            await asyncio.sleep(self._poll)
            async with asyncio.timeout(self._poll * 3):
                await self._connection.fetchval("SELECT 1")

    async def _step_down(self, *, lost: bool = False) -> None:
        if not self.leading:
            return
        self.leading = False
        self.elected.clear()
        log.info("leader_stepped_down", instance=self._name)
        try:
            await self._on_deposed(lost)
        except Exception:
            log.exception("leader_step_down_failed")

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)
