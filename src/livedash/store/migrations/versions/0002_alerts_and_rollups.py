"""Alerts (captured) and the hourly roll-ups of the historical series.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from livedash.store.capture import capture_trigger_sql, drop_trigger_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ALERT_COLUMNS = ["id", "department_id", "severity", "status", "title", "raised_at", "resolved_at"]


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("raised_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["department_id"], ["departments.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alerts_department_id", "alerts", ["department_id"])
    op.create_table(
        "metric_rollups",
        sa.Column("series", sa.String(length=32), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("hour_start", sa.DateTime(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("weighted", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("peak", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("series", "department_id", "hour_start"),
    )
    if op.get_context().dialect.name == "sqlite":
        for statement in capture_trigger_sql("alerts", ALERT_COLUMNS):
            op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for statement in drop_trigger_sql("alerts"):
            op.execute(statement)
    op.drop_table("metric_rollups")
    op.drop_index("ix_alerts_department_id", table_name="alerts")
    op.drop_table("alerts")
