"""`/metrics` for Prometheus: read from the running service at scrape time.

A registry per scrape (no module-level state): the collector asks the process's services for
their current figures, so the hot path only bumps plain integers on the objects that count
(the outbox, the gateway, the limiters, the alert service, the delivery worker, the report
service). Histograms are the process's `Telemetry` (its own registry, never
prometheus_client's global one), observed once per emitted update or finished report.

Several instances: each livedash instance is one process and serves its own `/metrics`.
Scrape every instance as a target of its own; Prometheus adds the `instance` label, and the
deployment's figures are sums over it. Figures only the leader knows (the delivery queue, the
failing schedules) are shown by the leader alone. docs/metrics.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from livedash.metrics.definitions import Tier
from livedash.notifications.preferences import EMAIL, IN_APP, PUSH
from livedash.observability.breaker import State
from livedash.reports.catalogue import REPORT_TYPES
from livedash.services import Services
from livedash.store.models import AlertSeverity
from livedash.web.deps import services

_STATE_VALUE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class ServiceCollector(Collector):
    """Every figure of one process: breakers, cache, sockets, feed, fan-out, limits, alerts,
    notifications and reports (docs/metrics.md lists them)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        services = self._services
        breakers = GaugeMetricFamily(
            "livedash_circuit_breaker_state",
            "Dependency circuit breaker: 0 closed, 1 half-open, 2 open",
            labels=["dependency"],
        )
        for breaker in services.status.breakers():
            breakers.add_metric([breaker.name], _STATE_VALUE[breaker.state])
        yield breakers

        stats = services.view.stats
        cache = CounterMetricFamily(
            "livedash_cache_requests",
            "Cache lookups by layer and result",
            labels=["layer", "result"],
        )
        # Every layer and result from the start, so that rate() sees the first lookup.
        counts = {f"{layer}_{result}": 0 for layer in ("l1", "l2") for result in ("hits", "misses")}
        counts.update(stats.as_dict() if stats is not None else {})
        for name, count in counts.items():
            layer, _, result = name.rpartition("_")
            cache.add_metric([layer or name, result], count)
        yield cache

        gateway = services.gateway
        yield GaugeMetricFamily(
            "livedash_sockets", "Sockets connected to this instance", value=gateway.connected
        )
        yield GaugeMetricFamily(
            "livedash_transports",
            "Engine.IO connections open on this instance, with a Socket.IO session or not",
            value=gateway.transports,
        )
        workers = services.socket_workers
        if workers is not None:
            figures = workers.figures()
            yield GaugeMetricFamily(
                "livedash_socket_workers_ready",
                "Socket workers of this instance taking connections now",
                value=len(figures["ready"]),
            )
            handed = CounterMetricFamily(
                "livedash_websocket_handshakes",
                "New WebSocket sessions accepted by this instance, by who served them: a "
                "socket worker, or the main process (no worker ready)",
                labels=["served_by"],
            )
            handed.add_metric(["worker"], figures["handed_over"])
            handed.add_metric(["main"], figures["served_by_main"])
            yield handed
            yield CounterMetricFamily(
                "livedash_socket_worker_restarts",
                "Socket workers started again after they ended",
                value=figures["restarts"],
            )
        refused = CounterMetricFamily(
            "livedash_refused_packets",
            "Packets and connections refused below the event handlers: binary packets "
            "(each closes its connection), malformed packets (dropped), connections "
            "closed for opening no session in time",
            labels=["kind"],
        )
        packets = gateway.all_packets()
        refused.add_metric(["binary"], packets.binary)
        refused.add_metric(["malformed"], packets.malformed)
        refused.add_metric(["no_session"], packets.idle_closed)
        yield refused
        room_packets = CounterMetricFamily(
            "livedash_room_packets",
            "Packets of events sent to rooms, per socket, by how they left: written as a "
            "frame to the socket's transport, queued for its writer (polling, or packets "
            "already waiting), skipped (superseded while the client was not reading), caught "
            "up (the newest of what it missed, once it read again)",
            labels=["path"],
        )
        for path, count in asdict(gateway.all_frames()).items():
            room_packets.add_metric([path], count)
        yield room_packets
        yield GaugeMetricFamily(
            "livedash_leader",
            "1 while this instance reads the change feed",
            value=int(services.leading),
        )
        pipeline = services.runner.pipeline
        if pipeline is not None:
            feed = pipeline.status()
            yield GaugeMetricFamily(
                "livedash_feed_position", "Last change applied", value=feed.position
            )
            if feed.last_change_at is not None:
                yield GaugeMetricFamily(
                    "livedash_feed_last_change_timestamp_seconds",
                    "Commit time of the last change applied",
                    value=feed.last_change_at.timestamp(),
                )
        sent = CounterMetricFamily(
            "livedash_updates", "dashboard_update events sent to rooms", labels=["result"]
        )
        sent.add_metric(["sent"], services.outbox.sent)
        sent.add_metric(["superseded"], services.outbox.superseded)
        yield sent
        yield from _realtime(services)
        yield from services.telemetry.collect()
        yield from _rate_limits(services)
        yield from _alerts_and_notifications(services)
        yield from _reports(services)
        reports = CounterMetricFamily(
            "livedash_reports", "Reports generated by this instance, by result", labels=["result"]
        )
        reports.add_metric(["done"], services.reports.generated)
        reports.add_metric(["failed"], services.reports.failed)
        yield reports
        scheduler = services.report_scheduler
        runs = CounterMetricFamily(
            "livedash_report_schedule_runs",
            "Scheduled report runs on this instance: started, failed (each attempt), and "
            "skipped by a schedule's misfire policy",
            labels=["result"],
        )
        runs.add_metric(["started"], scheduler.runs)
        runs.add_metric(["failed"], scheduler.failures)
        runs.add_metric(["skipped"], scheduler.skipped)
        yield runs
        if services.leading:
            yield GaugeMetricFamily(
                "livedash_report_schedules_failing",
                "Report schedules whose last run failed (read by the leader, which runs them)",
                value=scheduler.failing,
            )
        # Readiness, the feed's lag and the main application, as the background probes last
        # measured them (livedash.observability.readiness): no query at scrape time.
        yield GaugeMetricFamily(
            "livedash_ready",
            "1 while /health/ready says this instance should get new clients, else 0",
            value=int(services.readiness.ready),
        )
        lag = services.feed_lag.latest
        if lag is not None:
            yield GaugeMetricFamily(
                "livedash_feed_lag_seconds",
                "Seconds since the commit of the oldest change not yet applied (0: caught up)",
                value=lag.seconds,
            )
            if lag.lag_bytes is not None:
                yield GaugeMetricFamily(
                    "livedash_feed_lag_bytes",
                    "PostgreSQL: WAL the replication slot holds beyond its confirmed position",
                    value=lag.lag_bytes,
                )
            if lag.pending_changes is not None:
                yield GaugeMetricFamily(
                    "livedash_feed_pending_changes",
                    "SQLite: change log rows not yet applied",
                    value=lag.pending_changes,
                )
        upstream = services.upstream
        if upstream is not None:
            yield GaugeMetricFamily(
                "livedash_upstream_up",
                "1 while the main application answers its health URL, else 0",
                value=int(upstream.up is True),
            )


