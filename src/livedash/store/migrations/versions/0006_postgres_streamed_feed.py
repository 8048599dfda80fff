"""PostgreSQL: no wake-up trigger any more, as the feed streams its slot.

Revision ID: 0006
Revises: 0005

The change feed now holds a replication connection and the server sends each transaction as
it commits, so the `NOTIFY livedash_changes` that every write to a watched table sent (0005)
only cost the hospital's own writes. The whole old rows in the WAL (REPLICA IDENTITY FULL)
stay: the feed still needs them.
"""

from __future__ import annotations

from alembic import op

from livedash.store.capture import NOTIFY_CHANNEL, WATCHED

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_FUNCTION = "livedash_notify_changes"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in WATCHED:
        op.execute(f'DROP TRIGGER IF EXISTS livedash_notify_{table} ON "{table}"')
    op.execute(f"DROP FUNCTION IF EXISTS {_FUNCTION}()")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE OR REPLACE FUNCTION {_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_notify('{NOTIFY_CHANNEL}', ''); RETURN NULL; END $$"
    )
    for table in WATCHED:
        op.execute(
            f"CREATE TRIGGER livedash_notify_{table} AFTER INSERT OR UPDATE OR DELETE "
            f'OR TRUNCATE ON "{table}" FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()'
        )
