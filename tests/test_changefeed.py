"""The change feeds' contract on both backends (order, decoding, resume), and the SQLite feed's
own ways (waking on other processes' commits, its log, pruning, other writers' spellings).

The PostgreSQL feed's own ways are in test_changefeed_postgres.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from livedash.changefeed import Change, Op, open_change_source
from livedash.changefeed import sqlite as sqlite_feed
from livedash.changefeed.sqlite import SqliteChangeFeed
from livedash.errors import ConfigurationError
from tests.support.cases import Case, Feed, committed
from tests.support.writers import Write


def _write(database: Path, *statements: str) -> None:
    with sqlite3.connect(database, isolation_level=None) as connection:
        for statement in statements:
            connection.execute(statement)


async def _drain(feed: SqliteChangeFeed, after: int) -> list[Change]:
    changes: list[Change] = []
    while True:
        batch, last = await feed.read_after(after)
        if last == after:
            return changes
        changes.extend(batch)
        after = last


@pytest.fixture
def case(backend: str, database_url: str) -> Case:
    """This test's database, to open feeds on (on PostgreSQL with a slot of its own)."""
    return Case(backend, database_url, f"slot_{make_url(database_url).database}")


async def _committed(feed: Feed) -> list[Change]:
    """Every change committed so far, each batch confirmed as a consumer would."""
    changes: list[Change] = []
    async with contextlib.aclosing(committed(feed)) as batches:
        async for batch in batches:
            changes.extend(batch)
            await feed.confirm(batch[-1].position)
    return changes


@pytest.mark.both_backends
async def test_changes_arrive_in_commit_order_decoded_to_model_types(
    case: Case, writer: Write
) -> None:
    async with case.feed("test") as feed:  # on PostgreSQL, the slot starts here
        await writer("INSERT INTO departments (id, code, name) VALUES (1, 'ED', 'Emergency')")
        await writer(
            "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
            "VALUES (1, 'A', 'registered', ?, '2026-03-01 08:00')",
            (1,),
        )
        await writer(
            "UPDATE patients SET registered_at = '2026-03-01 08:30:00.25', emergency = ?", (0,)
        )
        await writer(
            "INSERT INTO users (username, role, departments, active) VALUES (?, ?, ?, ?)",
            ("ann", "admin", '["ED"]', 1),
        )
        await writer("DELETE FROM patients")
        changes = await _committed(feed)
    assert [(c.table, c.op) for c in changes] == [
        ("departments", Op.INSERT),
        ("patients", Op.INSERT),
        ("patients", Op.UPDATE),
        ("users", Op.INSERT),
        ("patients", Op.DELETE),
    ]
    positions = [c.position for c in changes]
    assert positions == sorted(set(positions))
    inserted, updated = changes[1].new, changes[2].new
    assert inserted is not None
    assert updated is not None
    assert inserted["emergency"] is True
    assert inserted["registered_at"] == datetime(2026, 3, 1, 8, 0)
    assert changes[2].old == inserted
    assert updated["emergency"] is False
    assert updated["registered_at"] == datetime(2026, 3, 1, 8, 30, 0, 250000)
    assert changes[3].new is not None
    assert changes[3].new["departments"] == ["ED"]
    assert changes[3].new["active"] is True
    assert changes[4].old == updated
    assert changes[4].new is None


async def test_a_commit_from_another_process_wakes_the_feed_without_polling(
    database_path: Path, database_url: str
) -> None:
    # The fallback read is an hour away: only the inotify wake-up can deliver in time.
    async with SqliteChangeFeed(database_url, "test", fallback_poll_seconds=3600) as feed:
        batches = feed.batches()
        waiting = asyncio.ensure_future(anext(batches))
        await feed.caught_up.wait()  # it found nothing and waits for a wake-up
        process = await asyncio.create_subprocess_exec(
            "sqlite3",
            str(database_path),
            "INSERT INTO departments (code, name) VALUES ('ED', 'Emergency');",
        )
        assert await process.wait() == 0
        async with asyncio.timeout(5):
            batch = await waiting
        assert batch[0].new is not None
        assert batch[0].new["code"] == "ED"
        await batches.aclose()


