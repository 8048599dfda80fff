"""Fresh databases for property tests, one per example, on either backend.

A hypothesis test runs many examples in one test function, so the per-test `database_url`
fixture is not enough: `cases.new()` makes a migrated, empty database for each one (a copy of a
migrated SQLite file, or a PostgreSQL database cloned from the migrated template) and removes
it afterwards. Each example's own event loop (`asyncio.run`) uses it.

The hospital's writes go through a plain connection (sqlite3, or asyncpg with the values
inlined as literals, as `tests.support.writers` does); a write the database refuses (a foreign
key, a duplicate) returns `None` and changes nothing, as for the hospital's careless scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import asyncpg
import pytest

from livedash.changefeed import Change, ChangeSource, open_change_source
from livedash.store.engine import libpq_dsn
from livedash.store.migrate import upgrade
from livedash.testing.servers import PostgresServer
from tests.support.writers import inline, returning_id

TEMPLATE_DATABASE = "livedash_template"
"""The migrated, empty database on the session's PostgreSQL server that each test's copies."""
_NUMBERS = itertools.count(1)


class Feed(ChangeSource, Protocol):
    caught_up: asyncio.Event


class CaseWriter(Protocol):
    """Writes and reads the case's database as an outside program."""

    async def __call__(self, sql: str, parameters: tuple[Any, ...] = ()) -> int | None:
        """Run one statement in its own transaction: a new row's id, 0, or None if refused."""
        ...

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]: ...


class _SqliteCaseWriter:
    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, timeout=10)

    async def __call__(self, sql: str, parameters: tuple[Any, ...] = ()) -> int | None:
        try:
            return int(self._connection.execute(sql, parameters).lastrowid or 0)
        except sqlite3.IntegrityError:
            return None

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return self._connection.execute(sql).fetchall()

    def close(self) -> None:
        self._connection.close()


class _PostgresCaseWriter:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def __call__(self, sql: str, parameters: tuple[Any, ...] = ()) -> int | None:
        try:
            row = await self._connection.fetchrow(returning_id(inline(sql, parameters)))
        except asyncpg.IntegrityConstraintViolationError:
            return None
        identifier = row.get("id") if row is not None else None
        return int(identifier) if identifier is not None else 0

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._connection.fetch(sql)]


@dataclass(frozen=True, slots=True)
class Case:
    """One example's database."""

    backend: str
    url: str
    slot: str

    def feed(self, consumer: str, **options: Any) -> Feed:
        """A change feed on this database (with the case's own PostgreSQL slot)."""
        return cast(Feed, open_change_source(self.url, consumer, slot=self.slot, **options))

    @contextlib.asynccontextmanager
    async def writer(self) -> AsyncIterator[CaseWriter]:
        if self.backend == "sqlite":
            sqlite_writer = _SqliteCaseWriter(Path(self.url.removeprefix("sqlite+aiosqlite:///")))
            try:
                yield sqlite_writer
            finally:
                sqlite_writer.close()
            return
        connection = await asyncpg.connect(libpq_dsn(self.url))
        try:
            yield _PostgresCaseWriter(connection)
        finally:
            await connection.close()


class Cases:
    """Makes a fresh database per example: `async with cases.new() as case`."""

    def __init__(
        self, backend: str, *, template: Path | None = None, server: PostgresServer | None = None
    ) -> None:
        self.backend = backend
        self._template = template
        self._server = server

    @contextlib.asynccontextmanager
    async def new(self) -> AsyncIterator[Case]:
        name = f"case{next(_NUMBERS)}_{os.getpid()}"
        if self._server is None:
            if self._template is None:
                raise RuntimeError("a SQLite case needs a template file")
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / f"{name}.db"
                shutil.copy(self._template, path)
                yield Case("sqlite", f"sqlite+aiosqlite:///{path}", name)
            return
        url = await self._server.create_database(name, template=TEMPLATE_DATABASE)
        try:
            yield Case("postgres", url, f"slot_{name}")
        finally:
            await self._server.drop_database(name)


_sqlite_templates: dict[Path, Path] = {}


def _sqlite_template(factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file to copy for each case, made once per session."""
    root = factory.getbasetemp()
    if root not in _sqlite_templates:
        path = factory.mktemp("template") / "template.db"
        upgrade(f"sqlite+aiosqlite:///{path}")
        _sqlite_templates[root] = path
    return _sqlite_templates[root]


@pytest.fixture(name="cases")
def cases_fixture(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Cases:
    """Fresh databases of this test's backend, one per example (import it to use it)."""
    if backend == "sqlite":
        return Cases(backend, template=_sqlite_template(tmp_path_factory))
    return Cases(backend, server=request.getfixturevalue("postgres_server"))


async def committed(feed: Feed) -> AsyncIterator[list[Change]]:
    """The feed's batches until it has delivered everything committed so far.

    "Everything" is what the feed has when it sets `caught_up`, so drain a feed once, after the
    writes. Close it with `contextlib.aclosing` when leaving early.
    """
    if feed.caught_up.is_set():
        raise RuntimeError("drain a feed once: it has caught up already")
    batches = feed.batches()
    try:
        while True:
            step = asyncio.ensure_future(anext(batches))
            idle = asyncio.ensure_future(feed.caught_up.wait())
            await asyncio.wait({step, idle}, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                return
            yield step.result()
    finally:
        await batches.aclose()
