"""The PostgreSQL change feed: logical decoding from a replication slot, with wal2json.

Why wal2json through the `pg_logical_slot_peek_changes` function rather than pgoutput over a
replication connection: it runs on an ordinary connection of the driver we already use
(asyncpg), its output is JSON with the column names and the whole old row, and the slot's
progress is moved explicitly with `pg_replication_slot_advance`, only after the changes were
applied and stored. Peeking re-decodes the WAL since the last advance, so the position is
advanced every confirm interval. A wake-up comes from `NOTIFY livedash_changes`, which the
watched tables send at commit (migration 0005); the slot carries the data.

Pages: a peek always starts at the slot's position, so a page of `batch_size` rows is taken
after the rows already handled since the slot last moved (the peek's row limit grows by one
page each time). Every transaction in the database is a begin and a commit row in the slot,
even when it changed no watched table, so a page may decode to no change at all and the next
one must still be read; when everything delivered is stored, such a page moves the slot on.

Positions: every change gets `(commit LSN << 16) | ordinal in its transaction`, so positions
grow in commit order and each change has its own. The slot is advanced to the commit LSN of
the last applied transaction; PostgreSQL then delivers that transaction once more after a
restart, and the stored position (`feed_positions`) skips it: at-least-once, deduplicated.

Start-up: the metric engine counts the rows in one REPEATABLE READ transaction. Which
transactions that snapshot saw is not a prefix of the WAL (a commit record can be written
before the transaction becomes visible), so the feed remembers the snapshot and tells the
pipeline, by transaction id, which delivered changes the rows already contained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.changefeed.base import Change, Op, Writer
from livedash.changefeed.positions import load_position, store_position
from livedash.changefeed.rows import decode_row, parse_timestamp
from livedash.errors import ChangeFeedError
from livedash.store.capture import NOTIFY_CHANNEL
from livedash.store.engine import create_engine, libpq_dsn
from livedash.store.models import WATCHED_TABLES, Base

log = structlog.get_logger(__name__)

PLUGIN = "wal2json"
ORDINAL_BITS = 16
FLUSH_RETRY_SECONDS = 0.02
_XID_MASK = 0xFFFFFFFF
_OPS = {"I": Op.INSERT, "U": Op.UPDATE, "D": Op.DELETE}
# Never copied out of the WAL: password hashes stay in the users table.
_NOT_CAPTURED = frozenset({"password_hash"})

_SLOT = text(
    "SELECT slot_type, plugin, database, database = current_database(), "
    "confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = :slot"
)
_DUPLICATE_OBJECT = "42710"
_UNDEFINED_FILE = "58P01"
_PEEK = text(
    "SELECT xid::text, data FROM pg_logical_slot_peek_changes("
    "CAST(:slot AS name), CAST(CAST(:upto AS text) AS pg_lsn), :limit, "
    "'format-version', '2', 'include-timestamp', '1', 'include-xids', '1', "
    "'include-lsn', '1', 'add-tables', CAST(:tables AS text))"
)


def lsn_to_int(lsn: str) -> int:
    """`16/B374D848` as an integer."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def commit_lsn(position: int) -> int:
    """The commit LSN of the transaction that `position` belongs to."""
    return position >> ORDINAL_BITS


def _sqlstate(error: DBAPIError) -> str | None:
    """The SQLSTATE of a database error raised through asyncpg, if it has one."""
    original = error.orig
    code = getattr(original, "sqlstate", None) or getattr(
        getattr(original, "__cause__", None), "sqlstate", None
    )
    return str(code) if code is not None else None


def _precedes(a: int, b: int) -> bool:
    """32-bit transaction id `a` is older than `b` (modulo wraparound, as PostgreSQL does)."""
    return ((a - b) & _XID_MASK) >= 0x80000000


@dataclass(frozen=True, slots=True)
class StartSnapshot:
    """The rows snapshot that the engine counted at start-up."""

    xmin: int
    xmax: int
    in_progress: frozenset[int]
    lsn_after: int  # WAL insert position read after the snapshot was taken

    @classmethod
    def parse(cls, snapshot: str, lsn_after: str) -> StartSnapshot:
        xmin, xmax, xip = snapshot.split(":")
        return cls(
            int(xmin) & _XID_MASK,
            int(xmax) & _XID_MASK,
            frozenset(int(xid) & _XID_MASK for xid in xip.split(",") if xid),
            lsn_to_int(lsn_after),
        )

    def saw(self, xid: int) -> bool:
        """The transaction `xid` had committed and was visible to this snapshot."""
        if _precedes(xid, self.xmin):
            return True
        return _precedes(xid, self.xmax) and xid not in self.in_progress


