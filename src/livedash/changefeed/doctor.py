"""`livedash doctor`: can the configured database (and Redis) run the service, and if not, why.

On PostgreSQL the change feed reads a logical replication slot through the wal2json plugin
(`changefeed/postgres.py`), which needs server settings, an installed plugin, role rights and
the schema of migration 0005; each is checked here and, when wrong, reported with the exact
statement or command that fixes it. SQLite, the embedded default, needs none of that: only
its file and migrations are checked. Nothing is changed: the one thing created is a temporary
slot (dropped at once) that proves the plugin loads.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg2
import psycopg2.extras
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from livedash.changefeed.postgres import PLUGIN
from livedash.settings import Settings
from livedash.store.engine import is_sqlite, libpq_dsn
from livedash.store.migrate import alembic_config
from livedash.store.models import WATCHED_TABLES

TIMEOUT_SECONDS = 5.0
SLOT_TEST_TIMEOUT = "10s"  # creating a slot waits for the transactions running at that moment
GOOD_WAL_STATUS = ("reserved", "extended")
# The feed stores its position, and the history its roll-ups, in one transaction.
FEED_WRITES = ("feed_positions", "metric_rollups")
_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")
_RESTART = "then restart PostgreSQL (e.g. `systemctl restart postgresql`)"
MIGRATE = "livedash migrate"


@dataclass(frozen=True, slots=True)
class Check:
    """One thing checked: whether it is right, what was found, and how to make it right."""

    name: str
    ok: bool
    detail: str
    remedy: str = ""


@dataclass(slots=True)
class Report:
    """Every check of one configuration."""

    backend: str  # "postgresql" or "sqlite"
    target: str  # the database URL, password hidden
    checks: list[Check] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]


def quote_identifier(name: str) -> str:
    """`name` as SQL writes it: bare when it may be, else double-quoted."""
    if _PLAIN_IDENTIFIER.match(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def hide_password(url: str) -> str:
    """`url` with the password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _error(error: BaseException) -> str:
    """An exception as one line, for a report."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


async def run_doctor(settings: Settings, *, connect_seconds: float = TIMEOUT_SECONDS) -> Report:
    """Check everything the configured backend needs; never raises for what it finds."""
    url = make_url(settings.database_url)
    report = Report(url.get_backend_name(), url.render_as_string(hide_password=True))
    if is_sqlite(settings.database_url):
        report.note = (
            "SQLite, the embedded default, needs no server settings, replication slot, "
            "plugin or Redis: only its file and migrations are checked."
        )
        report.checks += check_sqlite(settings.database_url)
    elif report.backend == "postgresql":
        report.checks += await check_postgres(
            settings.database_url, settings.feed_slot, connect_seconds=connect_seconds
        )
    else:
        report.checks.append(
            Check(
                "database",
                False,
                f"livedash has no change feed for the {report.backend!r} backend",
                "set LIVEDASH_DATABASE_URL to a postgresql+asyncpg:// or sqlite+aiosqlite:/// URL",
            )
        )
    if settings.redis_url is not None:
        report.checks.append(await check_redis(settings.redis_url, connect_seconds=connect_seconds))
    return report


# -- migrations (both backends) ------------------------------------------------------------


def _script(database_url: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(database_url))


def migration_check(database_url: str, current: str | None) -> Check:
    """Whether the database's Alembic revision `current` is this livedash's head."""
    script = _script(database_url)
    heads = set(script.get_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    head = ", ".join(sorted(heads))
    if current is None:
        return Check("migrations", False, "the schema was never created", MIGRATE)
    if current in heads:
        return Check("migrations", True, f"at head ({current})")
    if current in known:
        return Check("migrations", False, f"at {current}, head is {head}", MIGRATE)
    return Check(
        "migrations",
        False,
        f"at {current}, which this livedash does not know (head {head}): a newer livedash "
        "migrated it",
        "run the livedash version that migrated this database, or upgrade livedash",
    )


# -- SQLite --------------------------------------------------------------------------------


def check_sqlite(database_url: str) -> list[Check]:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        return [Check("database file", True, "in-memory database: nothing is kept to check")]
    path = Path(database)
    if not path.exists():
        return [Check("database file", False, f"{path} does not exist", f"{MIGRATE} (creates it)")]
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=TIMEOUT_SECONDS)
    except sqlite3.Error as error:
        return [Check("database file", False, f"{path}: {_error(error)}", "")]
    try:
        try:
            journal = str(connection.execute("PRAGMA journal_mode").fetchone()[0])
            has_version = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
            ).fetchone()
            row = (
                connection.execute("SELECT version_num FROM alembic_version").fetchone()
                if has_version
                else None
            )
        except sqlite3.Error as error:
            return [
                Check(
                    "database file",
                    False,
                    f"{path} is not a readable SQLite database ({_error(error)})",
                    "point --db or LIVEDASH_DATABASE_URL at the livedash database file",
                )
            ]
    finally:
        connection.close()
    checks: list[Check] = []
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    if not writable:
        checks.append(
            Check(
                "database file",
                False,
                f"{path} (or its directory, where SQLite keeps its -wal file) is not writable",
                f"give the service's user write access to {path.parent}",
            )
        )
    elif journal.lower() != "wal":
        checks.append(
            Check(
                "database file",
                False,
                f"{path} uses journal_mode {journal}, not WAL: readers would block writers",
                MIGRATE,
            )
        )
    else:
        checks.append(Check("database file", True, f"{path}, journal_mode WAL, writable"))
    checks.append(migration_check(database_url, str(row[0]) if row else None))
    return checks


# -- PostgreSQL ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Found:
    """What is checked, and what one check learns that a later one needs."""

    database_url: str
    slot: str
    role: str = ""
    database: str = ""
    major: int = 0
    migrated: bool = False
    slot_creatable: bool = False
    may_replicate: bool = False


def unreachable_check(database_url: str, error: BaseException) -> Check:
    """The server could not be reached or refused the connection: why, and what to do."""
    url = make_url(database_url)
    where = f"{url.host or 'localhost'}:{url.port or 5432}, database {url.database}"
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return Check(
            "server",
            False,
            f"{where}: the database does not exist",
            f"CREATE DATABASE {quote_identifier(url.database or '')};  then {MIGRATE}",
        )
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        return Check(
            "server",
            False,
            f"{where}: {error}",
            f"GRANT CONNECT ON DATABASE {quote_identifier(url.database or '')} "
            f"TO {quote_identifier(url.username or '')};",
        )
    if isinstance(
        error, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        return Check(
            "server",
            False,
            f"{where}: {error}",
            "check the user and password in LIVEDASH_DATABASE_URL, and pg_hba.conf on the server",
        )
    return Check(
        "server",
        False,
        f"cannot reach {where}: {_error(error)}",
        "check LIVEDASH_DATABASE_URL, that PostgreSQL runs there, and that it accepts "
        "connections from this host (listen_addresses, pg_hba.conf, firewalls)",
    )


async def check_postgres(
    database_url: str, slot: str, *, connect_seconds: float = TIMEOUT_SECONDS
) -> list[Check]:
    dsn = libpq_dsn(database_url)
    try:
        connection = await asyncpg.connect(dsn, timeout=connect_seconds)
    except Exception as error:  # every way of failing to connect is reported
        return [unreachable_check(database_url, error)]
    found = _Found(database_url, slot)
    checks: list[Check] = []
    try:
        for step in (
            _server,
            _wal_level,
            _replication_slots,
            _wal_senders,
            _role,
            _database_access,
            _migrations,
            _table_rights,
        ):
            checks.append(await _guarded(step, connection, found))
        checks.append(await _plugin(dsn, found, connect_seconds))
        for step in (_slot, _replica_identity):
            checks.append(await _guarded(step, connection, found))
        checks.append(await _replication_connection(dsn, found, connect_seconds))
    finally:
        await connection.close(timeout=connect_seconds)
    return checks


Step = Callable[[asyncpg.Connection, _Found], Awaitable[Check]]


async def _guarded(step: Step, connection: asyncpg.Connection, found: _Found) -> Check:
    """Run one check; an unexpected database error fails that check, not the others."""
    try:
        result = await step(connection, found)
    except (asyncpg.PostgresError, OSError) as error:
        label = step.__name__.strip("_").replace("_", " ")
        return Check(label, False, f"could not be checked: {_error(error)}")
    return result


async def _server(connection: asyncpg.Connection, found: _Found) -> Check:
    row = await connection.fetchrow(
        "SELECT current_user, current_database(), current_setting('server_version'), "
        "current_setting('server_version_num')::int"
    )
    found.role, found.database, version, number = row[0], row[1], row[2], row[3]
    found.major = number // 10000
    url = make_url(found.database_url)
    return Check(
        "server",
        True,
        f"PostgreSQL {version} at {url.host or 'localhost'}:{url.port or 5432}, "
        f"database {found.database}, role {found.role}",
    )


async def _setting(connection: asyncpg.Connection, name: str) -> tuple[str, bool]:
    row = await connection.fetchrow(
        "SELECT setting, pending_restart FROM pg_settings WHERE name = $1", name
    )
    return str(row["setting"]), bool(row["pending_restart"])


async def _wal_level(connection: asyncpg.Connection, found: _Found) -> Check:
    level, pending = await _setting(connection, "wal_level")
    if level == "logical":
        return Check("wal_level", True, "logical")
    if pending:
        return Check(
            "wal_level",
            False,
            f"{level!r}; a new value is set but waits for a restart",
            _RESTART.removeprefix("then "),
        )
    return Check(
        "wal_level",
        False,
        f"{level!r}; logical decoding needs 'logical'",
        f"ALTER SYSTEM SET wal_level = logical;  {_RESTART}",
    )


async def _replication_slots(connection: asyncpg.Connection, found: _Found) -> Check:
    setting, _pending = await _setting(connection, "max_replication_slots")
    most = int(setting)
    row = await connection.fetchrow(
        "SELECT count(*), coalesce(bool_or(slot_name = $1), false) FROM pg_replication_slots",
        found.slot,
    )
    used, ours = int(row[0]), bool(row[1])
    if most > 0 and (used < most or ours):
        return Check("replication slots", True, f"{used} of max_replication_slots {most} in use")
    return Check(
        "replication slots",
        False,
        f"{used} of max_replication_slots {most} in use: none free for a new slot",
        f"ALTER SYSTEM SET max_replication_slots = {max(10, used + 2)};  {_RESTART}",
    )


async def _wal_senders(connection: asyncpg.Connection, found: _Found) -> Check:
    setting, _pending = await _setting(connection, "max_wal_senders")
    most = int(setting)
    used = int(
        await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
        )
    )
    if most > 0 and used < most:
        return Check("WAL senders", True, f"{used} of max_wal_senders {most} in use")
    return Check(
        "WAL senders",
        False,
        f"{used} of max_wal_senders {most} in use",
        f"ALTER SYSTEM SET max_wal_senders = {max(10, used + 2)};  {_RESTART}",
    )


async def _role(connection: asyncpg.Connection, found: _Found) -> Check:
    row = await connection.fetchrow(
        "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user"
    )
    found.may_replicate = bool(row["rolsuper"] or row["rolreplication"])
    if row["rolsuper"]:
        return Check("role", True, f"{found.role} is a superuser")
    if row["rolreplication"]:
        return Check("role", True, f"{found.role} has the REPLICATION attribute")
    return Check(
        "role",
        False,
        f"{found.role} is neither superuser nor REPLICATION: it may not read a replication slot",
        f"ALTER ROLE {quote_identifier(found.role)} WITH REPLICATION;",
    )


async def _database_access(connection: asyncpg.Connection, found: _Found) -> Check:
    allowed = await connection.fetchval(
        "SELECT has_database_privilege(current_database(), 'CONNECT')"
    )
    if allowed:
        return Check("database access", True, f"CONNECT on {found.database}")
    return Check(
        "database access",
        False,
        f"{found.role} lacks CONNECT on {found.database}: new connections will be refused",
        f"GRANT CONNECT ON DATABASE {quote_identifier(found.database)} "
        f"TO {quote_identifier(found.role)};",
    )


async def _migrations(connection: asyncpg.Connection, found: _Found) -> Check:
    exists = await connection.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
    current: str | None = None
    if exists:
        try:
            current = await connection.fetchval("SELECT version_num FROM public.alembic_version")
        except asyncpg.InsufficientPrivilegeError:
            return Check(
                "migrations",
                False,
                f"{found.role} may not read alembic_version",
                f"GRANT SELECT ON public.alembic_version TO {quote_identifier(found.role)};",
            )
    check = migration_check(found.database_url, current)
    found.migrated = check.ok
    return check


async def _table_rights(connection: asyncpg.Connection, found: _Found) -> Check:
    rows = await connection.fetch(
        "SELECT name, c.oid IS NOT NULL AS present, "
        "CASE WHEN c.oid IS NULL THEN NULL ELSE has_table_privilege(c.oid, 'SELECT') END "
        "AS can_select, "
        "CASE WHEN c.oid IS NULL THEN NULL "
        "ELSE has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT') "
        "AND has_table_privilege(c.oid, 'UPDATE') END AS can_write "
        "FROM unnest($1::text[]) AS name "
        "LEFT JOIN pg_class c ON c.relname = name AND c.relnamespace = 'public'::regnamespace",
        [*WATCHED_TABLES, *FEED_WRITES],
    )
    missing = [row["name"] for row in rows if not row["present"]]
    if missing:
        return Check("table rights", False, f"tables missing: {', '.join(missing)}", MIGRATE)
    role = quote_identifier(found.role)
    unreadable = [
        row["name"] for row in rows if row["name"] in WATCHED_TABLES and not row["can_select"]
    ]
    unwritable = [
        row["name"] for row in rows if row["name"] in FEED_WRITES and not row["can_write"]
    ]
    remedies = []
    if unreadable:
        tables = ", ".join(f"public.{quote_identifier(name)}" for name in unreadable)
        remedies.append(f"GRANT SELECT ON {tables} TO {role};")
    if unwritable:
        tables = ", ".join(f"public.{quote_identifier(name)}" for name in unwritable)
        remedies.append(f"GRANT SELECT, INSERT, UPDATE ON {tables} TO {role};")
    if remedies:
        problems = []
        if unreadable:
            problems.append(f"no SELECT on {', '.join(unreadable)}")
        if unwritable:
            problems.append(f"no SELECT, INSERT and UPDATE on {', '.join(unwritable)}")
        return Check("table rights", False, "; ".join(problems), "\n".join(remedies))
    return Check(
        "table rights",
        True,
        f"SELECT on the {len(WATCHED_TABLES)} watched tables; SELECT, INSERT, UPDATE on "
        + ", ".join(FEED_WRITES),
    )


async def _plugin(dsn: str, found: _Found, connect_seconds: float) -> Check:
    """Create and drop a temporary wal2json slot in a session of its own."""
    name = f"livedash_doctor_{uuid.uuid4().hex[:16]}"
    install = (
        f"install the {PLUGIN} package on the database server (Debian/Ubuntu: "
        f"apt-get install postgresql-{found.major or '<major>'}-{PLUGIN}; RHEL: "
        f"dnf install {PLUGIN}_{found.major or '<major>'}); no restart is needed"
    )
    try:
        connection = await asyncpg.connect(dsn, timeout=connect_seconds)
    except Exception as error:
        return Check(f"{PLUGIN} plugin", False, f"could not be checked: {_error(error)}")
    try:
        await connection.execute(f"SET statement_timeout = {quote_literal(SLOT_TEST_TIMEOUT)}")
        await connection.execute(
            "SELECT pg_create_logical_replication_slot($1, $2, true)", name, PLUGIN
        )
        await connection.execute("SELECT pg_drop_replication_slot($1)", name)
    except asyncpg.UndefinedFileError as error:
        return Check(f"{PLUGIN} plugin", False, f"not installed: {error}", install)
    except asyncpg.ObjectNotInPrerequisiteStateError as error:
        return Check(
            f"{PLUGIN} plugin",
            False,
            f"cannot be tested until wal_level = logical ({error})",
            "once wal_level (above) is fixed, run `livedash doctor` again",
        )
    except asyncpg.InsufficientPrivilegeError as error:
        return Check(
            f"{PLUGIN} plugin",
            False,
            f"cannot be tested: the role may not create replication slots ({error})",
            "once the role (above) is fixed, run `livedash doctor` again",
        )
    except asyncpg.ConfigurationLimitExceededError as error:
        return Check(
            f"{PLUGIN} plugin",
            False,
            f"cannot be tested: {error}",
            "free a replication slot or raise max_replication_slots (above)",
        )
    except asyncpg.QueryCanceledError:
        return Check(
            f"{PLUGIN} plugin",
            False,
            f"creating a test slot waited over {SLOT_TEST_TIMEOUT} for running transactions "
            "to end (a slot starts only once they have)",
            "look for long transactions: SELECT pid, xact_start, state, query FROM "
            "pg_stat_activity WHERE xact_start < now() - interval '1 minute'; "
            "then run `livedash doctor` again",
        )
    except asyncpg.PostgresError as error:
        return Check(f"{PLUGIN} plugin", False, f"cannot create a test slot: {_error(error)}")
    finally:
        await connection.close(timeout=connect_seconds)  # drops the temporary slot in any case
    found.slot_creatable = True
    return Check(f"{PLUGIN} plugin", True, "installed (a temporary slot was created and dropped)")


@dataclass(frozen=True, slots=True)
class SlotState:
    """A row of pg_replication_slots, as far as the feed cares."""

    name: str
    slot_type: str
    plugin: str | None
    database: str | None
    here: bool
    active_pid: int | None
    wal_status: str | None
    lag_bytes: int | None
    safe_wal_size: int | None


def slot_check(slot: str, state: SlotState | None, *, creatable: bool) -> Check:
    """Whether the feed's slot (or its absence) is usable."""
    label = f"slot {slot}"
    if state is None:
        if creatable:
            return Check(label, True, "does not exist yet; the service creates it when it starts")
        return Check(
            label,
            False,
            "does not exist, and cannot be created until the problems above are fixed",
            "once the checks above pass, the service creates the slot when it starts",
        )
    if state.slot_type != "logical" or state.plugin != PLUGIN or not state.here:
        if state.slot_type != "logical":
            whose = f"is a {state.slot_type} slot"
        elif state.plugin != PLUGIN:
            whose = f"decodes with {state.plugin}, not {PLUGIN}"
        else:
            whose = f"belongs to database {state.database}"
        return Check(
            label,
            False,
            f"{whose}: it is not this service's slot",
            "set LIVEDASH_FEED_SLOT to a free name; or, if nothing uses that slot: "
            f"SELECT pg_drop_replication_slot({quote_literal(slot)});",
        )
    lag = f"{state.lag_bytes} bytes behind the server's WAL" if state.lag_bytes is not None else ""
    use = f"read by pid {state.active_pid}" if state.active_pid else "not in use now"
    detail = f"{PLUGIN}, wal_status {state.wal_status}, {lag}, {use}"
    if state.wal_status is None or state.wal_status in GOOD_WAL_STATUS:
        return Check(label, True, detail)
    if state.wal_status == "unreserved":
        return Check(
            label,
            False,
            f"{detail}: the WAL it still needs is past max_slot_wal_keep_size and will be "
            "removed at the next checkpoint",
            "start livedash now so the slot catches up; to keep more WAL: "
            "ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf();",
        )
    return Check(
        label,
        False,
        f"{detail}: the WAL it needs is gone, so it cannot be read any more",
        f"SELECT pg_drop_replication_slot({quote_literal(slot)});  then restart livedash: "
        "it creates the slot anew and recounts every metric from the rows (history roll-ups "
        "miss the changes in between)",
    )


