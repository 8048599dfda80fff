"""Schema migrations (Alembic), callable from the CLI, the app and tests."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

from livedash.errors import StoreError
from livedash.store.engine import is_sqlite

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported by the functions that use it: `upgrade_in_child` runs it in another
# process, and the one that asks must not hold it.


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and `database_url`."""
    from alembic.config import Config

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
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def upgrade_in_child(database_url: str) -> None:
    """`upgrade`, in a process of its own: a service that then runs for months keeps none of
    Alembic's modules and migration scripts in its memory (11 MB of RSS). `StoreError` with
    the child's reason if it fails."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
        try:
            child.submit(_upgrade_telling, database_url).result()
        except MigrationFailed as failure:
            raise StoreError(f"cannot migrate the database: {failure}") from None


class MigrationFailed(Exception):
    """A migration failed in the child process; its message says why."""


def _upgrade_telling(database_url: str) -> None:
    # Only a plain message crosses back: the driver's exception may not survive pickling.
    try:
        upgrade(database_url)
    except Exception as error:
        raise MigrationFailed(f"{type(error).__name__}: {error}") from None


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """`upgrade` in a worker thread, since Alembic runs its own event loop."""
    await asyncio.to_thread(upgrade, database_url, revision)
