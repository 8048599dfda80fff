"""What readiness measures of the feed, the database and the work queued: the probes behind
`/health/ready` (`livedash.observability.readiness` runs them in the background).

Feed lag, where this instance reads the feed: seconds from the commit of the oldest change not
yet applied until now (0 when caught up), and

- on SQLite, the change log's rows not yet applied (`pending_changes`), counted after the
  engine's position; the oldest one's commit time gives the seconds exactly;
- on PostgreSQL, the WAL the slot still holds (`lag_bytes`: `pg_wal_lsn_diff` of the server's
  WAL and the slot's `confirmed_flush_lsn`) and the slot's `wal_status`. The commit time of a
  change the server has not sent yet cannot be read, so the seconds are an upper bound: from
  the later of the last moment the feed was seen caught up and the commit of the last change
  it applied. A feed that keeps pace reads near 0; one that is stuck grows by the second.

A follower reads no feed: its `feed` check is ok, and tells the leader's lag as the leader
last reported it on the instance board.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.changefeed.rows import parse_timestamp
from livedash.cluster.runner import FeedRunner
from livedash.metrics.pipeline import MetricPipeline
from livedash.observability.breaker import CircuitBreaker
from livedash.observability.readiness import Check, Probe, breaker_check
from livedash.store.models import NotificationDelivery, ReportRecord

SLOT_WAL_OK = frozenset({"reserved", "extended"})
"""`pg_replication_slots.wal_status` values that keep every change: `unreserved` is about to
lose WAL, `lost` has lost it (the slot cannot be read any more)."""

# The statuses of the deliveries' ledger (livedash.notifications.delivery) and of reports
# (livedash.reports.archive) that mean "not done yet".
_DELIVERIES_WAITING = ("pending", "sending")
_REPORTS_WAITING = ("queued", "running")

_PENDING_CHANGES = text(
    "SELECT COUNT(*), (SELECT committed_at FROM change_log WHERE seq > :position "
    "ORDER BY seq LIMIT 1) FROM change_log WHERE seq > :position"
)


@dataclass(frozen=True, slots=True)
class FeedLag:
    """How far the feed this instance reads is behind the database."""

    seconds: float
    position: int
    pending_changes: int | None = None
    """SQLite: change log rows not yet applied."""
    lag_bytes: int | None = None
    """PostgreSQL: WAL the slot holds that the feed has not confirmed."""
    slot: dict[str, Any] | None = None
    """PostgreSQL: the slot's status (`FeedRunner.feed_status`)."""

    def as_dict(self) -> dict[str, Any]:
        figures = {
            "lag_seconds": self.seconds,
            "position": self.position,
            "pending_changes": self.pending_changes,
            "lag_bytes": self.lag_bytes,
        }
        return {key: value for key, value in figures.items() if value is not None}


class FeedLagReader:
    """Measures the lag of the feed this instance reads (`latest`: None while it reads none)."""

    def __init__(self, runner: FeedRunner, database: AsyncEngine, *, sqlite: bool) -> None:
        self._runner = runner
        self._database = database
        self._sqlite = sqlite
        self._pipeline: MetricPipeline | None = None
        self._caught_up_at = datetime.now(UTC)
        self.latest: FeedLag | None = None

    async def measure(self) -> FeedLag | None:
        """Read the lag now (a query or two), and keep it as `latest`."""
        pipeline = self._runner.pipeline
        if pipeline is not self._pipeline:
            # A new term of reading: nothing is known of the previous one's catching up.
            self._pipeline, self._caught_up_at = pipeline, datetime.now(UTC)
        if pipeline is None:
            self.latest = None
            return None
        position = pipeline.status().position
        self.latest = await (
            self._sqlite_lag(position) if self._sqlite else self._slot_lag(pipeline)
        )
        return self.latest

    async def _sqlite_lag(self, position: int) -> FeedLag:
        async with self._database.connect() as connection:
            pending, oldest = (
                await connection.execute(_PENDING_CHANGES, {"position": position})
            ).one()
        committed = parse_timestamp(oldest)
        seconds = _since(committed) if pending and committed is not None else 0.0
        return FeedLag(seconds, position, pending_changes=int(pending))

    async def _slot_lag(self, pipeline: MetricPipeline) -> FeedLag:
        now = datetime.now(UTC)
        caught_up = getattr(self._runner.source, "caught_up", None)
        if isinstance(caught_up, asyncio.Event) and caught_up.is_set():
            self._caught_up_at, seconds = now, 0.0
        else:
            status = pipeline.status()
            since = self._caught_up_at
            if status.last_change_at is not None:
                since = max(since, status.last_change_at.replace(tzinfo=UTC))
            seconds = max((now - since).total_seconds(), 0.0)
        slot = await self._runner.feed_status()
        lag_bytes = slot.get("lag_bytes")
        return FeedLag(
            round(seconds, 1),
            pipeline.status().position,
            lag_bytes=int(lag_bytes) if isinstance(lag_bytes, int) else None,
            slot=slot,
        )


