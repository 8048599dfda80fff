"""A logical replication stream of one slot, read from the event loop without blocking.

psycopg2's `LogicalReplicationConnection` is the maintained Python client of PostgreSQL's
streaming replication protocol (asyncpg and psycopg 3 have none). Connecting and
`START_REPLICATION` are blocking calls and run in a thread; after that, `read_message` only
takes what the socket already holds, so the feed reads on the event loop and waits for the
socket to become readable.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import psycopg2
import psycopg2.errors
import psycopg2.extras

from livedash.errors import ChangeFeedError

WAL2JSON_OPTIONS: Final = {
    "format-version": "2",
    "include-timestamp": "1",
    "include-xids": "1",
    "include-lsn": "1",
}


class SlotInUse(ChangeFeedError):
    """Another connection streams the slot (a previous leader, or our own closing one)."""

    def __init__(self, slot: str, error: psycopg2.Error) -> None:
        super().__init__(f"replication slot {slot!r} is in use by another connection: {error}")
        self.slot = slot


class ReplicationStream:
    """The decoded messages of `slot`, from its confirmed position on."""

    def __init__(
        self, connection: psycopg2.extensions.connection, cursor: psycopg2.extras.ReplicationCursor
    ) -> None:
        self._connection = connection
        self._cursor = cursor

    @classmethod
    async def open(cls, dsn: str, slot: str, tables: str) -> ReplicationStream:
        """Start streaming `slot`, with wal2json keeping only `tables` (`schema.table,...`)."""

        def start() -> ReplicationStream:
            connection = psycopg2.connect(
                dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection
            )
            try:
                cursor = connection.cursor()
                cursor.start_replication(
                    slot_name=slot, decode=True, options={**WAL2JSON_OPTIONS, "add-tables": tables}
                )
            except BaseException:
                connection.close()
                raise
            return cls(connection, cursor)

        try:
            return await asyncio.to_thread(start)
        except psycopg2.errors.ObjectInUse as error:
            raise SlotInUse(slot, error) from error
        except psycopg2.Error as error:
            raise ChangeFeedError(f"cannot stream replication slot {slot!r}: {error}") from error

    def fileno(self) -> int:
        return self._connection.fileno()

    def read(self) -> str | None:
        """The next message the socket already holds, or None."""
        try:
            message = self._cursor.read_message()
        except psycopg2.Error as error:
            raise ChangeFeedError(f"the replication stream broke: {error}") from error
        return None if message is None else str(message.payload)

    @property
    def wal_end(self) -> int:
        """The server's WAL position as of the last message or keepalive read: every
        transaction that committed before it has been read."""
        return int(self._cursor.wal_end)

    def flushed(self, lsn: int) -> None:
        """Tell the server that everything before `lsn` is stored: the slot may release it."""
        self._feedback(lsn, reply=False)

    def ask_position(self) -> None:
        """Ask for a keepalive at once: once read, `wal_end` is where the server has read to."""
        self._feedback(0, reply=True)  # 0: keep the flushed position already sent

    def _feedback(self, lsn: int, *, reply: bool) -> None:
        try:
            self._cursor.send_feedback(  # type: ignore[no-untyped-call]  # untyped in the stubs
                write_lsn=lsn, flush_lsn=lsn, reply=reply, force=True
            )
        except psycopg2.Error as error:
            raise ChangeFeedError(f"the replication stream broke: {error}") from error

    def close(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self._connection.close()
