"""Indexes for reading periods and waiting work: reports' figures read admissions by
discharge, patients by registration and alerts by when they were raised, within a period;
every instance counts the reports still queued or running (readiness, the job queue gauge).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_patients_registered_at", "patients", "registered_at"),
    ("ix_admissions_discharged_at", "admissions", "discharged_at"),
    ("ix_alerts_raised_at", "alerts", "raised_at"),
    ("ix_reports_status", "reports", "status"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _column in reversed(INDEXES):
        op.drop_index(name, table_name=table)
