"""PostgreSQL change capture: full old rows in the WAL, and a wake-up at commit.

Revision ID: 0005
Revises: 0004

Logical decoding (the `wal2json` slot read by `changefeed/postgres.py`) carries the data. The
metric engine needs the whole old row of every update and delete (an updated bed moves from
one status count to another), so the watched tables log full rows (REPLICA IDENTITY FULL).
A statement-level trigger sends `NOTIFY livedash_changes` so the feed reads the slot as soon
as a transaction commits instead of polling it; PostgreSQL delivers a notification only at
commit and folds duplicates within one transaction, so it costs one message per commit.
Nothing is done on SQLite, which has its own trigger capture (0001).
"""

from __future__ import annotations

from alembic import op

from livedash.store.capture import NOTIFY_CHANNEL, WATCHED

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FUNCTION = "livedash_notify_changes"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE OR REPLACE FUNCTION {_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_notify('{NOTIFY_CHANNEL}', ''); RETURN NULL; END $$"
    )
    for table in WATCHED:
        op.execute(f'ALTER TABLE "{table}" REPLICA IDENTITY FULL')
        op.execute(
            f"CREATE TRIGGER livedash_notify_{table} AFTER INSERT OR UPDATE OR DELETE "
            f'OR TRUNCATE ON "{table}" FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()'
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in WATCHED:
        op.execute(f'DROP TRIGGER IF EXISTS livedash_notify_{table} ON "{table}"')
        op.execute(f'ALTER TABLE "{table}" REPLICA IDENTITY DEFAULT')
    op.execute(f"DROP FUNCTION IF EXISTS {_FUNCTION}()")