@dataclass(slots=True)
class _Transaction:
    xid: int
    committed_at: datetime
    changes: list[tuple[str, Op, dict[str, Any] | None, dict[str, Any] | None]]


def _captured_columns(table: str) -> frozenset[str]:
    columns = Base.metadata.tables[table].columns if table in Base.metadata.tables else ()
    return frozenset(column.name for column in columns) - _NOT_CAPTURED


_CAPTURED = {table: _captured_columns(table) for table in WATCHED_TABLES}


def _row(table: str, columns: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if columns is None:
        return None
    keep = _CAPTURED.get(table, frozenset())
    return decode_row(
        table, {column["name"]: column["value"] for column in columns if column["name"] in keep}
    )


class PostgresChangeFeed:
    """Changes decoded from the `slot` replication slot, for one named consumer."""

    def __init__(
        self,
        database_url: str,
        consumer: str,
        *,
        slot: str = "livedash",
        batch_size: int = 500,
        fallback_poll_seconds: float = 1.0,
        heartbeat_seconds: float = 10.0,
        **_sqlite_only: Any,
    ) -> None:
        self._url = database_url
        self._consumer = consumer
        self.slot = slot
        self._batch_size = batch_size
        self._fallback_poll = fallback_poll_seconds
        self._heartbeat = heartbeat_seconds
        self._tables = ",".join(f"public.{table}" for table in WATCHED_TABLES)
        self._wake = asyncio.Event()
        self.caught_up = asyncio.Event()
        """Set while the feed has delivered everything committed and waits for more."""
        self._engine: AsyncEngine | None = None
        self._listener: asyncpg.Connection | None = None
        self._slot_lock = asyncio.Lock()  # a slot serves one call at a time
        self._start: StartSnapshot | None = None
        self._delivered = 0
        self._durable = 0
        self._slot_lsn = 0
        # Rows at the start of the slot already handled, counted while it stood at `_seen_from`.
        self._seen_rows = 0
        self._seen_from = -1
        self._read_rows = 0
        self._read_from = -1
        self._read_end = 0  # the commit LSN of the last transaction read
        self._last_heartbeat = time.monotonic()
        self._unflushed = False

    async def __aenter__(self) -> PostgresChangeFeed:
        self._engine = create_engine(self._url, pool_size=2, max_overflow=2, pool_pre_ping=True)
        await self.ensure_slot()
        await self._listen()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None
        if self._engine is not None:
            await self._engine.dispose()

    def _database(self) -> AsyncEngine:
        if self._engine is None:
            raise ChangeFeedError("the change feed is used outside `async with`")
        return self._engine

    async def ensure_slot(self) -> None:
        """Create the replication slot if it does not exist yet."""
        async with self._database().connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            for _attempt in range(2):
                row = (await autocommit.execute(_SLOT, {"slot": self.slot})).first()
                if row is not None:
                    break
                try:
                    created = await autocommit.scalar(
                        text("SELECT lsn::text FROM pg_create_logical_replication_slot(:slot, :p)"),
                        {"slot": self.slot, "p": PLUGIN},
                    )
                except DBAPIError as error:
                    code = _sqlstate(error)
                    if code == _DUPLICATE_OBJECT:
                        continue  # another process created it meanwhile: check whose it is
                    if code == _UNDEFINED_FILE:
                        raise ChangeFeedError(
                            f"the {PLUGIN} output plugin is not installed on the database "
                            f"server ({error.orig}); install it (Debian/Ubuntu: apt-get install "
                            f"postgresql-<major version>-{PLUGIN}) and see `livedash doctor`"
                        ) from error
                    raise
                log.info("changefeed_slot_created", slot=self.slot, lsn=created)
                self._slot_lsn = lsn_to_int(str(created))
                return
            if row is None:
                raise ChangeFeedError(f"replication slot {self.slot!r} cannot be created")
            slot_type, plugin, database, same_database, confirmed = row
            if slot_type != "logical":
                whose = f"is a {slot_type} replication slot"
            elif plugin != PLUGIN:
                whose = f"decodes with {plugin!r}, not {PLUGIN!r}"
            elif not same_database:
                whose = f"belongs to database {database!r}"
            else:
                self._slot_lsn = lsn_to_int(confirmed) if confirmed else 0
                return
            raise ChangeFeedError(
                f"replication slot {self.slot!r} {whose}: it is not this feed's slot; "
                "set LIVEDASH_FEED_SLOT to another name (or drop that slot if it is unused)"
            )

    async def _listen(self) -> None:
        try:
            self._listener = await asyncpg.connect(libpq_dsn(self._url))
            await self._listener.add_listener(NOTIFY_CHANNEL, self._notified)
        except Exception as error:  # asyncpg raises more than PostgresError on a bad link
            # The fallback read still delivers everything; only latency suffers.
            log.warning("changefeed_listen_failed", error=str(error))
            self._listener = None

    def _notified(self, *_args: object) -> None:
        self._wake.set()

    def notify(self) -> None:
        """Read now: for writers in this process that know they just committed."""
        self._wake.set()

    # -- the contract ----------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[list[Change]]:
        """Whole transactions after the confirmed position, in commit order."""
        self._durable = max(self._durable, await self.confirmed_position())
        self._delivered = max(self._delivered, self._durable)
        while True:
            if self._listener is None or self._listener.is_closed():
                await self._listen()
            self._wake.clear()
            changes, complete_to = await self.read()
            fresh = [change for change in changes if change.position > self._delivered]
            # Every row read is now handled: the next page starts after them (while the slot
            # stays where it was read from).
            self._seen_rows, self._seen_from = self._read_rows, self._read_from
            if fresh:
                self.caught_up.clear()
                self._delivered = fresh[-1].position
                yield fresh
                continue
            if complete_to is None:
                # A full page without anything new (other tables' transactions, or changes
                # delivered before): read the next one. Once all delivered is stored, the slot
                # may move past the page, so a long run of them is not decoded over and over.
                if self._delivered <= self._durable:
                    await self._advance(self._read_end)
                continue
            if self._start is not None and complete_to >= self._start.lsn_after:
                self._start = None  # everything the start-up snapshot could hold is delivered
            self.caught_up.set()
            await self._heartbeat_to(complete_to)
            wait = min(self._fallback_poll, self._heartbeat)
            if self._unflushed:
                # A transaction committed without waiting for its WAL to reach disk
                # (synchronous_commit=off) is visible and notified before it can be decoded.
                wait = min(wait, FLUSH_RETRY_SECONDS)
            with contextlib.suppress(TimeoutError):
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation
                # that arrives as the event is set, and the reader would wait on forever.
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def read(self) -> tuple[list[Change], int | None]:
        """The next page of changes in the slot, and the LSN up to which the slot is read.

        The LSN is None when the page is full (more may follow). The page holds the rows that
        `batches` already handled since the slot last moved, and `batch_size` rows after them.
        """
        async with self._slot_lock, self._database().connect() as connection:
            read_from = self._slot_lsn
            handled = self._seen_rows if self._seen_from == read_from else 0
            limit = handled + self._batch_size
            written, flushed = (
                await connection.execute(
                    text(
                        "SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text"
                    )
                )
            ).one()
            upto = str(flushed)  # decoding never reads past the flushed WAL
            self._unflushed = lsn_to_int(written) > lsn_to_int(flushed)
            result = await connection.execute(
                _PEEK,
                {
                    "slot": self.slot,
                    "upto": upto,
                    "limit": limit,
                    "tables": self._tables,
                },
            )
            rows = result.all()
            await connection.rollback()
        self._read_rows, self._read_from = len(rows), read_from
        changes = self._decode(rows)
        return changes, (lsn_to_int(upto) if len(rows) < limit else None)

    def _decode(self, rows: Sequence[Any]) -> list[Change]:
        changes: list[Change] = []
        current: _Transaction | None = None
        self._read_end = 0
        for xid, data in rows:
            try:
                message = json.loads(data)
                action = message["action"]
                if action == "B":
                    stamp = parse_timestamp(message.get("timestamp"))
                    current = _Transaction(
                        int(xid), stamp or datetime.now(UTC).replace(tzinfo=None), []
                    )
                elif action in _OPS and current is not None:
                    table = message["table"]
                    current.changes.append(
                        (
                            table,
                            _OPS[action],
                            _row(table, message.get("identity")),
                            _row(table, message.get("columns")),
                        )
                    )
                elif action == "C":
                    self._read_end = lsn_to_int(message["lsn"])
                    if current is not None:
                        changes.extend(self._transaction(current, self._read_end))
                    current = None
                elif action == "T":
                    log.error("changefeed_truncate_seen", table=message.get("table"))
            except (KeyError, TypeError, ValueError) as error:
                log.error("changefeed_unreadable_change", xid=xid, error=str(error))
        return changes

    def _transaction(self, transaction: _Transaction, commit: int) -> list[Change]:
        if len(transaction.changes) >= 1 << ORDINAL_BITS:
            log.warning("changefeed_large_transaction", changes=len(transaction.changes))
        base = commit << ORDINAL_BITS
        return [
            Change(
                position=base + ordinal,
                table=table,
                op=op,
                old=old if op is not Op.INSERT else None,
                new=new if op is not Op.DELETE else None,
                committed_at=transaction.committed_at,
                transaction=transaction.xid,
            )
            for ordinal, (table, op, old, new) in enumerate(transaction.changes, start=1)
        ]

    async def confirm(self, position: int, also: Writer | None = None) -> None:
        """Store `position` with `also`'s writes, then let the slot release the WAL before it."""
        async with self._database().begin() as connection:
            if also is not None:
                await also(connection)
            await store_position(connection, self._consumer, position)
        self._durable = max(self._durable, position)
        await self._advance(commit_lsn(position))

    async def _advance(self, lsn: int) -> None:
        if lsn <= self._slot_lsn:
            return
        async with self._slot_lock, self._database().connect() as connection:
            if lsn <= self._slot_lsn:
                return  # moved further while this call waited; a slot never moves back
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(
                text(
                    "SELECT pg_replication_slot_advance(:slot, CAST(CAST(:lsn AS text) AS pg_lsn))"
                ),
                {"slot": self.slot, "lsn": int_to_lsn(lsn)},
            )
        self._slot_lsn = lsn

    async def _heartbeat_to(self, lsn: int) -> None:
        # On a quiet database (or one whose traffic is all in other tables) nothing we apply
        # moves the slot, and it would hold the server's WAL forever: once everything delivered
        # is stored, move the slot to where the last complete read ended.
        if self._delivered > self._durable:
            return
        if time.monotonic() - self._last_heartbeat < self._heartbeat:
            return
        self._last_heartbeat = time.monotonic()
        await self._advance(lsn)

    async def confirmed_position(self) -> int:
        """The position last stored by `confirm`, or 0."""
        async with self._database().connect() as connection:
            return await load_position(connection, self._consumer)

    async def position_in(self, connection: AsyncConnection) -> int:
        """Make `connection`'s transaction one snapshot, and remember what it sees.

        Must be the transaction's first statement. Returns the stored position: changes
        after it are delivered, and `counted_at_start` tells which of them the rows contain.
        """
        await connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        snapshot, lsn = (
            await connection.execute(
                # The insert position, not the written one: a transaction committed without
                # waiting for its WAL (synchronous_commit=off) is visible before its commit
                # record is written, but never before it is inserted.
                text("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text")
            )
        ).one()
        self._start = StartSnapshot.parse(snapshot, lsn)
        return await self.confirmed_position()

    def start_settled(self) -> bool:
        """Every change that the start-up count may hold has been delivered (and filtered)."""
        return self._start is None

    def counted_at_start(self, change: Change) -> bool:
        """The start-up count already contains `change` (its transaction was visible)."""
        start = self._start
        if start is None:
            return False
        if commit_lsn(change.position) > start.lsn_after:
            self._start = None  # every later commit is after the snapshot
            return False
        return start.saw(change.transaction)

    async def slot_status(self) -> dict[str, Any]:
        """The slot's lag behind the server's WAL, and whether its WAL is still kept."""
        async with self._database().connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT active, wal_status, safe_wal_size, "
                        "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
                        "confirmed_flush_lsn::text FROM pg_replication_slots "
                        "WHERE slot_name = :slot"
                    ),
                    {"slot": self.slot},
                )
            ).first()
        if row is None:
            return {"slot": self.slot, "exists": False}
        active, wal_status, safe_wal_size, lag, confirmed = row
        return {
            "slot": self.slot,
            "exists": True,
            "active": bool(active),
            "wal_status": wal_status,
            "safe_wal_size_bytes": safe_wal_size,
            "lag_bytes": int(lag or 0),
            "confirmed_flush_lsn": confirmed,
        }
