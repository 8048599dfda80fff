"""Engine and session factories, configured per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 10_000
_WRITE_LOCK = "livedash_write_lock"  # an execution option: BEGIN IMMEDIATE on SQLite


def is_sqlite(url: str) -> bool:
    """True when `url` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, writer: bool = False, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url`; on SQLite, real transactions and a busy timeout are set.

    A `writer` engine on SQLite takes the write lock when a transaction begins, so a
    read-then-write transaction cannot fail half-way when another process wrote in between.
    A service keeps one engine and takes `write_locking(engine)` where it writes instead.
    """
    # Statements' parameters are rows' values (patients' names among them): an error's text,
    # which reaches logs and error messages, names the statement without them.
    kwargs.setdefault("hide_parameters", True)
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        _configure_sqlite(engine, write_lock=writer)
    return engine


def write_locking(engine: AsyncEngine) -> AsyncEngine:
    """`engine` (the same pool) whose transactions take SQLite's write lock as they begin."""
    return engine.execution_options(**{_WRITE_LOCK: True})


@asynccontextmanager
async def open_database(url: str, *, writer: bool = False) -> AsyncIterator[AsyncEngine]:
    """An engine for a command that runs once (the CLI), disposed of afterwards."""
    engine = create_engine(url, writer=writer)
    try:
        yield engine
    finally:
        await engine.dispose()


def libpq_dsn(database_url: str) -> str:
    """The plain `postgresql://` form of a SQLAlchemy URL (for asyncpg and libpq tools)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """A session factory whose objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _configure_sqlite(engine: AsyncEngine, *, write_lock: bool) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling never BEGINs before a SELECT, so a multi-query
        # read would not be one snapshot; take over BEGIN ourselves (SQLAlchemy's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_WRITE_LOCK, write_lock)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