def _realtime(services: Services) -> Iterator[Metric]:
    """Updates by tier, subscribers, connections and sign-ins."""
    by_tier = services.outbox.sent_by_tier
    updates = CounterMetricFamily(
        "livedash_dashboard_updates",
        "dashboard_update events sent to rooms by this instance, by the metric's tier",
        labels=["tier"],
    )
    for tier in Tier:
        updates.add_metric([tier.value], by_tier[tier.value])
    yield updates
    gateway = services.gateway
    subscribers = GaugeMetricFamily(
        "livedash_active_subscribers",
        "Sockets on this instance subscribed to at least one metric of the tier",
        labels=["tier"],
    )
    for tier, held in gateway.subscribers().items():
        subscribers.add_metric([tier.value], held.subscribers)
    yield subscribers
    yield CounterMetricFamily(
        "livedash_socket_connections",
        "Socket.IO sessions opened on this instance (refused connections not counted)",
        value=gateway.total_opened,
    )
    authentications = CounterMetricFamily(
        "livedash_socket_authentications",
        "Socket sign-ins (handshake or authenticate event) by result (ok, failed) and, when "
        "failed, reason",
        labels=["result", "reason"],
    )
    for (result, reason), count in gateway.authentications().items():
        authentications.add_metric([result, reason], count)
    yield authentications


