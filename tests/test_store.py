"""The schema and its SQLite change capture, checked with plain sqlite3 as an outsider would."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from livedash.errors import StoreError
from livedash.reports.inputs import Window
from livedash.reports.periods import resolve_period
from livedash.reports.sections import around
from livedash.store import migrate
from livedash.store.engine import create_engine as create_service_engine
from livedash.store.migrate import alembic_config, upgrade, upgrade_in_child
from livedash.store.models import WATCHED_TABLES, Base
from tests.support.schema import head_revision


def test_migration_creates_schema_wal_and_triggers(database_path: Path) -> None:
    with sqlite3.connect(database_path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert set(WATCHED_TABLES) | {"change_log", "feed_positions"} <= tables
        triggers = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
        }
        assert len(triggers) == 3 * len(WATCHED_TABLES)
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migration_is_idempotent(database_path: Path) -> None:
    upgrade(f"sqlite+aiosqlite:///{database_path}")
    with sqlite3.connect(database_path) as connection:
        versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert versions == [(head_revision(),)]


def test_models_and_migrations_describe_the_same_schema(database_path: Path) -> None:
    engine = create_engine(f"sqlite:///{database_path}")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_downgrade_removes_everything_it_added(database_path: Path) -> None:
    command.downgrade(alembic_config(f"sqlite+aiosqlite:///{database_path}"), "base")
    with sqlite3.connect(database_path) as connection:
        left = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type != 'index'")
        }
    assert left == {"alembic_version", "sqlite_sequence"}  # sqlite_sequence is SQLite's own


def test_every_write_from_any_connection_is_captured_with_old_and_new_rows(
    database_path: Path,
) -> None:
    with sqlite3.connect(database_path, isolation_level=None) as connection:
        connection.execute("INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')")
        connection.execute("UPDATE departments SET name = 'Emergency Dept' WHERE code = 'ED'")
        connection.execute("DELETE FROM departments WHERE code = 'ED'")
        rows = connection.execute(
            "SELECT seq, table_name, op, old_row, new_row FROM change_log ORDER BY seq"
        ).fetchall()
    assert [row[1:3] for row in rows] == [
        ("departments", "I"),
        ("departments", "U"),
        ("departments", "D"),
    ]
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)
    insert, update, delete = rows
    assert insert[3] is None
    assert json.loads(insert[4]) == {"id": 1, "code": "ED", "name": "Emergency"}
    assert json.loads(update[3])["name"] == "Emergency"
    assert json.loads(update[4])["name"] == "Emergency Dept"
    assert json.loads(delete[3])["name"] == "Emergency Dept"
    assert delete[4] is None


def test_a_rolled_back_write_leaves_no_change(database_path: Path) -> None:
    connection = sqlite3.connect(database_path, isolation_level=None)
    connection.execute("BEGIN")
    connection.execute("INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')")
    connection.execute("ROLLBACK")
    assert connection.execute("SELECT COUNT(*) FROM change_log").fetchone()[0] == 0
    connection.close()


async def test_a_failed_statement_names_no_row_values(database_url: str) -> None:
    """Errors reach logs and messages: a patient's name written in a failing statement does not."""
    engine = create_service_engine(database_url)
    try:
        with pytest.raises(IntegrityError) as failure:
            async with engine.begin() as connection:
                await connection.execute(
                    text("INSERT INTO patients (id, name, department_id) VALUES (NULL, :n, -1)"),
                    {"n": "Zebedee Quartermaine"},
                )
    finally:
        await engine.dispose()
    assert "Zebedee" not in str(failure.value)


def test_a_migration_in_a_child_process_leaves_alembic_out_of_the_service(tmp_path: Path) -> None:
    """`livedash serve` migrates in a process of its own: the service holds none of it, and
    no process is left beside it (multiprocessing's resource tracker was, 12 MB)."""
    database = tmp_path / "hospital.db"
    script = (
        "import os, pathlib, sys\n"
        "from livedash.store.migrate import upgrade_in_child\n"
        f"upgrade_in_child('sqlite+aiosqlite:///{database}')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
        "def parent(entry):\n"
        "    try:\n"
        "        return (entry / 'stat').read_text().rsplit(')', 1)[1].split()[1]\n"
        "    except OSError:\n"
        "        return None\n"
        "entries = [p for p in pathlib.Path('/proc').iterdir() if p.name.isdigit()]\n"
        "print([parent(entry) for entry in entries].count(str(os.getpid())))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["[]", "0"]
    with sqlite3.connect(database) as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == head_revision()


def test_the_newest_revision_is_read_from_the_scripts_as_alembic_reads_it() -> None:
    assert migrate.head_revision() == head_revision()


@pytest.mark.both_backends
def test_a_database_at_the_newest_revision_is_served_without_a_migration_process(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every `livedash serve` asks; a process of its own for the answer costs 0.7 s of a start."""
    assert migrate.current_revision(database_url) == head_revision()

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a migration process was started: {args}")

    monkeypatch.setattr(migrate.subprocess, "run", started)
    upgrade_in_child(database_url)


@pytest.mark.both_backends
def test_a_database_behind_is_migrated_in_its_process(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "-1")
    assert migrate.current_revision(database_url) != head_revision()
    upgrade_in_child(database_url)
    assert migrate.current_revision(database_url) == head_revision()


def test_a_database_whose_revision_cannot_be_read_is_left_to_alembic(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert migrate.current_revision(f"sqlite+aiosqlite:///{empty}") is None
    assert migrate.current_revision(f"sqlite+aiosqlite:///{tmp_path / 'none.db'}") is None
    unreachable = "postgresql+asyncpg://livedash:secret@127.0.0.1:1/livedash"
    assert migrate.current_revision(unreachable) is None
    upgrade_in_child(f"sqlite+aiosqlite:///{empty}")
    assert migrate.current_revision(f"sqlite+aiosqlite:///{empty}") == head_revision()


def test_a_failed_migration_in_a_child_process_says_why(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    with pytest.raises(StoreError, match=r"cannot migrate the database: .+"):
        upgrade_in_child(f"sqlite+aiosqlite:///{tmp_path / 'a-directory.db'}")


@pytest.mark.parametrize(
    ("table", "column", "index"),
    [
        ("patients", "registered_at", "ix_patients_registered_at"),
        ("admissions", "discharged_at", "ix_admissions_discharged_at"),
        ("alerts", "raised_at", "ix_alerts_raised_at"),
    ],
)
def test_a_reports_period_is_read_through_an_index(
    database_path: Path, table: str, column: str, index: str
) -> None:
    """A month's report reads its rows, not the table (reports/sections.py `around`)."""
    upgrade(f"sqlite+aiosqlite:///{database_path}")
    zone = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 12, 5, 12)  # naive: UTC
    window = Window(resolve_period("month:2026-11", zone=zone, now=now), zone)
    model = Base.metadata.tables[table]
    query = select(model.c.id).where(*around(model.c[column], window))
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(database_path) as connection:
        plan = " ".join(row[-1] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}"))
    assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan


def test_counting_the_reports_still_waiting_uses_an_index(database_path: Path) -> None:
    upgrade(f"sqlite+aiosqlite:///{database_path}")
    with sqlite3.connect(database_path) as connection:
        plan = " ".join(
            row[-1]
            for row in connection.execute(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM reports "
                "WHERE status IN ('queued', 'running')"
            )
        )
    assert "ix_reports_status" in plan, plan
