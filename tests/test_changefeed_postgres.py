"""The PostgreSQL change feed against a real server: wal2json, NOTIFY, slot positions.

Every write comes from outside livedash (a plain asyncpg connection or `psql`), as the
hospital's own application would write. Nothing sleeps for an event that can be awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime
from typing import Any, cast

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from structlog.testing import capture_logs

from livedash.changefeed.base import Change, Op
from livedash.changefeed.postgres import (
    PostgresChangeFeed,
    StartSnapshot,
    commit_lsn,
    int_to_lsn,
    lsn_to_int,
)
from livedash.errors import ChangeFeedError
from livedash.store.engine import create_engine, libpq_dsn
from livedash.testing.recorder import Recorder, update_of
from livedash.testing.servers import PostgresServer
from tests.support.live import Connect, LiveServer, Serve
from tests.support.polling import read_until

WAIT = 10.0  # seconds an awaited event may take before the test fails
XID = 0xFFFFFFFF  # txid_current() counts wraparound epochs above the 32-bit transaction id


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
def dsn(database_url: str) -> str:
    return libpq_dsn(database_url)


@pytest.fixture
def slot(database_url: str) -> str:
    return f"slot_{make_url(database_url).database}"


class Reader:
    """One feed's `batches()` generator, read a batch at a time with a deadline.

    The generator is never cancelled while the test runs (that would end it): a read that
    is waited for in vain stays pending for the next call.
    """

    def __init__(self, feed: PostgresChangeFeed) -> None:
        self.feed = feed
        self._batches = cast(AsyncGenerator[list[Change], None], feed.batches())
        self._pending: asyncio.Future[list[Change]] | None = None
        self.delivered: list[Change] = []

    def pending(self) -> asyncio.Future[list[Change]]:
        """The generator's next batch, being read."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._batches))
        return self._pending

    async def batch(self, within: float = WAIT) -> list[Change]:
        pending = self.pending()
        try:
            async with asyncio.timeout(within):
                batch = await asyncio.shield(pending)
        finally:
            if pending.done():  # delivered, or failed: either way the next call reads anew
                self._pending = None
        self.delivered += batch
        return batch

    async def changes(self, count: int, within: float = WAIT) -> list[Change]:
        """The next `count` changes (whole batches: fails if more arrive than expected)."""
        taken: list[Change] = []
        async with asyncio.timeout(within):
            while len(taken) < count:
                taken += await self.batch(within)
        assert len(taken) == count, [(c.table, c.op, c.new) for c in taken]
        return taken

    async def read_once(self) -> None:
        """Wait until the feed has read the slot through once more (and found nothing new)."""
        pending = self.pending()
        self.feed.caught_up.clear()
        self.feed.notify()
        caught_up: asyncio.Future[Any] = asyncio.ensure_future(self.feed.caught_up.wait())
        try:
            async with asyncio.timeout(WAIT):
                await asyncio.wait([caught_up, pending], return_when=asyncio.FIRST_COMPLETED)
        finally:
            caught_up.cancel()

    async def nothing_more(self) -> None:
        """The feed reads to the end of the slot and delivers nothing."""
        await self.read_once()
        await self.read_once()
        pending = self.pending()
        assert not pending.done(), [(c.table, c.op, c.new) for c in pending.result()]

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await self._pending
        await self._batches.aclose()


OpenFeed = Callable[..., contextlib.AbstractAsyncContextManager[Reader]]


@pytest.fixture
def open_feed(database_url: str, slot: str) -> OpenFeed:
    """`async with open_feed(**options) as reader`: a feed of this test's database."""

    @contextlib.asynccontextmanager
    async def opened(**options: Any) -> AsyncIterator[Reader]:
        options = {"slot": slot, "fallback_poll_seconds": 0.2, **options}
        async with PostgresChangeFeed(database_url, "test", **options) as feed:
            reader = Reader(feed)
            try:
                yield reader
            finally:
                await reader.close()

    return opened


@pytest.fixture
async def pg(dsn: str) -> AsyncIterator[Callable[[], Any]]:
    """Open plain asyncpg connections (closed afterwards): `connection = await pg()`."""
    opened: list[asyncpg.Connection] = []

    async def connect() -> asyncpg.Connection:
        connection = await asyncpg.connect(dsn)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        await connection.close()


