"""Schema migrations (Alembic), callable from the CLI, the app and tests."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.config import Config

from livedash.store.engine import is_sqlite


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and `database_url`."""
    config = Config()
    config.set_main_option("script_location", "livedash.store:migrations")
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def _prepare_sqlite_file(database_url: str) -> None:
    import sqlite3

    from sqlalchemy.engine import make_url

    database = make_url(database_url).database
    if not database or database == ":memory:":
        return
    from pathlib import Path

    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as connection:
        # WAL is a property of the file: set once, every later connection (ours or the
        # hospital's) uses it, so readers never block the writers.
        connection.execute("PRAGMA journal_mode = WAL")


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision` (blocking; not on the event loop)."""
    if is_sqlite(database_url):
        _prepare_sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """`upgrade` in a worker thread, since Alembic runs its own event loop."""
    await asyncio.to_thread(upgrade, database_url, revision)
