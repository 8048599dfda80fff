"""The histograms of one process: observed where the work happens, read by `/metrics`.

Counters live as plain integers on the objects that do the counting (the outbox, the gateway,
the limiters, the alert service, the delivery worker, the report service) and are read at
scrape time. Distributions need buckets, so they live here: `Telemetry` holds prometheus_client
histograms in a `CollectorRegistry` of its own (never the library's global `REGISTRY`). The
composition root builds one per process and hands it to the components that observe; each
observation is O(1), once per emitted update or finished report, never per recipient.

Several processes: each livedash instance is one process with its own `/metrics`, and
Prometheus scrapes every instance as a target of its own, adding the `instance` label; sum
over `instance` for the deployment (`sum by (le, stage) (rate(..._bucket[5m]))`). Nothing is
shared between processes, so prometheus_client's multiprocess mode is not needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import Metric

COMMIT_TO_EMIT = "commit_to_emit"
"""From a change's commit in the database to the outbox emitting the update it moved."""
EMIT_TO_WRITE = "emit_to_write"
"""From the outbox emitting an update to its frame written to every socket of the room."""

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Seconds: the critical tier's budget is well under a second, a stalled feed is many."""
REPORT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds: a day's CSV takes a fraction of one, a 90-day PDF some seconds."""


class Telemetry:
    """The histograms of this process, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        latency = Histogram(
            "livedash_update_latency_seconds",
            "Latency of dashboard_update events by stage: commit_to_emit (the change's commit "
            "to the outbox's emit), emit_to_write (the emit to the frame written to every "
            "socket of the room on this instance)",
            ["stage"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        # Children made once: an observation then skips the label lookup.
        self.commit_to_emit = latency.labels(stage=COMMIT_TO_EMIT)
        self.emit_to_write = latency.labels(stage=EMIT_TO_WRITE)
        self._report_duration = Histogram(
            "livedash_report_generation_duration_seconds",
            "Time to compute, render and store a report that was generated, by report type",
            ["type"],
            registry=self.registry,
            buckets=REPORT_BUCKETS,
        )

    def report_types(self, types: Iterable[str]) -> None:
        """Show these report types' histograms from the start, empty until one is generated."""
        for report_type in types:
            self._report_duration.labels(type=report_type)

    def report_generated(self, report_type: str, seconds: float) -> None:
        """Observe the generation time of one report of `report_type`."""
        self._report_duration.labels(type=report_type).observe(seconds)

    def collect(self) -> Iterator[Metric]:
        """Every histogram's current samples."""
        for metric in self.registry.collect():
            # Without the `_created` series: a gauge family each in the text format, which
            # the counters read from the services do not have either.
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric
