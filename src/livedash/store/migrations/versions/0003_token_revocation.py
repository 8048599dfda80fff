"""Token revocation: `users.tokens_valid_after` and the `revoked_tokens` table.

Revision ID: 0003
Revises: 0002

The column is added in place (no batch copy of `users`, which would lose its change-capture
triggers); the triggers are re-created to capture it, so signing a user out reaches the feed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from livedash.store.capture import capture_trigger_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

USER_COLUMNS = ["id", "username", "role", "departments", "active"]


def upgrade() -> None:
    op.add_column("users", sa.Column("tokens_valid_after", sa.DateTime(), nullable=True))
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("jti"),
    )
    if op.get_context().dialect.name == "sqlite":
        for statement in capture_trigger_sql("users", [*USER_COLUMNS, "tokens_valid_after"]):
            op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        # SQLite cannot drop a column that a trigger still names.
        for statement in capture_trigger_sql("users", USER_COLUMNS):
            op.execute(statement)
    op.drop_table("revoked_tokens")
    op.drop_column("users", "tokens_valid_after")
