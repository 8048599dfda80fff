"""The PostgreSQL change feed: logical decoding of a replication slot, streamed, with wal2json.

Streaming: the feed holds a replication connection on the slot (`replication.py`), and the
server sends each transaction as it commits; there is no polling, no wake-up message and no
re-decoding. wal2json's output is JSON with the column names and the whole old row. What was
applied and stored is reported back as the slot's flushed position (replication feedback),
only after it was stored, so the server keeps the WAL of everything not yet stored.

Positions: every change gets `(commit LSN << 16) | ordinal in its transaction`, so positions
grow in commit order and each change has its own. The reported position is the commit LSN of
the last stored transaction; PostgreSQL then sends that transaction once more after a
restart, and the stored position (`feed_positions`) skips it: at-least-once, deduplicated.

One reader: a slot streams to one connection at a time, and the leader alone reads the feed,
so a new reader ends the session of any previous one (a deposed or frozen leader).

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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.changefeed.base import Change, Op, Writer
from livedash.changefeed.positions import load_position, store_position
from livedash.changefeed.replication import ReplicationStream, SlotInUse
from livedash.changefeed.rows import decode_row, parse_timestamp
from livedash.errors import ChangeFeedError
from livedash.store.engine import create_engine, libpq_dsn
from livedash.store.models import WATCHED_TABLES, Base

log = structlog.get_logger(__name__)

PLUGIN = "wal2json"
ORDINAL_BITS = 16
TAKEOVER_WAIT_SECONDS = 5.0  # for a previous reader's session to end
SLOT_CREATION_WAIT_SECONDS = 60.0  # for another feed's slot to be ready
SLOT_CREATION_POLL_SECONDS = 0.05
CATCH_UP_CHECK_SECONDS = 0.1  # how stale `caught_up`'s idea of the server's WAL may be
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


def _being_created(slot: Any) -> bool:
    """Whether a row of `_SLOT` is a logical slot another session is still creating: listed
    at once, it names its output plugin a moment later, and has a confirmed position only once
    its snapshot is built (which waits for the transactions running then)."""
    slot_type, plugin, _database, _same_database, confirmed = slot
    return bool(slot_type == "logical" and (not plugin or confirmed is None))


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
        heartbeat_seconds: float = 10.0,
        **_sqlite_only: Any,
    ) -> None:
        self._url = database_url
        self._consumer = consumer
        self.slot = slot
        self._batch_size = batch_size
        self._heartbeat = heartbeat_seconds
        self._tables = ",".join(f"public.{table}" for table in WATCHED_TABLES)
        self._wake = asyncio.Event()
        self.caught_up = asyncio.Event()
        """Set while the feed has delivered every change committed before it last asked the
        server (`notify` asks; otherwise at most `CATCH_UP_CHECK_SECONDS` ago)."""
        self._engine: AsyncEngine | None = None
        self._stream: ReplicationStream | None = None
        self._start: StartSnapshot | None = None
        self._delivered = 0
        self._durable = 0
        self._flushed = 0  # the LSN last reported to the server as stored
        self._current: _Transaction | None = None  # a transaction read in part
        self._check_due = True
        self._checked_at = 0.0
        self._check_lsn = 0  # the server's flushed WAL when last asked
        self._last_heartbeat = time.monotonic()

    async def __aenter__(self) -> PostgresChangeFeed:
        self._engine = create_engine(self._url, pool_size=2, max_overflow=2, pool_pre_ping=True)
        await self.ensure_slot()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._close_stream()
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
            deadline = time.monotonic() + SLOT_CREATION_WAIT_SECONDS
            waiting = False
            while True:
                row = (await autocommit.execute(_SLOT, {"slot": self.slot})).first()
                if row is None:
                    if await self._create_slot(autocommit):
                        return
                    # Another process created it meanwhile: check whose it is.
                elif not _being_created(row):
                    break
                elif not waiting:
                    log.info("changefeed_slot_being_created", slot=self.slot)
                    waiting = True
                if time.monotonic() >= deadline:
                    raise ChangeFeedError(
                        f"replication slot {self.slot!r} was still being created by another "
                        f"process after {SLOT_CREATION_WAIT_SECONDS:g} s"
                    )
                await asyncio.sleep(SLOT_CREATION_POLL_SECONDS)
            slot_type, plugin, database, same_database, _confirmed = row
            if slot_type != "logical":
                whose = f"is a {slot_type} replication slot"
            elif plugin != PLUGIN:
                whose = f"decodes with {plugin!r}, not {PLUGIN!r}"
            elif not same_database:
                whose = f"belongs to database {database!r}"
            else:
                return
            raise ChangeFeedError(
                f"replication slot {self.slot!r} {whose}: it is not this feed's slot; "
                "set LIVEDASH_FEED_SLOT to another name (or drop that slot if it is unused)"
            )

    async def _create_slot(self, autocommit: AsyncConnection) -> bool:
        """Create the slot; False if another process created one of that name first."""
        try:
            created = await autocommit.scalar(
                text("SELECT lsn::text FROM pg_create_logical_replication_slot(:slot, :p)"),
                {"slot": self.slot, "p": PLUGIN},
            )
        except DBAPIError as error:
            code = _sqlstate(error)
            if code == _DUPLICATE_OBJECT:
                return False
            if code == _UNDEFINED_FILE:
                raise ChangeFeedError(
                    f"the {PLUGIN} output plugin is not installed on the database "
                    f"server ({error.orig}); install it (Debian/Ubuntu: apt-get install "
                    f"postgresql-<major version>-{PLUGIN}) and see `livedash doctor`"
                ) from error
            raise
        log.info("changefeed_slot_created", slot=self.slot, lsn=created)
        return True

    def notify(self) -> None:
        """Look for new changes now, and tell by `caught_up` whether every change committed
        before this call has been delivered."""
        self._check_due = True
        self._wake.set()

    # -- the contract ----------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[list[Change]]:
        """Whole transactions after the confirmed position, in commit order."""
        self._durable = max(self._durable, await self.confirmed_position())
        self._delivered = max(self._delivered, self._durable)
        stream = await self._open_stream()
        try:
            while True:
                self._wake.clear()
                changes, drained = self._read(stream)
                fresh = [change for change in changes if change.position > self._delivered]
                if fresh:
                    self.caught_up.clear()
                    self._delivered = fresh[-1].position
                    yield fresh
                    continue
                if not drained:
                    continue  # a full batch of changes delivered before (a restart): read on
                if self._current is None:
                    await self._idle(stream)
                await self._readable(stream)
        finally:
            if self._stream is stream:
                self._close_stream()

    async def _open_stream(self) -> ReplicationStream:
        self._close_stream()  # a previous `batches` that ended by an error, not closed yet
        self._current = None
        self._check_due = True
        try:
            stream = await ReplicationStream.open(libpq_dsn(self._url), self.slot, self._tables)
        except SlotInUse:
            # The slot serves one connection. The leader alone reads the feed, so the holder
            # is a deposed leader (frozen, or not yet told) or our own connection still
            # closing: end its session, which also fences a deposed leader off the slot.
            await self._end_other_reader()
            stream = await ReplicationStream.open(libpq_dsn(self._url), self.slot, self._tables)
        self._stream = stream
        self._flushed = 0
        self._report_stored(stream)
        return stream

    async def _end_other_reader(self) -> None:
        async with self._database().connect() as connection:
            ended = await connection.scalar(
                text(
                    "SELECT pg_terminate_backend(active_pid, :wait_ms) FROM pg_replication_slots "
                    "WHERE slot_name = :slot AND active_pid IS NOT NULL"
                ),
                {"slot": self.slot, "wait_ms": int(TAKEOVER_WAIT_SECONDS * 1000)},
            )
            await connection.rollback()
        log.warning("changefeed_slot_taken_over", slot=self.slot, ended=ended)

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _read(self, stream: ReplicationStream) -> tuple[list[Change], bool]:
        """Complete transactions already received (up to about a batch), and whether the
        stream held no more."""
        changes: list[Change] = []
        while len(changes) < self._batch_size:
            payload = stream.read()
            if payload is None:
                return changes, True
            changes += self._decode(payload)
        return changes, False

    def _decode(self, payload: str) -> list[Change]:
        """The changes of the transaction that `payload` commits, if it is a commit."""
        try:
            message = json.loads(payload)
            action = message["action"]
            if action == "B":
                stamp = parse_timestamp(message.get("timestamp"))
                self._current = _Transaction(
                    int(message["xid"]), stamp or datetime.now(UTC).replace(tzinfo=None), []
                )
            elif action in _OPS and self._current is not None:
                table = message["table"]
                self._current.changes.append(
                    (
                        table,
                        _OPS[action],
                        _row(table, message.get("identity")),
                        _row(table, message.get("columns")),
                    )
                )
            elif action == "C":
                current, self._current = self._current, None
                if current is not None:
                    return self._transaction(current, lsn_to_int(message["lsn"]))
            elif action == "T":
                log.error("changefeed_truncate_seen", table=message.get("table"))
        except (KeyError, TypeError, ValueError) as error:
            # Not the payload itself: it carries the rows' values (patients' names).
            log.error("changefeed_unreadable_change", size=len(payload), error=str(error))
        return []

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

    async def _idle(self, stream: ReplicationStream) -> None:
        """Everything received is delivered: tell whether that is everything committed, settle
        the start-up snapshot, and keep the slot moving on a quiet database."""
        now = time.monotonic()
        if self._check_due or now - self._checked_at >= CATCH_UP_CHECK_SECONDS:
            # What the server has flushed: every commit before it has been sent once the
            # stream's position passes it (only this tells a stream that is merely slow).
            self._check_due, self._checked_at = False, now
            self._check_lsn = await self._server_flushed()
        wal_end = stream.wal_end
        if self._start is not None and wal_end >= self._start.lsn_after:
            self._start = None  # everything the start-up snapshot could hold is delivered
        behind = wal_end < self._check_lsn or self._start is not None
        if behind:
            self.caught_up.clear()
        else:
            self.caught_up.set()
        if now - self._last_heartbeat >= self._heartbeat:
            self._last_heartbeat = now
            behind = True  # and learn the server's position for the next heartbeat
            # Nothing we apply moves the slot while the traffic is all in other tables: once
            # everything delivered is stored, report what was read as stored too, or the slot
            # would hold the server's WAL forever.
            if self._delivered <= self._durable and wal_end > self._flushed:
                stream.flushed(wal_end)
                self._flushed = wal_end
        if behind:
            stream.ask_position()  # its answer wakes `_readable`

    async def _server_flushed(self) -> int:
        """The server's flushed WAL position; while the start-up snapshot is not settled, first
        have the WAL flushed past it."""
        async with self._database().connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            flushed = lsn_to_int(
                str(await autocommit.scalar(text("SELECT pg_current_wal_flush_lsn()::text")))
            )
            start = self._start
            if start is not None and flushed < start.lsn_after:
                # WAL that no commit followed (a running-transactions record, say) is flushed
                # only by the next commit: make one, so an idle database settles too.
                await autocommit.execute(
                    text("SELECT pg_logical_emit_message(true, 'livedash', 'flush')")
                )
                flushed = lsn_to_int(
                    str(await autocommit.scalar(text("SELECT pg_current_wal_flush_lsn()::text")))
                )
        return flushed

    async def _readable(self, stream: ReplicationStream) -> None:
        """Wait for the server to send something, `notify`, or the next heartbeat."""
        loop = asyncio.get_running_loop()
        # Watched only while waiting: a socket left readable while the batch is applied would
        # wake the loop on every turn.
        loop.add_reader(stream.fileno(), self._wake.set)
        try:
            with contextlib.suppress(TimeoutError):
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation
                # that arrives as the event is set, and the reader would wait on forever.
                async with asyncio.timeout(self._heartbeat):
                    await self._wake.wait()
        finally:
            loop.remove_reader(stream.fileno())

    async def confirm(self, position: int, also: Writer | None = None) -> None:
        """Store `position` with `also`'s writes, then let the slot release the WAL before it."""
        async with self._database().begin() as connection:
            if also is not None:
                await also(connection)
            await store_position(connection, self._consumer, position)
        self._durable = max(self._durable, position)
        if self._stream is not None:
            with contextlib.suppress(ChangeFeedError):  # `batches` sees the broken stream
                self._report_stored(self._stream)

    def _report_stored(self, stream: ReplicationStream) -> None:
        # The commit LSN of the last stored transaction: after a restart the server sends
        # that transaction once more, and the stored position skips it.
        stored = commit_lsn(self._durable)
        if stored > self._flushed:
            stream.flushed(stored)
            self._flushed = stored

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
