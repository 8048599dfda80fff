"""The hospital's operational data, as SQLAlchemy 2 models.

One schema serves SQLite and PostgreSQL. Money is stored as integer cents (`amount_cents`),
exact on every backend; the metric layer turns it into `Decimal`. Timestamps are stored in UTC.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base for every livedash table."""


class BedStatus(enum.StrEnum):
    FREE = "free"
    OCCUPIED = "occupied"
    CLEANING = "cleaning"
    OUT_OF_SERVICE = "out_of_service"


class PatientStatus(enum.StrEnum):
    REGISTERED = "registered"
    ACTIVE = "active"
    DISCHARGED = "discharged"


class AppointmentStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    CHECKED_IN = "checked_in"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"


class Role(enum.StrEnum):
    SUPER_ADMIN = "super_admin"
    ADMIN = "admin"
    VIEWER = "viewer"


# Enums are stored as plain strings with CHECK-free columns: the hospital's main application
# writes these tables too, and a value we do not know must reach the feed, not fail its insert.


class Department(Base):
    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))


class Room(Base):
    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    number: Mapped[str] = mapped_column(String(32))


class Bed(Base):
    __tablename__ = "beds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"), index=True)
    label: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default=BedStatus.FREE.value)


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32), default=PatientStatus.REGISTERED.value)
    emergency: Mapped[bool] = mapped_column(Boolean, default=False)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)
    discharged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))


class Admission(Base):
    """A patient's stay in a department, and the bed they hold while it lasts."""

    __tablename__ = "admissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    bed_id: Mapped[int | None] = mapped_column(ForeignKey("beds.id"))
    admitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    discharged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), index=True)


class Appointment(Base):
    __tablename__ = "appointments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    scheduled_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)
    status: Mapped[str] = mapped_column(String(32), default=AppointmentStatus.SCHEDULED.value)


class Bill(Base):
    __tablename__ = "bills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bills.id"), index=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    paid_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(64))


class StaffShift(Base):
    """A shift as clocked: on duty while `clock_out_at` is empty."""

    __tablename__ = "staff_shifts"
    __table_args__ = (
        # A member of staff is on at most one open shift at a time.
        Index(
            "uq_staff_shifts_open",
            "staff_id",
            unique=True,
            sqlite_where=text("clock_out_at IS NULL"),
            postgresql_where=text("clock_out_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    clock_in_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    clock_out_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))


class AlertSeverity(enum.StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AlertStatus(enum.StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(Base):
    """An operational alert; active until resolved (acknowledging does not end it).

    Raised by a rule (`rule`, the condition's `state`, the `value` against the `threshold`),
    or written by the hospital's own application (no rule).
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=AlertStatus.ACTIVE.value)
    title: Mapped[str] = mapped_column(String(256))
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    rule: Mapped[str | None] = mapped_column(String(64), index=True)
    state: Mapped[str | None] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    acknowledgement_note: Mapped[str | None] = mapped_column(String(500))
    acknowledged_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    expected: Mapped[float | None] = mapped_column(Float)
    """Anomaly rules: the value the hour's history expected, and the band around it."""
    band_low: Mapped[float | None] = mapped_column(Float)
    band_high: Mapped[float | None] = mapped_column(Float)


class AlertTransition(Base):
    """One change of a rule's condition, or of an alert's lifecycle (with its `actor`)."""

    __tablename__ = "alert_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    before: Mapped[str] = mapped_column(String(16))
    after: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    value: Mapped[float | None] = mapped_column(Float)
    actor: Mapped[str | None] = mapped_column(String(128))


class Notification(Base):
    """One in-app notification of one user; `idempotency_key` makes a retry write it once."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_username", "username", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128))
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"))
    event: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(256))
    department: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)


class NotificationPreference(Base):
    """A user's choices: channels, the lowest severity, departments, quiet hours, a cap."""

    __tablename__ = "notification_preferences"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    channels: Mapped[list[str]] = mapped_column(JSON)
    min_severity: Mapped[str] = mapped_column(String(16))
    departments: Mapped[list[str] | None] = mapped_column(JSON)
    quiet_from: Mapped[str | None] = mapped_column(String(5))
    quiet_until: Mapped[str | None] = mapped_column(String(5))
    max_per_hour: Mapped[int] = mapped_column(Integer)
    email: Mapped[str | None] = mapped_column(String(254))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))


class PushSubscription(Base):
    """A browser's Web Push subscription (one per user and device)."""

    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), index=True)
    endpoint: Mapped[str] = mapped_column(String(1000), unique=True)
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))


