"""`livedash doctor` against real PostgreSQL clusters, Redis and SQLite files.

Where the doctor prints a remedy, the tests run it as the administrator would and expect the
doctor to be satisfied afterwards: a remedy is only right if it works.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from click.testing import Result
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from livedash.changefeed.doctor import Check, SlotState, hide_password, quote_identifier, slot_check
from livedash.changefeed.postgres import PostgresChangeFeed
from livedash.cli import app
from livedash.store.engine import libpq_dsn
from livedash.store.migrate import upgrade
from livedash.testing.servers import PostgresServer, RedisServer, free_port, new_root
from tests.support.schema import head_revision


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI configures logging for its process, which here is the test run.
    monkeypatch.setattr("livedash.cli.configure_logging", lambda *args, **kwargs: None)


@pytest.fixture
def backend() -> str:
    return "postgres"


QUIET: dict[str, str | None] = {
    # The checks beyond the database's pass, whatever this machine runs: a free port, a
    # deployment's signing key and public address, no e-mail or Web Push.
    "LIVEDASH_PORT": str(free_port()),
    "LIVEDASH_JWT_SECRET": "doctor-test-secret-" + "x" * 40,
    "LIVEDASH_PUBLIC_URL": "https://livedash.example",
    "LIVEDASH_REDIS_URL": None,
    "LIVEDASH_SMTP_HOST": None,
    "LIVEDASH_VAPID_PRIVATE_KEY_FILE": None,
}


async def doctor(database_url: str, *args: str, **env: str | None) -> Result:
    """Run `livedash doctor` with only these settings (in a thread: it runs its own loop)."""
    environment: dict[str, str | None] = {
        "LIVEDASH_DATABASE_URL": database_url,
        "LIVEDASH_REDIS_URL": None,
        "LIVEDASH_FEED_SLOT": None,
        **QUIET,
    }
    environment.update({f"LIVEDASH_{name.upper()}": value for name, value in env.items()})
    return await asyncio.to_thread(CliRunner().invoke, app, ["doctor", *args], env=environment)


def line(result: Result, name: str) -> str:
    """The output line of check `name`."""
    found = [text for text in result.stdout.splitlines() if text[6:].startswith(name + " ")]
    assert len(found) == 1, result.stdout
    return found[0]


def remedies(result: Result) -> list[str]:
    """Every remedy printed, one entry per line of remedy."""
    fixes: list[str] = []
    taking = False
    for text in result.stdout.splitlines():
        if "fix: " in text:
            fixes.append(text.split("fix: ", 1)[1].strip())
            taking = True
        elif taking and text.startswith(" "):
            fixes.append(text.strip())
        else:
            taking = False
    return fixes


def statements(result: Result) -> list[str]:
    """The SQL statements among the remedies."""
    return [fix for fix in remedies(result) if fix.split()[0] in ("ALTER", "GRANT", "CREATE")]


def assert_all_ok(result: Result) -> None:
    assert result.exit_code == 0, result.stdout
    checks = [text for text in result.stdout.splitlines() if text[:6].strip() in ("OK", "FAIL")]
    assert checks
    assert all(text.startswith("OK ") for text in checks), result.stdout
    assert f"All {len(checks)} checks passed." in result.stdout


@pytest.fixture
def slot(database_url: str) -> str:
    return f"slot_{make_url(database_url).database}"


# -- PostgreSQL ----------------------------------------------------------------------------


async def test_a_healthy_postgres_and_redis_pass(
    database_url: str, slot: str, redis_server: RedisServer
) -> None:
    result = await doctor(database_url, feed_slot=slot, redis_url=redis_server.url)
    assert_all_ok(result)
    for name in ("server", "wal_level", "role", "migrations", "wal2json plugin", "redis"):
        assert line(result, name)
    assert "does not exist yet; the service creates it" in line(result, f"slot {slot}")
    # The temporary slot that proved the plugin is gone again.
    connection = await asyncpg.connect(libpq_dsn(database_url))
    try:
        leftover = (
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'livedash_doctor%'"
        )
        assert await connection.fetchval(leftover) == 0
        async with PostgresChangeFeed(database_url, "metrics", slot=slot):
            pass
        await connection.execute("INSERT INTO departments (code, name) VALUES ('ED', 'E')")
        with_slot = await doctor(database_url, feed_slot=slot, redis_url=redis_server.url)
        assert_all_ok(with_slot)
        slot_line = line(with_slot, f"slot {slot}")
        assert "wal2json, wal_status reserved" in slot_line
        assert "bytes behind the server's WAL" in slot_line
        assert int(slot_line.split("reserved, ")[1].split()[0]) > 0
    finally:
        await connection.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = $1",
            slot,
        )
        await connection.close()


@pytest.fixture(scope="module")
def replica_server() -> Iterator[PostgresServer]:
    """A second cluster, run with wal_level=replica: no logical decoding."""
    root = new_root("livedash-pg-replica-")
    server = PostgresServer(root, wal_level="replica").init().start()
    try:
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, server.create_database("hospital")).result()
        upgrade(server.url("hospital"))
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_wal_level_replica_fails_with_the_alter_system_remedy(
    replica_server: PostgresServer,
) -> None:
    result = await doctor(replica_server.url("hospital"))
    assert result.exit_code == 1, result.stdout
    assert line(result, "wal_level").startswith("FAIL")
    assert "'replica'" in line(result, "wal_level")
    assert "ALTER SYSTEM SET wal_level = logical;" in remedies(result)[0]
    assert "restart PostgreSQL" in remedies(result)[0]
    assert "until wal_level = logical" in line(result, "wal2json plugin")
    assert line(result, "slot livedash").startswith("FAIL")
    for name in ("server", "role", "migrations", "replica identity", "replication connection"):
        assert line(result, name).startswith("OK"), result.stdout
    assert result.stdout.rstrip().endswith("3 of 14 checks failed.")


@pytest.fixture
async def plain_role(database_url: str, postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A login role without REPLICATION that may read every table but `beds`, and may not
    write the roll-ups."""
    name = f"plain_{make_url(database_url).database}"
    admin = await asyncpg.connect(libpq_dsn(database_url))
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN")
        await admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}")
        await admin.execute(f"GRANT INSERT, UPDATE ON feed_positions, metric_rollups TO {name}")
        await admin.execute(f"REVOKE SELECT ON beds FROM {name}")
        await admin.execute(f"REVOKE UPDATE ON metric_rollups FROM {name}")
        yield name
    finally:
        await admin.execute(f"DROP OWNED BY {name}")
        await admin.execute(f"DROP ROLE {name}")
        await admin.close()


