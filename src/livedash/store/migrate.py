"""Schema migrations (Alembic), callable from the CLI, the app and tests."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from contextlib import closing
from pathlib import Path
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


VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"
_REVISION = re.compile(r'^(down_revision|revision) = (?:"([^"]*)"|None)$', re.MULTILINE)


def head_revision() -> str | None:
    """The newest migration's revision, read from the scripts' text without Alembic; None
    unless the scripts form one line (Alembic itself then decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in VERSIONS.glob("*.py"):
        found = dict(_REVISION.findall(script.read_text()))
        if not found.get("revision"):
            return None
        revisions.add(found["revision"])
        if found.get("down_revision"):
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def current_revision(database_url: str) -> str | None:
    """The revision the database at `database_url` is at, or None if that cannot be read
    cheaply (no file, no table, an error: the caller migrates, which says why)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    try:
        if is_sqlite(database_url):
            if not url.database or url.database == ":memory:" or not Path(url.database).exists():
                return None
            return _sqlite_revision(Path(url.database))
        return _postgres_revision(url.set(drivername="postgresql").render_as_string(False))
    except Exception:
        return None


def _sqlite_revision(path: Path) -> str | None:
    """Read-only; closed here, as sqlite3's own `with` only ends a transaction."""
    import sqlite3

    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


def _postgres_revision(dsn: str) -> str | None:
    """Closed here, as psycopg2's own `with` only ends a transaction."""
    import psycopg2

    with (
        closing(psycopg2.connect(dsn, connect_timeout=5)) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT version_num FROM alembic_version")
        row = cursor.fetchone()
    return str(row[0]) if row else None


def upgrade_in_child(database_url: str) -> None:
    """`upgrade`, in a process of its own: a service that then runs for months keeps none of
    Alembic's modules and migration scripts in its memory (11 MB of RSS). `StoreError` with
    the child's reason if it fails. A database already at the newest revision is left as it
    is without starting the child (0.7-0.9 s of every start).

    A plain child process, not multiprocessing's: "spawn" leaves its resource tracker (12 MB)
    running beside the service for good. The URL goes through stdin, not the command line,
    which every local user can read."""
    head = head_revision()
    if head is not None and current_revision(database_url) == head:
        return
    done = subprocess.run(
        [sys.executable, "-c", "from livedash.store.migrate import _upgrade_from_stdin as u; u()"],
        input=database_url,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise StoreError(f"cannot migrate the database: {lines[-1]}")


def _upgrade_from_stdin() -> None:
    """The child's side of `upgrade_in_child`: the reason of a failure on its last line."""
    try:
        upgrade(sys.stdin.read())
    except Exception as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """`upgrade` in a worker thread, since Alembic runs its own event loop."""
    await asyncio.to_thread(upgrade, database_url, revision)