async def _slot(connection: asyncpg.Connection, found: _Found) -> Check:
    row = await connection.fetchrow(
        "SELECT slot_type, plugin, database, database = current_database() AS here, "
        "active_pid, wal_status, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag, "
        "safe_wal_size FROM pg_replication_slots WHERE slot_name = $1",
        found.slot,
    )
    state = (
        None
        if row is None
        else SlotState(
            found.slot,
            str(row["slot_type"]),
            row["plugin"],
            row["database"],
            bool(row["here"]),
            row["active_pid"],
            row["wal_status"],
            None if row["lag"] is None else int(row["lag"]),
            row["safe_wal_size"],
        )
    )
    return slot_check(found.slot, state, creatable=found.slot_creatable)


def _schema_remedy(found: _Found, statements: Sequence[str]) -> str:
    """`livedash migrate` if the schema is behind, else the statements that repair it."""
    if not found.migrated:
        return MIGRATE
    return "\n".join(statements)


async def _replica_identity(connection: asyncpg.Connection, found: _Found) -> Check:
    rows = await connection.fetch(
        "SELECT name, c.relreplident::text AS relreplident FROM unnest($1::text[]) AS name "
        "LEFT JOIN pg_class c ON c.relname = name AND c.relnamespace = 'public'::regnamespace",
        list(WATCHED_TABLES),
    )
    wrong = [row["name"] for row in rows if row["relreplident"] != "f"]
    if not wrong:
        return Check("replica identity", True, f"FULL on the {len(rows)} watched tables")
    return Check(
        "replica identity",
        False,
        f"not FULL on {', '.join(wrong)}: updates and deletes would lack their old rows",
        _schema_remedy(
            found,
            [
                f"ALTER TABLE public.{quote_identifier(name)} REPLICA IDENTITY FULL;"
                for name in wrong
            ],
        ),
    )


