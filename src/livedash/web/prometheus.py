"""`/metrics` for Prometheus: read from the running service at scrape time.

A registry per scrape (no module-level state): the collector asks the process's services for
their current figures, so nothing has to be updated on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from livedash.observability.breaker import State
from livedash.services import Services
from livedash.web.deps import services

_STATE_VALUE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class ServiceCollector(Collector):
    """Breakers, cache, sockets, leadership, feed and fan-out of one process."""

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
        for name, count in (stats.as_dict() if stats is not None else {}).items():
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
        refused = CounterMetricFamily(
            "livedash_refused_packets",
            "Packets and connections refused below the event handlers: binary packets "
            "(each closes its connection), malformed packets (dropped), connections "
            "closed for opening no session in time",
            labels=["kind"],
        )
        packets = gateway.packets
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
        for path, count in asdict(gateway.frames).items():
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


def install_metrics(app: FastAPI) -> None:
    """Add `GET /metrics` (Prometheus text format) to `app`."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ServiceCollector(services(request)))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
