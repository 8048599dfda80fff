"""Change capture on SQLite: triggers that copy every write into `change_log`.

Each watched table gets an AFTER INSERT, UPDATE and DELETE trigger that records the old and
new row as JSON in the same transaction as the write. SQLite runs one writer at a time, so the
log's AUTOINCREMENT sequence is commit order, and a reader only ever sees a gap-free prefix.
Because the triggers live in the database file, writes from any process are captured: the
simulator, a `sqlite3` shell, or the hospital's main application.
"""

from __future__ import annotations

from collections.abc import Sequence

_OPS = (("insert", "I"), ("update", "U"), ("delete", "D"))


def _json_row(alias: str, columns: Sequence[str]) -> str:
    pairs = ", ".join(f"'{column}', {alias}.\"{column}\"" for column in columns)
    return f"json_object({pairs})"


def trigger_names(table: str) -> list[str]:
    """Names of the three capture triggers of `table`."""
    return [f"livedash_capture_{table}_{event}" for event, _ in _OPS]


def capture_trigger_sql(table: str, columns: Sequence[str]) -> list[str]:
    """DDL that (re)creates the capture triggers of `table` for the given columns."""
    statements: list[str] = []
    for (event, op), name in zip(_OPS, trigger_names(table), strict=True):
        old = _json_row("OLD", columns) if op in ("U", "D") else "NULL"
        new = _json_row("NEW", columns) if op in ("I", "U") else "NULL"
        statements.append(f'DROP TRIGGER IF EXISTS "{name}"')
        statements.append(
            f'CREATE TRIGGER "{name}" AFTER {event.upper()} ON "{table}" BEGIN '
            "INSERT INTO change_log (table_name, op, old_row, new_row, committed_at) "
            f"VALUES ('{table}', '{op}', {old}, {new}, "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')); END"
        )
    return statements


def drop_trigger_sql(table: str) -> list[str]:
    """DDL that removes the capture triggers of `table`."""
    return [f'DROP TRIGGER IF EXISTS "{name}"' for name in trigger_names(table)]


NOTIFY_CHANNEL = "livedash_changes"
"""PostgreSQL: the channel on which a commit to a watched table woke the change feed (0005;
migration 0006 removed the triggers, as the feed streams its slot)."""

# The watched tables as of migration 0005 (a migration must not follow later model edits).
WATCHED = (
    "departments", "rooms", "beds", "patients", "admissions", "appointments", "bills",
    "payments", "staff", "staff_shifts", "users", "alerts",
)  # fmt: skip