async def test_a_commit_visible_when_its_wake_up_arrives_is_read_at_once(
    database_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every later read is an hour away: only the read at the wake-up itself can deliver. The
    # write blocks the event loop until it has committed, so the commit is visible by then.
    monkeypatch.setattr(sqlite_feed, "REREAD_SECONDS", (3600,))
    async with SqliteChangeFeed(
        database_url, "test", fallback_poll_seconds=3600, settle_seconds=3600
    ) as feed:
        batches = feed.batches()
        waiting = asyncio.ensure_future(anext(batches))
        await feed.caught_up.wait()
        with contextlib.closing(sqlite3.connect(database_path)) as writer:
            writer.execute("INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')")
            writer.commit()
        async with asyncio.timeout(5):
            batch = await waiting
        assert [change.new["code"] for change in batch if change.new is not None] == ["ED"]
        await batches.aclose()


def _codes(changes: list[Change]) -> list[str]:
    return [change.new["code"] for change in changes if change.new is not None]


@pytest.mark.both_backends
async def test_restart_resumes_after_the_confirmed_position(case: Case, writer: Write) -> None:
    codes = [f"D{n}" for n in range(11)]
    async with case.feed("metrics", batch_size=4) as feed:
        for code in codes[:10]:
            await writer("INSERT INTO departments (code, name) VALUES (?, 'x')", (code,))
        assert await feed.confirmed_position() == 0
        async with contextlib.aclosing(feed.batches()) as batches:
            first = await anext(batches)
            await feed.confirm(first[-1].position)
            second = await anext(batches)  # delivered but never confirmed: must come again
    assert _codes(first + second) == codes[: len(first) + len(second)]

    await writer("INSERT INTO departments (code, name) VALUES (?, 'x')", (codes[10],))
    async with case.feed("metrics") as feed:
        assert await feed.confirmed_position() == first[-1].position
        rest = await _committed(feed)
        assert _codes(rest) == codes[len(first) :]
        await feed.confirm(second[-1].position)  # a late, lower confirmation...
        assert await feed.confirmed_position() == rest[-1].position  # ...never moves it back
    async with case.feed("another-consumer") as feed:
        assert await feed.confirmed_position() == 0


async def test_confirmed_changes_are_pruned_but_positions_continue(
    database_path: Path, database_url: str
) -> None:
    _write(
        database_path,
        *(f"INSERT INTO departments (code, name) VALUES ('D{n}', 'x')" for n in range(6)),
    )
    async with SqliteChangeFeed(database_url, "metrics", keep_rows=2) as feed:
        await feed.confirm(6)
        with sqlite3.connect(database_path) as connection:
            kept = [row[0] for row in connection.execute("SELECT seq FROM change_log")]
        assert kept == [5, 6]
        _write(database_path, "DELETE FROM change_log")
        engine = feed._engine(feed._reader)
        async with engine.connect() as connection:
            assert await feed.position_in(connection) == 6
        _write(database_path, "INSERT INTO departments (code, name) VALUES ('N', 'x')")
        changes = await _drain(feed, 6)
        assert [c.position for c in changes] == [7]


async def test_an_unreadable_log_row_is_reported_and_passed_over(
    database_path: Path, database_url: str
) -> None:
    _write(
        database_path,
        "INSERT INTO change_log (table_name, op, old_row, new_row, committed_at) "
        "VALUES ('departments', 'X', NULL, '{not json', 'now')",
        "INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')",
    )
    async with SqliteChangeFeed(database_url, "test") as feed:
        with capture_logs() as logs:
            changes = await _drain(feed, 0)
    assert [c.position for c in changes] == [2]
    assert any(entry["event"] == "changefeed_unreadable_change" for entry in logs)


async def test_other_writers_spellings_decode_to_model_types_or_missing(
    database_path: Path, database_url: str
) -> None:
    # SQLite keeps whatever text a writer gives; PostgreSQL would have parsed or refused it.
    _write(
        database_path,
        "INSERT INTO departments (id, code, name) VALUES (1, 'ED', 'Emergency')",
        "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
        "VALUES (1, 'A', 'registered', 'yes', 'yesterday-ish')",
        "UPDATE patients SET registered_at = '2026-03-01T09:30:00.250000+01:00', emergency = 0",
    )
    async with SqliteChangeFeed(database_url, "test") as feed:
        changes = await _drain(feed, 0)
    patient, updated = changes[1].new, changes[2].new
    assert patient is not None
    assert patient["registered_at"] is None
    assert patient["emergency"] is True
    assert updated is not None
    assert updated["registered_at"] == datetime(2026, 3, 1, 8, 30, 0, 250000)  # to UTC
    assert updated["emergency"] is False


def test_unknown_backend_is_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match="mysql"):
        open_change_source("mysql+aiomysql://localhost/x", "metrics")
