"""Hospital schema and SQLite change capture.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 18:49:00.880467
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from livedash.store.capture import capture_trigger_sql, drop_trigger_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Columns captured by the SQLite change-capture triggers, as of this revision.
CAPTURED_COLUMNS: dict[str, list[str]] = {
    "departments": ["id", "code", "name"],
    "rooms": ["id", "department_id", "number"],
    "beds": ["id", "room_id", "label", "status"],
    "patients": [
        "id",
        "department_id",
        "name",
        "status",
        "emergency",
        "registered_at",
        "discharged_at",
    ],
    "admissions": ["id", "patient_id", "department_id", "bed_id", "admitted_at", "discharged_at"],
    "appointments": ["id", "patient_id", "department_id", "scheduled_at", "status"],
    "bills": ["id", "patient_id", "department_id", "amount_cents", "created_at", "paid_at"],
    "payments": ["id", "bill_id", "department_id", "amount_cents", "paid_at"],
    "staff": ["id", "department_id", "name", "role"],
    "staff_shifts": ["id", "staff_id", "department_id", "clock_in_at", "clock_out_at"],
    "users": ["id", "username", "role", "departments", "active"],
}


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("op", sa.String(length=1), nullable=False),
        sa.Column("old_row", sa.Text(), nullable=True),
        sa.Column("new_row", sa.Text(), nullable=True),
        sa.Column("committed_at", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "departments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_table(
        "feed_positions",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("departments", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("emergency", sa.Boolean(), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("discharged_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patients_department_id"), ["department_id"], unique=False
        )

    op.create_table(
        "rooms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rooms_department_id"), ["department_id"], unique=False)

    op.create_table(
        "staff",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_department_id"), ["department_id"], unique=False)

    op.create_table(
        "appointments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_appointments_department_id"), ["department_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_appointments_scheduled_at"), ["scheduled_at"], unique=False
        )

    op.create_table(
        "beds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["rooms.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("beds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_beds_room_id"), ["room_id"], unique=False)

    op.create_table(
        "bills",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("paid_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("bills", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bills_department_id"), ["department_id"], unique=False)

    op.create_table(
        "staff_shifts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("clock_in_at", sa.DateTime(), nullable=False),
        sa.Column("clock_out_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("staff_shifts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_staff_shifts_department_id"), ["department_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_staff_shifts_staff_id"), ["staff_id"], unique=False)
        batch_op.create_index(
            "uq_staff_shifts_open",
            ["staff_id"],
            unique=True,
            sqlite_where=sa.text("clock_out_at IS NULL"),
            postgresql_where=sa.text("clock_out_at IS NULL"),
        )

    op.create_table(
        "admissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("bed_id", sa.Integer(), nullable=True),
        sa.Column("admitted_at", sa.DateTime(), nullable=False),
        sa.Column("discharged_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bed_id"],
            ["beds.id"],
        ),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("admissions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_admissions_department_id"), ["department_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_admissions_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bill_id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("paid_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bill_id"],
            ["bills.id"],
        ),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payments_bill_id"), ["bill_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_payments_department_id"), ["department_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_payments_paid_at"), ["paid_at"], unique=False)

    if op.get_context().dialect.name == "sqlite":
        for table, columns in CAPTURED_COLUMNS.items():
            for statement in capture_trigger_sql(table, columns):
                op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for table in CAPTURED_COLUMNS:
            for statement in drop_trigger_sql(table):
                op.execute(statement)
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_paid_at"))
        batch_op.drop_index(batch_op.f("ix_payments_department_id"))
        batch_op.drop_index(batch_op.f("ix_payments_bill_id"))

    op.drop_table("payments")
    with op.batch_alter_table("admissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admissions_patient_id"))
        batch_op.drop_index(batch_op.f("ix_admissions_department_id"))

    op.drop_table("admissions")
    with op.batch_alter_table("staff_shifts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_staff_shifts_open",
            sqlite_where=sa.text("clock_out_at IS NULL"),
            postgresql_where=sa.text("clock_out_at IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_staff_shifts_staff_id"))
        batch_op.drop_index(batch_op.f("ix_staff_shifts_department_id"))

    op.drop_table("staff_shifts")
    with op.batch_alter_table("bills", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bills_department_id"))

    op.drop_table("bills")
    with op.batch_alter_table("beds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_beds_room_id"))

    op.drop_table("beds")
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_appointments_scheduled_at"))
        batch_op.drop_index(batch_op.f("ix_appointments_department_id"))

    op.drop_table("appointments")
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_department_id"))

    op.drop_table("staff")
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rooms_department_id"))

    op.drop_table("rooms")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patients_department_id"))

    op.drop_table("patients")
    op.drop_table("users")
    op.drop_table("feed_positions")
    op.drop_table("departments")
    op.drop_table("change_log")