class AlertSilence(Base):
    """Notifications of matching alerts are held back from `starts_at` to `ends_at`."""

    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    rule: Mapped[str | None] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(16))
    severity: Mapped[str | None] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(String(500))
    expired_by: Mapped[str | None] = mapped_column(String(128))


class NotificationDelivery(Base):
    """One e-mail or push to send, keyed by its idempotency key: a retry, a second worker or a
    second instance sends it once. `lease_until` lets another worker take over a delivery
    whose worker died while sending."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (Index("ix_notification_deliveries_due", "status", "due_at"),)

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    username: Mapped[str] = mapped_column(String(128))
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    event: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))


class AlertRuleSet(Base):
    """One version of the alert rules set through the REST API; the newest is in force (no
    row: the rules file's)."""

    __tablename__ = "alert_rule_sets"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))


class ReportRecord(Base):
    """One generated (or failed, or queued) report: what was asked, by whom, and what came out.

    The file itself is under the reports directory (`path`) or, with `report_storage` set to
    `database`, in `content`; `sha256` and `size` are the file's.
    """

    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_type_created", "report_type", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_type: Mapped[str] = mapped_column(String(32))
    department: Mapped[str | None] = mapped_column(String(32))
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    period_label: Mapped[str] = mapped_column(String(64))
    time_zone: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(128))
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("report_schedules.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(String(500))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    figures_sha256: Mapped[str | None] = mapped_column(String(64))
    feed_position: Mapped[int | None] = mapped_column(BigInteger)
    generator_version: Mapped[str] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(String(500))
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))


class ReportSchedule(Base):
    """A report generated on a cron schedule in the hospital's time zone, and mailed."""

    __tablename__ = "report_schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    report_type: Mapped[str] = mapped_column(String(32))
    department: Mapped[str | None] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(8))
    cron: Mapped[str] = mapped_column(String(128))
    misfire: Mapped[str] = mapped_column(String(16))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    last_report_id: Mapped[int | None] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(500))
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    """When a failed run is tried again; `retry_of` is that run's scheduled time."""
    retry_of: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))


class MetricRollup(Base):
    """One hour of one historical series for one department (0: the whole hospital).

    Updated incrementally from the change feed, in the same transaction as the feed position,
    so history is exact across restarts and never needs the raw rows again.
    """

    __tablename__ = "metric_rollups"

    series: Mapped[str] = mapped_column(String(32), primary_key=True)
    department_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hour_start: Mapped[datetime] = mapped_column(DateTime(timezone=False), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    weighted: Mapped[float] = mapped_column(Float, default=0.0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    peak: Mapped[float | None] = mapped_column(Float)


class User(Base):
    """A dashboard user; `departments` holds department codes."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    departments: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    tokens_valid_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    """Tokens issued before this moment (UTC) are refused: signing a user out everywhere."""
    password_hash: Mapped[str | None] = mapped_column(String(256))
    """For the dashboard's own sign-in; never captured into `change_log`."""


class RefreshToken(Base):
    """One refresh token of a sign-in session (`family_id`); each use replaces it by a new one.

    Only a hash is stored. Using a token that was already used revokes its whole family.
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    username: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))


class ApiKey(Base):
    """A machine writer's key (the hospital's main application), or a wall screen's (the
    `dashboard` scope, signing in as `username`): stored hashed, scoped."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    username: Mapped[str | None] = mapped_column(String(128))
    """The user a `dashboard` key signs in as; None for the other scopes."""


class RevokedToken(Base):
    """A token refused before it expires, by its `jti`; kept until `expires_at` (if known)."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    reason: Mapped[str] = mapped_column(String(256))


class ChangeLog(Base):
    """Captured changes, written by triggers on SQLite (PostgreSQL uses logical decoding)."""

    __tablename__ = "change_log"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(1))
    old_row: Mapped[str | None] = mapped_column(Text)
    new_row: Mapped[str | None] = mapped_column(Text)
    committed_at: Mapped[str] = mapped_column(String(40))


class FeedPosition(Base):
    """The last change each consumer has applied, so a restart resumes after it."""

    __tablename__ = "feed_positions"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))


WATCHED_TABLES: tuple[str, ...] = (
    "departments",
    "rooms",
    "beds",
    "patients",
    "admissions",
    "appointments",
    "bills",
    "payments",
    "staff",
    "staff_shifts",
    "users",
    "alerts",
)
"""Tables whose every insert, update and delete reaches the change feed."""
