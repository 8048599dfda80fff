"""Alerts raised by rules: their condition, lifecycle (acknowledged, resolved, escalated) and
transitions; severities low, medium, high and critical.

Revision ID: 0007
Revises: 0006

Alerts written before rules existed keep their rows: `warning` becomes `medium` and `info`
becomes `low`, so that the active-alert metrics count them under the new severities.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_COLUMNS = (
    sa.Column("rule", sa.String(length=64), nullable=True),
    sa.Column("state", sa.String(length=16), nullable=True),
    sa.Column("value", sa.Float(), nullable=True),
    sa.Column("threshold", sa.Float(), nullable=True),
    sa.Column("acknowledged_by", sa.String(length=128), nullable=True),
    sa.Column("acknowledged_at", sa.DateTime(), nullable=True),
    sa.Column("acknowledgement_note", sa.String(length=500), nullable=True),
    sa.Column("acknowledged_until", sa.DateTime(), nullable=True),
    sa.Column("resolved_by", sa.String(length=128), nullable=True),
    sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(), nullable=True),
)


def upgrade() -> None:
    for column in _COLUMNS:
        op.add_column("alerts", column)
    op.create_index("ix_alerts_rule", "alerts", ["rule"])
    op.execute("UPDATE alerts SET severity = 'medium' WHERE severity = 'warning'")
    op.execute("UPDATE alerts SET severity = 'low' WHERE severity = 'info'")
    op.create_table(
        "alert_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), sa.ForeignKey("alerts.id"), nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("department_id", sa.Integer(), sa.ForeignKey("departments.id"), nullable=True),
        sa.Column("before", sa.String(length=16), nullable=False),
        sa.Column("after", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alert_transitions_alert_id", "alert_transitions", ["alert_id"])


def downgrade() -> None:
    op.drop_index("ix_alert_transitions_alert_id", "alert_transitions")
    op.drop_table("alert_transitions")
    op.execute("UPDATE alerts SET severity = 'warning' WHERE severity IN ('medium', 'high')")
    op.execute("UPDATE alerts SET severity = 'info' WHERE severity = 'low'")
    op.drop_index("ix_alerts_rule", "alerts")
    with op.batch_alter_table("alerts") as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column.name)
