"""The SQLite change feed: reads the trigger-written `change_log` in sequence order.

Waking up: another process's commit gives no signal inside SQLite, so the feed watches the
database's directory with inotify and reads as soon as the WAL file is written, then again
after each of `REREAD_SECONDS` (0.5 and 2 ms) for a commit the writer had not made visible yet.
Should a commit still be invisible, each inotify event also schedules one re-read
`settle_seconds` later. A slow fallback read every `fallback_poll_seconds` covers platforms
without inotify and missed events; it is a safety net, not the delivery path.

The read itself goes through aiosqlite directly rather than SQLAlchemy: it runs after every
commit, and there one hop to aiosqlite's thread instead of six halved the CPU the service
needs to follow 20 commits a second (bench/run.py --scenarios livedash --sockets 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.changefeed.base import Change, Op, Writer
from livedash.changefeed.positions import load_position, store_position
from livedash.changefeed.rows import decode_row, parse_timestamp
from livedash.errors import ChangeFeedError
from livedash.store.engine import SQLITE_BUSY_TIMEOUT_MS, create_engine

log = structlog.get_logger(__name__)

REREAD_SECONDS = (0.0005, 0.002)
"""The reads after the first write to the WAL file of a burst, besides the one at once. A
commit becomes visible when the writer updates the WAL index (shared memory, which inotify does
not see) after its last frame, and its first frame wakes the feed: of 100 commits 50 ms apart,
the read at once found 21, and the commits were read 0.4-1.4 ms after they were made at the
median (about 1.5 ms at p90) in five runs. With one read at 2 ms, as before, it was 2.6 ms."""

_OPS = {"I": Op.INSERT, "U": Op.UPDATE, "D": Op.DELETE}

_FETCH = (
    "SELECT seq, table_name, op, old_row, new_row, committed_at FROM change_log "
    "WHERE seq > ? ORDER BY seq LIMIT ?"
)
_PRUNE = text(
    "DELETE FROM change_log WHERE seq <= (SELECT MIN(position) FROM feed_positions) - :keep"
)
_SEQUENCE = text("SELECT seq FROM sqlite_sequence WHERE name = 'change_log'")


def _decode(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    loaded = json.loads(raw)
    return loaded if isinstance(loaded, dict) else None


class SqliteChangeFeed:
    """Changes captured by the SQLite triggers, for one named consumer."""

    def __init__(
        self,
        database_url: str,
        consumer: str,
        *,
        batch_size: int = 500,
        fallback_poll_seconds: float = 1.0,
        settle_seconds: float = 0.02,
        keep_rows: int = 10_000,
        **_postgres_only: Any,
    ) -> None:
        self._url = database_url
        self._consumer = consumer
        self._batch_size = batch_size
        self._fallback_poll = fallback_poll_seconds
        self._settle = settle_seconds
        self._keep_rows = keep_rows
        self._wake = asyncio.Event()
        self.caught_up = asyncio.Event()
        """Set while the feed has delivered everything committed and waits for more."""
        self._reader: AsyncEngine | None = None
        self._fetcher: aiosqlite.Connection | None = None
        self._writer: AsyncEngine | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._settle_handle: asyncio.TimerHandle | None = None
        self._rereads: list[asyncio.TimerHandle] = []
        self._last_pruned = 0
        database = make_url(database_url).database
        self._database_path = (
            Path(os.path.abspath(database)) if database and database != ":memory:" else None
        )

    async def __aenter__(self) -> SqliteChangeFeed:
        self._reader = create_engine(self._url, pool_size=1, max_overflow=0)
        self._writer = create_engine(self._url, writer=True, pool_size=1, max_overflow=0)
        # The read that follows every commit, on aiosqlite directly: one statement in
        # autocommit (its own snapshot) and one hop to aiosqlite's thread, where the same read
        # through SQLAlchemy took six and half of the service's CPU at 20 commits/s.
        self._fetcher = await aiosqlite.connect(
            self._database_path or ":memory:", isolation_level=None
        )
        await self._fetcher.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if self._database_path is not None:
            self._watcher = asyncio.create_task(self._watch(self._database_path))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for handle in (self._settle_handle, *self._rereads):
            if handle is not None:
                handle.cancel()
        if self._fetcher is not None:
            await self._fetcher.close()
        for engine in (self._reader, self._writer):
            if engine is not None:
                await engine.dispose()

    async def batches(self) -> AsyncIterator[list[Change]]:
        """Batches after the confirmed position; waits for a commit when none are pending."""
        position = await self.confirmed_position()
        while True:
            self._wake.clear()
            batch, last_read = await self.read_after(position)
            more = last_read - position >= self._batch_size  # seq may skip: at worst a read more
            if last_read > position:
                self.caught_up.clear()
                position = last_read
                if batch:
                    yield batch
                if more:
                    continue
                # A short batch was all there was when it was read; a commit since then has
                # set the wake-up, so no second read just to find nothing.
            self.caught_up.set()
            with contextlib.suppress(TimeoutError):
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation
                # that arrives as the event is set, and the reader would wait on forever.
                async with asyncio.timeout(self._fallback_poll):
                    await self._wake.wait()

    def notify(self) -> None:
        """Read now: for writers in this process that know they just committed."""
        self._wake.set()

    async def confirm(self, position: int, also: Writer | None = None) -> None:
        """Store `position` as applied (with `also`'s writes, atomically); prune now and then."""
        async with self._engine(self._writer).begin() as connection:
            if also is not None:
                await also(connection)
            await store_position(connection, self._consumer, position)
            if position - self._last_pruned >= self._keep_rows:
                await connection.execute(_PRUNE, {"keep": self._keep_rows})
                self._last_pruned = position

    async def confirmed_position(self) -> int:
        """The position last stored by `confirm`, or 0."""
        async with self._engine(self._reader).connect() as connection:
            return await load_position(connection, self._consumer)

    async def position_in(self, connection: AsyncConnection) -> int:
        """The last sequence number the read transaction on `connection` can see."""
        # sqlite_sequence, not MAX(seq): the log may have been pruned down to nothing.
        return int(await connection.scalar(_SEQUENCE) or 0)

    def start_settled(self) -> bool:
        """Always: the start-up count's position is exact."""
        return True

    def counted_at_start(self, change: Change) -> bool:
        """Never: the start-up count's position is exact on SQLite (one writer at a time)."""
        return False

    def _engine(self, engine: AsyncEngine | None) -> AsyncEngine:
        if engine is None:
            raise ChangeFeedError("the change feed is used outside `async with`")
        return engine

    async def read_after(self, after: int) -> tuple[list[Change], int]:
        """One batch after `after`, without waiting, and the last position it read."""
        if self._fetcher is None:
            raise ChangeFeedError("the change feed is used outside `async with`")
        rows = list(await self._fetcher.execute_fetchall(_FETCH, (after, self._batch_size)))
        changes: list[Change] = []
        for row in rows:
            try:
                changes.append(self._change(*row))
            except (KeyError, TypeError, ValueError) as error:
                # Only our triggers write the log; a row we cannot read would stall the feed
                # forever, so it is reported loudly and passed over.
                log.error("changefeed_unreadable_change", seq=row[0], error=str(error))
        return changes, int(rows[-1][0]) if rows else after

    def _change(
        self, seq: int, table: str, op: str, old: Any, new: Any, committed_at: Any
    ) -> Change:
        old_row, new_row = _decode(old), _decode(new)
        return Change(
            position=int(seq),
            table=table,
            op=_OPS[op],
            old=decode_row(table, old_row) if old_row is not None else None,
            new=decode_row(table, new_row) if new_row is not None else None,
            committed_at=parse_timestamp(committed_at) or datetime.now(UTC).replace(tzinfo=None),
        )

    async def _watch(self, database: Path) -> None:
        try:
            from asyncinotify import Inotify, Mask
        except (ImportError, OSError):  # not Linux: the fallback read is all there is
            log.warning("changefeed_inotify_unavailable", fallback_seconds=self._fallback_poll)
            return
        prefix = database.name
        loop = asyncio.get_running_loop()
        with Inotify() as inotify:
            inotify.add_watch(
                database.parent, Mask.MODIFY | Mask.CREATE | Mask.MOVED_TO | Mask.CLOSE_WRITE
            )
            async for event in inotify:
                if event.name is None or not str(event.name).startswith(prefix):
                    continue
                self._wake.set()
                if not self._rereads:
                    last = len(REREAD_SECONDS) - 1
                    self._rereads = [
                        loop.call_later(delay, self._reread, n == last)
                        for n, delay in enumerate(REREAD_SECONDS)
                    ]
                if self._settle_handle is not None:
                    self._settle_handle.cancel()
                self._settle_handle = loop.call_later(self._settle, self._wake.set)

    def _reread(self, last: bool) -> None:
        if last:
            self._rereads = []
        self._wake.set()