async def psql(dsn: str, sql: str) -> str:
    """Run `sql` through the `psql` program, as a DBA would."""
    process = await asyncio.create_subprocess_exec(
        "psql", dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def slot_row(connection: asyncpg.Connection, slot: str) -> asyncpg.Record:
    row = await connection.fetchrow(
        "SELECT confirmed_flush_lsn::text AS confirmed, plugin, database "
        "FROM pg_replication_slots WHERE slot_name = $1",
        slot,
    )
    assert row is not None
    return row


def keys(changes: list[Change]) -> list[tuple[str, Op, Any]]:
    """What each change did, by table, operation and the row's name or code."""

    def label(row: Any) -> Any:
        if row is None:
            return None
        return row.get("code") or row.get("name") or row.get("username") or row.get("id")

    return [(c.table, c.op, label(c.new if c.new is not None else c.old)) for c in changes]


# -- delivery, order and decoding --------------------------------------------------------------


async def test_outside_writes_arrive_in_commit_order_decoded_to_model_types(
    open_feed: OpenFeed, pg: Any, dsn: str
) -> None:
    async with open_feed() as reader:
        app = await pg()
        department = await app.fetchval(
            "INSERT INTO departments (code, name) VALUES ('ED', 'Emergency') RETURNING id"
        )
        patient = await app.fetchval(
            "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
            "VALUES ($1, 'Ann', 'registered', true, '2026-03-01 08:15:30.25') RETURNING id",
            department,
        )
        await app.execute(
            "INSERT INTO users (username, role, departments, active, password_hash) "
            "VALUES ('ann', 'admin', '[\"ED\", \"CARD\"]', true, 'secret-hash')"
        )
        async with app.transaction():
            await app.execute("UPDATE patients SET status = 'active' WHERE id = $1", patient)
            await app.execute("UPDATE users SET password_hash = 'other-hash', active = false")
        await psql(dsn, f"DELETE FROM patients WHERE id = {patient}")
        await psql(
            dsn,
            "BEGIN; INSERT INTO departments (code, name) VALUES ('CARD', 'Cardiology'); "
            "UPDATE departments SET name = 'Emergencies' WHERE code = 'ED'; COMMIT;",
        )

        changes = await reader.changes(8)

    assert keys(changes) == [
        ("departments", Op.INSERT, "ED"),
        ("patients", Op.INSERT, "Ann"),
        ("users", Op.INSERT, "ann"),
        ("patients", Op.UPDATE, "Ann"),
        ("users", Op.UPDATE, "ann"),
        ("patients", Op.DELETE, "Ann"),
        ("departments", Op.INSERT, "CARD"),
        ("departments", Op.UPDATE, "ED"),
    ]
    positions = [change.position for change in changes]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    # One transaction, one commit LSN, one transaction id; separate ones differ.
    assert commit_lsn(changes[3].position) == commit_lsn(changes[4].position)
    assert changes[3].transaction == changes[4].transaction != changes[2].transaction
    assert commit_lsn(changes[2].position) < commit_lsn(changes[3].position)

    inserted = changes[1]
    assert inserted.old is None
    assert inserted.new is not None
    assert inserted.new["emergency"] is True
    assert inserted.new["registered_at"] == datetime(2026, 3, 1, 8, 15, 30, 250000)
    assert inserted.new["department_id"] == department
    assert inserted.new["discharged_at"] is None
    assert isinstance(inserted.committed_at, datetime)
    assert inserted.committed_at.tzinfo is None

    user = changes[2].new
    assert user is not None
    assert user["departments"] == ["ED", "CARD"]
    assert user["active"] is True

    updated = changes[3]
    assert updated.old is not None
    assert updated.new is not None
    assert (updated.old["status"], updated.new["status"]) == ("registered", "active")
    assert updated.old["emergency"] is True  # REPLICA IDENTITY FULL: the whole old row
    deactivated = changes[4]
    assert deactivated.old is not None
    assert deactivated.new is not None
    assert (deactivated.old["active"], deactivated.new["active"]) == (True, False)

    deleted = changes[5]
    assert deleted.new is None
    assert deleted.old is not None
    assert deleted.old["status"] == "active"
    assert deleted.old["registered_at"] == datetime(2026, 3, 1, 8, 15, 30, 250000)
    renamed = changes[7]
    assert renamed.old is not None
    assert renamed.new is not None
    assert (renamed.old["name"], renamed.new["name"]) == ("Emergency", "Emergencies")

    for change in changes:
        for row in (change.old, change.new):
            assert row is None or "password_hash" not in row
        assert "hash" not in repr(change)


async def test_interleaved_transactions_arrive_in_commit_order_not_start_order(
    open_feed: OpenFeed, pg: Any
) -> None:
    async with open_feed() as reader:
        first, second = await pg(), await pg()
        started_first = first.transaction()
        await started_first.start()
        await first.execute("INSERT INTO departments (code, name) VALUES ('A1', 'first, 1')")
        started_second = second.transaction()
        await started_second.start()
        await second.execute("INSERT INTO departments (code, name) VALUES ('B1', 'second, 1')")
        await first.execute("INSERT INTO departments (code, name) VALUES ('A2', 'first, 2')")
        await second.execute("INSERT INTO departments (code, name) VALUES ('B2', 'second, 2')")
        first_xid = int(await first.fetchval("SELECT txid_current()")) & XID
        second_xid = int(await second.fetchval("SELECT txid_current()")) & XID
        assert first_xid < second_xid
        await started_second.commit()
        await started_first.commit()

        changes = await reader.changes(4)

    assert [c.new["code"] for c in changes if c.new] == ["B1", "B2", "A1", "A2"]
    assert [c.transaction for c in changes] == [second_xid] * 2 + [first_xid] * 2
    assert changes[1].position < changes[2].position


# -- wake-up -------------------------------------------------------------------------------


async def test_a_commit_wakes_the_feed_without_polling(open_feed: OpenFeed, pg: Any) -> None:
    async with open_feed(fallback_poll_seconds=3600, heartbeat_seconds=3600) as reader:
        waiting = reader.pending()
        async with asyncio.timeout(WAIT):
            await reader.feed.caught_up.wait()  # read everything, now asleep for an hour
        assert not waiting.done()
        app = await pg()
        started = asyncio.get_running_loop().time()
        await app.execute("INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')")
        batch = await waiting
        assert keys(batch) == [("departments", Op.INSERT, "ED")]
        assert asyncio.get_running_loop().time() - started < 5


# -- positions: resume, dedupe, confirm ----------------------------------------------------


async def test_resume_after_the_confirmed_position_without_repeating_its_transaction(
    open_feed: OpenFeed, pg: Any, slot: str
) -> None:
    app = await pg()
    async with open_feed() as reader:
        async with app.transaction():
            await app.execute("INSERT INTO departments (code, name) VALUES ('T1', 'one')")
            await app.execute("INSERT INTO departments (code, name) VALUES ('T1b', 'one b')")
        await app.execute("INSERT INTO departments (code, name) VALUES ('T2', 'two')")
        first = await reader.changes(3)
        await reader.feed.confirm(first[1].position)
        assert await reader.feed.confirmed_position() == first[1].position
    # The slot stands at T1's commit, so PostgreSQL decodes T1 once more ...
    assert lsn_to_int((await slot_row(app, slot))["confirmed"]) == commit_lsn(first[1].position)
    peeked = await app.fetch(
        "SELECT xid::text FROM pg_logical_slot_peek_changes($1, NULL, NULL, "
        "'format-version', '2', 'add-tables', 'public.departments')",
        slot,
    )
    assert int(peeked[0]["xid"]) == first[0].transaction

    await app.execute("INSERT INTO departments (code, name) VALUES ('T3', 'three')")
    async with open_feed() as reader:
        # ... and the stored position keeps it from being delivered twice.
        resumed = await reader.changes(2)
        assert keys(resumed) == [
            ("departments", Op.INSERT, "T2"),
            ("departments", Op.INSERT, "T3"),
        ]
        assert resumed[0] == first[2]
        await reader.feed.confirm(resumed[-1].position)
        await reader.nothing_more()

    async with open_feed() as reader:
        await reader.nothing_more()
        await app.execute("INSERT INTO departments (code, name) VALUES ('T4', 'four')")
        assert keys(await reader.changes(1)) == [("departments", Op.INSERT, "T4")]


async def test_confirm_stores_the_position_with_the_callers_writes_or_neither(
    open_feed: OpenFeed, pg: Any, slot: str
) -> None:
    app = await pg()

    async def rollup(amount: int) -> Callable[[AsyncConnection], Any]:
        async def write(connection: AsyncConnection) -> None:
            await connection.execute(
                text(
                    "INSERT INTO metric_rollups (series, department_id, hour_start, amount, "
                    "weighted, seconds) VALUES ('test', 0, '2026-01-01', :amount, 0, 0)"
                ),
                {"amount": amount},
            )

        return write

    async def failing(connection: AsyncConnection) -> None:
        await connection.execute(
            text("UPDATE metric_rollups SET amount = 99 WHERE series = 'test'")
        )
        raise RuntimeError("the roll-ups cannot be written")

    async with open_feed() as reader:
        await app.execute("INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')")
        await app.execute("INSERT INTO departments (code, name) VALUES ('CARD', 'Cardiology')")
        ed, card = await reader.changes(2)
        await reader.feed.confirm(ed.position, also=await rollup(7))
        assert await reader.feed.confirmed_position() == ed.position
        assert await app.fetchval("SELECT amount FROM metric_rollups") == 7
        slot_at = (await slot_row(app, slot))["confirmed"]

        with pytest.raises(RuntimeError, match="roll-ups"):
            await reader.feed.confirm(card.position, also=failing)
        assert await reader.feed.confirmed_position() == ed.position
        assert await app.fetchval("SELECT amount FROM metric_rollups") == 7
        assert (await slot_row(app, slot))["confirmed"] == slot_at

        # An older position never moves the stored one back.
        await reader.feed.confirm(card.position)
        await reader.feed.confirm(ed.position)
        assert await reader.feed.confirmed_position() == card.position
    stored = await app.fetchval("SELECT position FROM feed_positions WHERE consumer = 'test'")
    assert stored == card.position


async def test_a_backlog_larger_than_a_batch_is_delivered_without_confirming(
    open_feed: OpenFeed, pg: Any
) -> None:
    app = await pg()
    async with open_feed(batch_size=9) as reader:
        for number in range(30):
            await app.execute(
                "INSERT INTO departments (code, name) VALUES ($1, 'backlog')", f"D{number:02}"
            )
        # Each transaction is three rows of the slot (begin, insert, commit): pages of 9.
        changes = await reader.changes(30)
        assert [c.new["code"] for c in changes if c.new] == [f"D{n:02}" for n in range(30)]
        await reader.nothing_more()


async def test_other_tables_transactions_do_not_stall_the_feed(
    open_feed: OpenFeed, pg: Any, slot: str
) -> None:
    app = await pg()
    async with open_feed(batch_size=10, heartbeat_seconds=3600) as reader:
        await reader.nothing_more()
        created_at = lsn_to_int((await slot_row(app, slot))["confirmed"])
        # Each of these is a begin and a commit row in the slot, with no watched change.
        for number in range(40):
            await app.execute(
                "INSERT INTO metric_rollups (series, department_id, hour_start, amount, "
                "weighted, seconds) VALUES ('noise', $1, '2026-01-01', 0, 0, 0)",
                number,
            )
        await app.execute("INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')")
        (change,) = await reader.changes(1)
        assert keys([change]) == [("departments", Op.INSERT, "ED")]
        await reader.nothing_more()
        # Not stored yet: the slot keeps it.
        assert lsn_to_int((await slot_row(app, slot))["confirmed"]) == created_at


# -- start-up exactness --------------------------------------------------------------------


async def test_the_start_up_snapshot_tells_which_delivered_changes_it_counted(
    open_feed: OpenFeed, pg: Any, database_url: str
) -> None:
    database = create_engine(database_url)
    try:
        async with open_feed() as reader:
            feed = reader.feed
            in_progress, before, after, lazy = await pg(), await pg(), await pg(), await pg()
            await lazy.execute("SET synchronous_commit = off")
            # Started first (the lower transaction id), commits only after the snapshot.
            running = in_progress.transaction()
            await running.start()
            await in_progress.execute(
                "INSERT INTO departments (code, name) VALUES ('RUN', 'in progress')"
            )
            running_xid = int(await in_progress.fetchval("SELECT txid_current()")) & XID
            await before.execute("INSERT INTO departments (code, name) VALUES ('BEF', 'before')")
            # Committed without waiting for the WAL to reach disk: visible at once.
            await lazy.execute("INSERT INTO departments (code, name) VALUES ('LAZ', 'lazy')")
            async with database.connect() as connection, connection.begin():
                position = await feed.position_in(connection)
                counted = set(
                    (await connection.execute(text("SELECT code FROM departments"))).scalars()
                )
                await running.commit()
                await after.execute("INSERT INTO departments (code, name) VALUES ('AFT', 'after')")
                # The snapshot stays what it was, whatever commits meanwhile.
                assert (
                    set((await connection.execute(text("SELECT code FROM departments"))).scalars())
                    == counted
                )
            assert position == 0
            assert counted == {"BEF", "LAZ"}

            changes = await reader.changes(4)
            assert [c.new["code"] for c in changes if c.new] == ["BEF", "LAZ", "RUN", "AFT"]
            assert changes[2].transaction == running_xid
            assert [feed.counted_at_start(c) for c in changes] == [True, True, False, False]
    finally:
        await database.dispose()


@pytest.mark.parametrize(
    ("snapshot", "seen", "unseen"),
    [
        ("100:105:100,103", [99, 101, 102, 104], [100, 103, 105, 200]),
        # Transaction ids wrap around at 2**32; pg_current_snapshot counts epochs above.
        (f"{2**32 + 10}:{2**32 + 12}:", [2**32 - 5, 9, 10, 11], [12, 13]),
    ],
)
def test_start_snapshot_visibility(snapshot: str, seen: list[int], unseen: list[int]) -> None:
    start = StartSnapshot.parse(snapshot, "0/16B3D48")
    assert start.lsn_after == 0x16B3D48
    assert [xid for xid in seen if start.saw(xid & 0xFFFFFFFF)] == seen
    assert [xid for xid in unseen if start.saw(xid & 0xFFFFFFFF)] == []


def test_lsn_conversions() -> None:
    assert lsn_to_int("16/B374D848") == 0x16B374D848
    assert int_to_lsn(0x16B374D848) == "16/B374D848"
    assert int_to_lsn(lsn_to_int("0/0")) == "0/0"


# -- the slot: heartbeat, status, conflicts ------------------------------------------------


async def _until(condition: Callable[[], Any], within: float = WAIT) -> None:
    """Poll `condition` (an async callable) until it is true: server state has no event."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110 - polled, as there is nothing to await
            await asyncio.sleep(0.02)


async def test_heartbeat_moves_an_idle_slot_once_everything_delivered_is_confirmed(
    open_feed: OpenFeed, pg: Any, slot: str, postgres_server: PostgresServer
) -> None:
    app = await pg()
    elsewhere = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        async with open_feed(fallback_poll_seconds=0.05, heartbeat_seconds=0.1) as reader:
            await app.execute("INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')")
            (change,) = await reader.changes(1)
            # Delivered, not confirmed: WAL written elsewhere must not move the slot past it.
            for number in range(3):
                await elsewhere.execute(f"CREATE TEMP TABLE noise_{number} (x int)")
                await app.execute(
                    "INSERT INTO metric_rollups (series, department_id, hour_start, amount, "
                    "weighted, seconds) VALUES ('noise', $1, '2026-01-01', 0, 0, 0)",
                    number,
                )
            await elsewhere.execute("SELECT pg_switch_wal()")
            written = lsn_to_int(await app.fetchval("SELECT pg_current_wal_lsn()::text"))
            for _ in range(3):  # several heartbeat intervals of reading nothing new
                await reader.read_once()
                await asyncio.sleep(0.1)
            confirmed = lsn_to_int((await slot_row(app, slot))["confirmed"])
            assert confirmed <= commit_lsn(change.position)

            await reader.feed.confirm(change.position)

            async def moved() -> bool:
                row = await slot_row(app, slot)
                return lsn_to_int(row["confirmed"]) >= written

            await _until(moved)
            status = await reader.feed.slot_status()
            assert status["exists"] is True
            assert status["wal_status"] in ("reserved", "extended")
            assert isinstance(status["lag_bytes"], int)
            assert 0 <= status["lag_bytes"] < 1 << 20
            assert lsn_to_int(status["confirmed_flush_lsn"]) >= written
            await reader.nothing_more()
    finally:
        await elsewhere.close()


async def test_slot_status_reports_lag_behind_the_server(
    open_feed: OpenFeed, pg: Any, slot: str
) -> None:
    app = await pg()
    async with open_feed(heartbeat_seconds=3600) as reader:
        before = await reader.feed.slot_status()
        for number in range(20):
            await app.execute(
                "INSERT INTO departments (code, name) VALUES ($1, 'lag')", f"L{number}"
            )
        after = await reader.feed.slot_status()
        assert after["lag_bytes"] > before["lag_bytes"]
        assert after["active"] is False  # peeking does not hold the slot
    gone = f"{slot}_gone"
    async with open_feed(slot=gone) as reader:
        await app.execute("SELECT pg_drop_replication_slot($1)", gone)
        assert await reader.feed.slot_status() == {"slot": gone, "exists": False}


@pytest.mark.parametrize(
    ("create", "message"),
    [
        ("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", "'test_decoding'"),
        ("SELECT pg_create_physical_replication_slot($1)", "physical"),
        ("OTHER DATABASE", "database 'postgres'"),
    ],
)
async def test_a_slot_of_another_plugin_or_database_is_refused_clearly(
    database_url: str, postgres_server: PostgresServer, create: str, message: str
) -> None:
    name = f"taken_{make_url(database_url).database}"
    connection = await asyncpg.connect(postgres_server.admin_dsn)  # the `postgres` database
    try:
        if create == "OTHER DATABASE":
            await connection.execute(
                "SELECT pg_create_logical_replication_slot($1, 'wal2json')", name
            )
        else:
            await connection.execute(create, name)
        with pytest.raises(ChangeFeedError) as refused:
            async with PostgresChangeFeed(database_url, "test", slot=name):
                pass
        assert message in str(refused.value)
        assert "LIVEDASH_FEED_SLOT" in str(refused.value)
    finally:
        await connection.execute("SELECT pg_drop_replication_slot($1)", name)
        await connection.close()


async def test_a_missing_output_plugin_is_named_with_its_remedy(
    database_url: str, slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("livedash.changefeed.postgres.PLUGIN", "no_such_plugin")
    with pytest.raises(ChangeFeedError, match="no_such_plugin output plugin is not installed"):
        async with PostgresChangeFeed(database_url, "test", slot=slot):
            pass


async def test_feeds_starting_together_share_the_slot_one_creates(
    database_url: str, slot: str, pg: Any
) -> None:
    feeds = [PostgresChangeFeed(database_url, f"c{n}", slot=slot) for n in range(4)]
    try:
        await asyncio.gather(*(feed.__aenter__() for feed in feeds))
        app = await pg()
        assert (await slot_row(app, slot))["plugin"] == "wal2json"
    finally:
        for feed in feeds:
            await feed.__aexit__(None, None, None)


async def test_a_feed_waits_for_the_slot_another_is_still_creating(
    database_url: str, slot: str, pg: Any
) -> None:
    # A slot's snapshot waits for the transactions running when it is created; until then the
    # slot is listed without a confirmed position (and for a moment without its output plugin:
    # a second feed then took it for someone else's, in CI).
    app, blocker = await pg(), await pg()
    holding = blocker.transaction()
    await holding.start()
    await blocker.execute("INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')")
    creator = PostgresChangeFeed(database_url, "c0", slot=slot)
    joiner = PostgresChangeFeed(database_url, "c1", slot=slot)
    try:
        creating = asyncio.ensure_future(creator.__aenter__())
        await read_until(
            lambda: app.fetchval(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot
            ),
            lambda found: found == 1,
            what="the slot being created",
            every=0.02,
        )
        with capture_logs() as logs:
            joining = asyncio.ensure_future(joiner.__aenter__())
            await read_until(
                lambda: _joined_or_waiting(joining, logs),
                lambda seen: seen,
                what="the second feed's verdict",
                every=0.02,
            )
            assert not joining.done(), joining.exception()
        await holding.commit()
        await asyncio.gather(creating, joining)
        assert (await slot_row(app, slot))["plugin"] == "wal2json"
    finally:
        for feed in (creator, joiner):
            await feed.__aexit__(None, None, None)


_SLOTS_NAMED = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1"


async def _joined_or_waiting(joining: asyncio.Future[Any], logs: list[dict[str, Any]]) -> bool:
    return joining.done() or any(e["event"] == "changefeed_slot_being_created" for e in logs)


async def test_a_new_reader_takes_the_slot_from_one_that_still_streams_it(
    open_feed: OpenFeed, pg: Any, slot: str
) -> None:
    # A deposed leader that froze still holds its replication connection; the new leader
    # must not wait for the server to notice, and the old one must not read on.
    app = await pg()
    async with open_feed() as deposed:
        await app.execute("INSERT INTO departments (code, name) VALUES ('ED', 'Emergency')")
        assert keys(await deposed.changes(1)) == [("departments", Op.INSERT, "ED")]
        holder = await app.fetchval(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", slot
        )
        assert holder is not None
        async with open_feed() as leader:
            await app.execute("INSERT INTO departments (code, name) VALUES ('CARD', 'Cardio')")
            # Nothing was stored: the new reader starts where the slot was, before ED.
            assert keys(await leader.changes(2)) == [
                ("departments", Op.INSERT, "ED"),
                ("departments", Op.INSERT, "CARD"),
            ]
            with pytest.raises(ChangeFeedError, match="replication stream broke"):
                await deposed.batch()
            now_active = await app.fetchval(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", slot
            )
            assert now_active not in (None, holder)


# -- the whole service ---------------------------------------------------------------------


async def _truth(dsn: str) -> dict[tuple[str, str | None], int]:
    """patients_total and beds_occupied by department and for the hospital, by plain SQL."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT d.code, "
            "(SELECT count(*) FROM patients p WHERE p.department_id = d.id) AS patients, "
            "(SELECT count(*) FROM beds b JOIN rooms r ON r.id = b.room_id "
            " WHERE r.department_id = d.id AND b.status = 'occupied') AS occupied "
            "FROM departments d"
        )
    finally:
        await connection.close()
    truth: dict[tuple[str, str | None], int] = {}
    for row in rows:
        truth["patients_total", row["code"]] = row["patients"]
        truth["beds_occupied", row["code"]] = row["occupied"]
    truth["patients_total", None] = sum(row["patients"] for row in rows)
    truth["beds_occupied", None] = sum(row["occupied"] for row in rows)
    return truth


