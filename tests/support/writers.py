"""Writing to the test database the way the hospital's own programs would: not through livedash.

SQLite: a plain `sqlite3` connection. PostgreSQL: a plain asyncpg connection. Tests write SQL
with `?` placeholders; on PostgreSQL the values are inlined as quoted literals, which the server
reads by the column's type (so '1' fills a boolean and '2026-01-01 08:00' a timestamp).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg

from livedash.store.models import Role
from livedash.testing.hospital import sql_now

Write = Callable[..., Awaitable[int]]
"""The `writer` fixture: `await write(sql, parameters)`."""

_PLACEHOLDER = re.compile(r"\?")
_SAVE_USER = (
    "INSERT INTO users (username, role, departments, active) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (username) DO UPDATE SET role = excluded.role, "
    "departments = excluded.departments, active = excluded.active"
)


def literal(value: Any) -> str:
    """`value` as a PostgreSQL literal of unknown type."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        value = int(value)
    return "'" + str(value).replace("'", "''") + "'"


def inline(sql: str, parameters: Iterable[Any]) -> str:
    """`sql` with each `?` replaced by the next parameter as a literal."""
    values = iter(parameters)
    return _PLACEHOLDER.sub(lambda _match: literal(next(values)), sql)


def returning_id(sql: str) -> str:
    stripped = sql.strip().rstrip(";")
    if stripped.upper().startswith("INSERT") and "RETURNING" not in stripped.upper():
        return stripped + " RETURNING *"
    return stripped


class SqliteWriter:
    """`await write(sql, parameters)` through a plain sqlite3 connection, in a worker thread."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(
            path, isolation_level=None, timeout=10, check_same_thread=False
        )

    def _write_now(self, sql: str, parameters: tuple[Any, ...]) -> int:
        return int(self._connection.execute(sql, parameters).lastrowid or 0)

    async def __call__(self, sql: str, parameters: tuple[Any, ...] = ()) -> int:
        # In a thread, as in the hospital's own process: blocking the test's event loop would
        # also stall the service under test while it holds a lock.
        return await asyncio.to_thread(self._write_now, sql, parameters)

    async def close(self) -> None:
        self._connection.close()


class PostgresWriter:
    """`await write(sql, parameters)` through a plain asyncpg connection (one per writer)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: asyncpg.Connection | None = None

    async def __call__(self, sql: str, parameters: tuple[Any, ...] = ()) -> int:
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(self._dsn)
        row = await self._connection.fetchrow(returning_id(inline(sql, parameters)))
        identifier = row.get("id") if row is not None else None
        return int(identifier) if identifier is not None else 0

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class Users:
    """Writes `users` rows as the hospital's administrators would, outside livedash."""

    def __init__(self, database: Path | str) -> None:
        self._database = database
        self._worker = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future[None]] = []

    def save(
        self, username: str, role: Role, departments: Iterable[str], *, active: bool = True
    ) -> None:
        """Create or update `username` with `role` and `departments`."""
        row = (username, role.value, json.dumps(sorted(set(departments))), int(active))
        if isinstance(self._database, str):
            # Written before returning, as on SQLite: PostgreSQL's row locks never wait for
            # the service's event loop, so blocking it for the write is safe.
            self._worker.submit(self._write_postgres, row).result(timeout=30)
            return
        try:
            self._write_sqlite(row, timeout=0)
        except sqlite3.OperationalError:
            # A service under test holds the write lock, and releasing it needs the event loop
            # this synchronous call is blocking: finish the write in a thread instead.
            self._pending.append(self._worker.submit(self._write_sqlite, row, 10.0))

    async def settled(self) -> None:
        """Wait for writes that had to wait."""
        pending, self._pending = self._pending, []
        for write in pending:
            await asyncio.wrap_future(write)

    def close(self) -> None:
        self._worker.shutdown(wait=True)

    def _write_sqlite(self, row: tuple[Any, ...], timeout: float) -> None:
        assert isinstance(self._database, Path)
        connection = sqlite3.connect(self._database, isolation_level=None, timeout=timeout)
        try:
            connection.execute(_SAVE_USER, row)
        finally:
            connection.close()

    def _write_postgres(self, row: tuple[Any, ...]) -> None:
        assert isinstance(self._database, str)
        dsn = self._database

        async def write() -> None:
            connection = await asyncpg.connect(dsn)
            try:
                await connection.execute(inline(_SAVE_USER, row))
            finally:
                await connection.close()

        asyncio.run(write())


async def register_patient(
    write: Write, department_id: int, name: str, *, emergency: bool = False
) -> int:
    """Register a waiting patient the way the hospital's application would."""
    return await write(
        "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
        "VALUES (?, ?, 'registered', ?, ?)",
        (department_id, name, int(emergency), sql_now()),
    )