def _rate_limits(services: Services) -> Iterator[Metric]:
    """Requests refused by a rate limit, by the limit's name."""
    rejections = CounterMetricFamily(
        "livedash_rate_limit_rejections",
        "Requests refused by a rate limit on this instance, by limit: rest (REST calls per "
        "user), socket and user (socket events), address (connection attempts), history "
        "(hours of history), login-address, login-failures-address-user, session-address "
        "(sign-in throttle), report-queue (reports in flight per user)",
        labels=["limit"],
    )
    rejections.add_metric([services.rest_limiter.namespace], services.rest_limiter.rejected)
    for counts in (services.gateway.rate_limit_rejections(), services.login_limits.rejections()):
        for limit, count in counts.items():
            rejections.add_metric([limit], count)
    rejections.add_metric(["report-queue"], services.reports.refused)
    yield rejections


def _alerts_and_notifications(services: Services) -> Iterator[Metric]:
    """Alerts raised, notifications sent or given up, and the deliveries still to send."""
    raised = services.alerts.raised
    alerts = CounterMetricFamily(
        "livedash_alerts_generated",
        "Alerts raised by this instance (threshold rules and anomalies), by severity",
        labels=["severity"],
    )
    for severity in AlertSeverity:
        alerts.add_metric([severity.value], raised[severity.value])
    yield alerts
    outcomes = services.deliveries.outcomes
    in_app = services.dispatcher.in_app
    notifications = CounterMetricFamily(
        "livedash_notifications",
        "Notifications by channel and result: in_app written and pushed, or not written; "
        "email and push sent, or given up (permanent failure or last attempt)",
        labels=["channel", "result"],
    )
    for result in ("sent", "failed"):
        notifications.add_metric([IN_APP, result], in_app[result])
        for channel in (EMAIL, PUSH):
            notifications.add_metric([channel, result], outcomes[channel, result])
    yield notifications


def _reports(services: Services) -> Iterator[Metric]:
    """Reports generated by type and result, and the work waiting."""
    outcomes = services.reports.outcomes
    generated = CounterMetricFamily(
        "livedash_reports_generated",
        "Reports generated by this instance, by report type and result (done, failed)",
        labels=["type", "result"],
    )
    for report_type in REPORT_TYPES:
        for result in ("done", "failed"):
            generated.add_metric([report_type, result], outcomes[report_type, result])
    yield generated
    queues = GaugeMetricFamily(
        "livedash_job_queue_depth",
        "Work waiting: reports queued or being generated on this instance (reports), and "
        "on the leader, e-mail and push deliveries pending or being sent "
        "(notification_deliveries, as of the delivery worker's last round)",
        labels=["queue"],
    )
    queues.add_metric(["reports"], services.reports.in_flight)
    if services.leading:
        queues.add_metric(["notification_deliveries"], services.deliveries.pending)
    yield queues


def install_metrics(app: FastAPI) -> None:
    """Add `GET /metrics` (Prometheus text format) to `app`."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ServiceCollector(services(request)))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