async def test_a_role_without_replication_gets_the_alter_role_remedy_and_it_works(
    database_url: str, slot: str, plain_role: str
) -> None:
    as_plain = make_url(database_url).set(username=plain_role).render_as_string(False)
    result = await doctor(as_plain, feed_slot=slot)
    assert result.exit_code == 1, result.stdout
    assert line(result, "role").startswith("FAIL")
    assert "neither superuser nor REPLICATION" in line(result, "role")
    assert "may not create replication slots" in line(result, "wal2json plugin")
    assert "replication role to start walsender" in line(result, "replication connection")
    assert "none of its own: the role needs REPLICATION (above)" in remedies(result)
    assert "no SELECT on beds; no SELECT, INSERT and UPDATE on metric_rollups" in line(
        result, "table rights"
    )
    fixes = statements(result)
    assert fixes == [
        f"ALTER ROLE {plain_role} WITH REPLICATION;",
        f"GRANT SELECT ON public.beds TO {plain_role};",
        f"GRANT SELECT, INSERT, UPDATE ON public.metric_rollups TO {plain_role};",
    ]

    admin = await asyncpg.connect(libpq_dsn(database_url))
    try:
        for statement in fixes:
            await admin.execute(statement)
    finally:
        await admin.close()
    assert_all_ok(await doctor(as_plain, feed_slot=slot))


async def test_schema_drift_is_repaired_by_the_printed_statements(
    database_url: str, slot: str
) -> None:
    admin = await asyncpg.connect(libpq_dsn(database_url))
    try:
        await admin.execute("ALTER TABLE rooms REPLICA IDENTITY DEFAULT")
        result = await doctor(database_url, feed_slot=slot)
        assert result.exit_code == 1, result.stdout
        assert "not FULL on rooms" in line(result, "replica identity")
        fixes = statements(result)
        assert fixes == ["ALTER TABLE public.rooms REPLICA IDENTITY FULL;"]
        for statement in fixes:
            await admin.execute(statement)
        assert_all_ok(await doctor(database_url, feed_slot=slot))

        # Behind on migrations, the remedy is to migrate.
        await admin.execute("UPDATE alembic_version SET version_num = '0004'")
        await admin.execute("ALTER TABLE rooms REPLICA IDENTITY DEFAULT")
        behind = await doctor(database_url, feed_slot=slot)
        assert f"at 0004, head is {head_revision()}" in line(behind, "migrations")
        assert remedies(behind) == ["livedash migrate", "livedash migrate"]
        await admin.execute("UPDATE alembic_version SET version_num = '9999'")
        ahead = await doctor(database_url, feed_slot=slot)
        assert "which this livedash does not know" in line(ahead, "migrations")
    finally:
        await admin.close()