async def _screen_equals_truth(client: Recorder, dsn: str) -> None:
    truth = await _truth(dsn)

    def screen() -> dict[Any, Any]:
        return {key: value for key, value in client.view().items() if key in truth}

    try:
        await client.until(lambda: screen() == truth)
    except TimeoutError:
        pytest.fail(f"the screen never equalled SQL: screen {screen()}, sql {truth}")


async def test_service_follows_psql_writes_across_a_restart(
    hospital: dict[str, int],
    server: LiveServer,
    serve: Serve,
    connect: Connect,
    token: Any,
    dsn: str,
) -> None:
    metrics = {"metrics": ["patients_total", "beds_occupied"]}
    client = await connect(server, token())
    assert (await client.call("subscribe_metrics", metrics))["ok"] is True
    await client.next("metrics_snapshot")
    ed, card = hospital["ED"], hospital["CARD"]

    await psql(
        dsn,
        "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
        f"VALUES ({ed}, 'from psql', 'registered', true, now() AT TIME ZONE 'UTC')",
    )
    update = await client.next("dashboard_update", update_of("patients_total", "ED"))
    assert update["value"] == 2
    await psql(dsn, f"UPDATE beds SET status = 'occupied' WHERE id = {hospital['ED-1A']}")
    await client.next("dashboard_update", update_of("beds_occupied", "ED", 1))
    await _screen_equals_truth(client, dsn)

    await server.stop()
    # While no service runs: one transaction of several changes, and single ones.
    await psql(
        dsn,
        "BEGIN; "
        f"UPDATE beds SET status = 'occupied' WHERE id IN ({hospital['CARD-1A']}, "
        f"{hospital['CARD-2B']}); "
        "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
        f"VALUES ({card}, 'while down', 'registered', false, now() AT TIME ZONE 'UTC'); "
        "COMMIT;",
    )
    await psql(dsn, "DELETE FROM patients WHERE name = 'from psql'")
    await psql(dsn, f"UPDATE beds SET status = 'free' WHERE id = {hospital['ED-1A']}")

    restarted = await serve()
    after = await connect(restarted, token())
    assert (await after.call("subscribe_metrics", metrics))["ok"] is True
    await after.next("metrics_snapshot")
    await _screen_equals_truth(after, dsn)

    # And it goes on following, counting each change once.
    await psql(
        dsn,
        "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
        f"VALUES ({card}, 'after restart', 'registered', false, now() AT TIME ZONE 'UTC')",
    )
    await after.next("dashboard_update", update_of("patients_total", "CARD", 3))
    await _screen_equals_truth(after, dsn)
    assert (await _truth(dsn))["patients_total", None] == 4