async def _replication_connection(dsn: str, found: _Found, connect_seconds: float) -> Check:
    """Open the kind of connection the feed streams the slot on."""

    def connect() -> None:
        connection = psycopg2.connect(
            dsn,
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            connect_timeout=max(1, round(connect_seconds)),
        )
        connection.close()

    try:
        await asyncio.to_thread(connect)
    except psycopg2.Error as error:
        reason = str(error).strip()
        if not found.may_replicate:
            remedy = "none of its own: the role needs REPLICATION (above)"
        elif "pg_hba.conf" in reason:
            remedy = (
                "allow this host in pg_hba.conf: a logical replication connection matches the "
                f"entries for database {found.database!r} (not the `replication` ones), then "
                "SELECT pg_reload_conf();"
            )
        else:
            remedy = "check max_wal_senders (above) and the server's log"
        return Check("replication connection", False, f"refused: {reason}", remedy)
    return Check("replication connection", True, f"{found.role} may stream the slot")


# -- Redis ---------------------------------------------------------------------------------


async def check_redis(redis_url: str, *, connect_seconds: float = TIMEOUT_SECONDS) -> Check:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    shown = hide_password(redis_url)
    client: Redis = Redis.from_url(
        redis_url, socket_connect_timeout=connect_seconds, socket_timeout=connect_seconds
    )
    try:
        await client.ping()
    except (RedisError, OSError) as error:
        return Check(
            "redis",
            False,
            f"cannot reach {shown}: {_error(error)}",
            "check LIVEDASH_REDIS_URL and that Redis runs and accepts connections from here; "
            "or unset LIVEDASH_REDIS_URL to run a single instance without it",
        )
    finally:
        await client.aclose()
    return Check("redis", True, f"{shown} answers PING")