async def test_a_slot_of_another_plugin_fails_with_a_remedy(database_url: str, slot: str) -> None:
    admin = await asyncpg.connect(libpq_dsn(database_url))
    try:
        await admin.execute("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", slot)
        result = await doctor(database_url, feed_slot=slot)
        assert result.exit_code == 1
        assert "decodes with test_decoding, not wal2json" in line(result, f"slot {slot}")
        assert f"SELECT pg_drop_replication_slot('{slot}');" in remedies(result)[0]
        assert "LIVEDASH_FEED_SLOT" in remedies(result)[0]
    finally:
        await admin.execute("SELECT pg_drop_replication_slot($1)", slot)
        await admin.close()


async def test_an_unreachable_server_fails_clearly_without_a_traceback(
    database_url: str, redis_server: RedisServer
) -> None:
    port = free_port()  # nothing listens there
    nowhere = f"postgresql+asyncpg://livedash:secret@127.0.0.1:{port}/hospital"
    result = await doctor(nowhere, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "secret" not in result.output
    server = line(result, "server")
    assert server.startswith("FAIL")
    assert f"cannot reach 127.0.0.1:{port}, database hospital" in server
    assert "listen_addresses, pg_hba.conf" in remedies(result)[0]
    assert line(result, "redis").startswith("FAIL")
    assert result.stdout.rstrip().endswith("2 of 4 checks failed.")

    missing = make_url(database_url).set(database="no_such_database").render_as_string(False)
    absent = await doctor(missing)
    assert absent.exit_code == 1
    assert "the database does not exist" in line(absent, "server")
    assert remedies(absent) == ["CREATE DATABASE no_such_database;  then livedash migrate"]


# -- SQLite --------------------------------------------------------------------------------


def test_sqlite_checks_only_its_file_and_migrations(tmp_path: Path) -> None:
    path = tmp_path / "hospital.db"
    runner = CliRunner()
    missing = runner.invoke(app, ["doctor", "--db", str(path)], env=QUIET)
    assert missing.exit_code == 1
    assert "needs no server settings, replication slot" in missing.stdout
    assert "does not exist" in line(missing, "database file")
    assert remedies(missing) == ["livedash migrate (creates it)"]
    assert not path.exists()  # the doctor changes nothing

    upgrade(f"sqlite+aiosqlite:///{path}")
    healthy = runner.invoke(app, ["doctor", "--db", str(path)], env=QUIET)
    assert_all_ok(healthy)
    assert "journal_mode WAL" in line(healthy, "database file")
    assert line(healthy, "migrations").endswith(f"at head ({head_revision()})")
    assert "wal_level" not in healthy.stdout

    path.with_name("other.db").write_bytes(b"not a database" * 100)
    garbage = runner.invoke(app, ["doctor", "--db", str(path.with_name("other.db"))])
    assert garbage.exit_code == 1
    assert "is not a readable SQLite database" in line(garbage, "database file")


# -- pieces --------------------------------------------------------------------------------


def _state(**changes: object) -> SlotState:
    values: dict[str, object] = {
        "name": "livedash",
        "slot_type": "logical",
        "plugin": "wal2json",
        "database": "hospital",
        "here": True,
        "active_pid": None,
        "wal_status": "reserved",
        "lag_bytes": 100,
        "safe_wal_size": None,
    }
    values.update(changes)
    return SlotState(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "ok", "words"),
    [
        (_state(), True, "wal_status reserved, 100 bytes behind"),
        (_state(wal_status="extended", active_pid=42), True, "read by pid 42"),
        (_state(wal_status="unreserved"), False, "max_slot_wal_keep_size"),
        (_state(wal_status="lost"), False, "the WAL it needs is gone"),
        (_state(slot_type="physical", plugin=None), False, "is a physical slot"),
        (_state(here=False, database="other"), False, "belongs to database other"),
    ],
)
def test_slot_states(state: SlotState, ok: bool, words: str) -> None:
    check = slot_check("livedash", state, creatable=True)
    assert check.ok is ok
    assert words in check.detail
    assert bool(check.remedy) is not ok
    if state.wal_status == "lost":
        assert check.remedy.startswith("SELECT pg_drop_replication_slot('livedash');")


def test_a_missing_slot_is_fine_only_if_it_can_be_created() -> None:
    assert slot_check("s", None, creatable=True).ok
    cannot = slot_check("s", None, creatable=False)
    assert cannot == Check(
        "slot s",
        False,
        "does not exist, and cannot be created until the problems above are fixed",
        "once the checks above pass, the service creates the slot when it starts",
    )


def test_quoting_and_hidden_passwords() -> None:
    assert quote_identifier("app_user") == "app_user"
    assert quote_identifier("App-User") == '"App-User"'
    assert quote_identifier('a"b') == '"a""b"'
    assert hide_password("redis://:pw@host:6380/1") == "redis://:***@host:6380/1"
    assert hide_password("redis://host/0") == "redis://host/0"