def _since(moment: datetime) -> float:
    """Seconds from `moment` (naive UTC) until now, never below 0 (clocks differ a little)."""
    return round(max((datetime.now(UTC) - moment.replace(tzinfo=UTC)).total_seconds(), 0.0), 1)


LeaderLag = Callable[[], Awaitable[float | None]]
"""The leader's feed lag as it last reported it; None when no leader has reported."""


def feed_probe(
    reader: FeedLagReader,
    runner: FeedRunner,
    *,
    max_lag_seconds: float,
    embedded: bool,
    leader_lag: LeaderLag,
) -> Probe:
    """`feed`: the lag against its bound where this instance reads the feed; and
    `replication_slot` on PostgreSQL, where it does."""

    async def measure() -> list[Check]:
        lag = await reader.measure()
        pipeline = runner.pipeline
        if lag is None or pipeline is None:
            if embedded:
                return [Check("feed", False, "the change feed is not running")]
            leader = await leader_lag()
            told = "no leader has reported" if leader is None else f"its lag: {leader:g} s"
            details = {"role": "follower", "leader_lag_seconds": leader}
            return [
                Check("feed", True, f"follower: the leader reads the feed ({told})", True, details)
            ]
        status = pipeline.status()
        details = {
            "role": "leader",
            **lag.as_dict(),
            "max_lag_seconds": max_lag_seconds,
            "last_change_at": status.last_change_at.isoformat() if status.last_change_at else None,
            "last_error": status.last_error,
        }
        ok = lag.seconds <= max_lag_seconds
        if lag.seconds == 0 and not lag.pending_changes:
            reason = "caught up"
        else:
            verdict = "within" if ok else "over"
            reason = f"{lag.seconds:g} s behind, {verdict} the {max_lag_seconds:g} s bound"
        checks = [Check("feed", ok, reason, True, details)]
        if lag.slot is not None:
            checks.append(slot_check(lag.slot))
        return checks

    return Probe(("feed",), measure)


def slot_check(slot: dict[str, Any]) -> Check:
    """The replication slot keeps every change the feed has not confirmed."""
    name = slot.get("slot")
    if "error" in slot:
        return Check(
            "replication_slot", False, f"slot status unreadable: {slot['error']}", True, slot
        )
    if not slot.get("exists"):
        return Check("replication_slot", False, f"the slot {name!r} does not exist", True, slot)
    wal_status = slot.get("wal_status")
    if wal_status in SLOT_WAL_OK:
        return Check("replication_slot", True, f"WAL {wal_status}", True, slot)
    why = (
        "lost: changes are gone" if wal_status == "lost" else f"{wal_status}: WAL about to be lost"
    )
    return Check("replication_slot", False, f"slot {name!r} WAL {why}", True, slot)


def database_probe(database: AsyncEngine, breaker: CircuitBreaker) -> Probe:
    """`database`: it answers a query now, and its breaker is closed."""

    async def measure() -> list[Check]:
        try:
            async with database.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as error:
            return [Check("database", False, f"the database does not answer: {error}")]
        return [breaker_check("database", breaker, what="the database")]

    return Probe(("database",), measure)


def job_queue_probe(
    database: AsyncEngine, now: Callable[[], datetime], *, max_waiting: int
) -> Probe:
    """`job_queue`: notifications due and reports asked for, not done yet, against a bound."""

    async def measure() -> list[Check]:
        due = now().astimezone(UTC).replace(tzinfo=None)
        async with database.connect() as connection:
            deliveries = await connection.scalar(
                select(func.count())
                .select_from(NotificationDelivery)
                .where(NotificationDelivery.status.in_(_DELIVERIES_WAITING))
                .where(NotificationDelivery.due_at <= due)
            )
            reports = await connection.scalar(
                select(func.count())
                .select_from(ReportRecord)
                .where(ReportRecord.status.in_(_REPORTS_WAITING))
            )
        waiting = int(deliveries or 0) + int(reports or 0)
        details = {
            "deliveries_waiting": int(deliveries or 0),
            "reports_waiting": int(reports or 0),
            "max_waiting": max_waiting,
        }
        ok = waiting <= max_waiting
        verdict = "within" if ok else "over"
        return [
            Check(
                "job_queue",
                ok,
                f"{waiting} waiting, {verdict} the bound of {max_waiting}",
                True,
                details,
            )
        ]

    return Probe(("job_queue",), measure)
