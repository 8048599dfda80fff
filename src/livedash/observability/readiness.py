"""Whether this instance should get new clients: `/health/ready`, checked dependency by dependency.

A `Check` is one dependency's verdict: `ok`, the `reason` in words, and its figures. Two kinds
feed the report:

- *instant* checks read what the process already knows (a circuit breaker's state, the sockets
  open): computed when asked, for nothing.
- *probes* measure what costs a query (the feed's lag, the slot, the jobs waiting, the
  process's memory): run together every `interval` in the background, each bounded by
  `PROBE_TIMEOUT_SECONDS`, never on a request or a scrape. A probe that fails or times out
  reports its checks as not ok ("not measured").

A check that is not `required` is reported and never makes the instance not ready: the main
application being down says nothing about whether livedash can serve its own data.
Which checks exist, and what each measures, is decided by the composition root
(`livedash.services`), from the parts that know: this module only runs and sums them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from livedash.aio import BackgroundTasks
from livedash.observability.breaker import CircuitBreaker, State

log = structlog.get_logger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency's verdict."""

    name: str
    ok: bool
    reason: str
    required: bool = True
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self, *, full: bool) -> dict[str, Any]:
        """JSON-ready; without `full`, the verdict only (no reason, no figures)."""
        verdict: dict[str, Any] = {"ok": self.ok, "required": self.required}
        if full:
            verdict["reason"] = self.reason
            verdict.update(self.details)
        return verdict


Instant = Callable[[], Check | None]
"""A check computed when asked, from the process's own state; None: not applicable now."""


@dataclass(frozen=True, slots=True)
class Probe:
    """Checks that cost a query; `names` are reported not ok when `measure` fails."""

    names: tuple[str, ...]
    measure: Callable[[], Awaitable[Sequence[Check]]]


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """Every check, and the verdict."""

    ready: bool
    checks: Sequence[Check]
    checked_at: datetime

    @property
    def failing(self) -> list[str]:
        """The required checks that are not ok."""
        return [check.name for check in self.checks if check.required and not check.ok]

    def as_dict(self, *, full: bool) -> dict[str, Any]:
        """JSON-ready (`full`: reasons and figures too, for operators)."""
        return {
            "status": "ready" if self.ready else "not_ready",
            "failing": self.failing,
            "checks": {check.name: check.as_dict(full=full) for check in self.checks},
        }


class Readiness:
    """The instance's checks; `async with` measures the probes every `interval` (the owner
    calls `refresh` first, once what the probes measure has started)."""

    def __init__(
        self,
        instant: Sequence[Instant],
        probes: Sequence[Probe],
        *,
        interval: float,
        timeout: float = PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self._instant = list(instant)
        self._probes = list(probes)
        self._interval = interval
        self._timeout = timeout
        # Each probe's checks as last measured; a probe may report fewer or more than its
        # `names` (the slot only where the feed is read), and its last answer replaces all.
        self._measured: list[Sequence[Check]] = [
            [Check(name, False, "not measured yet") for name in probe.names] for probe in probes
        ]
        self._measured_once = False  # before, a verdict is not worth a log line
        # Refreshes are numbered as they begin; one that ends after a later one began and
        # ended is stale (begun before the feed started, say) and is dropped.
        self._begun = 0
        self._applied = 0
        self._was_ready: bool | None = None
        self._tasks = BackgroundTasks()

    async def __aenter__(self) -> Readiness:
        self._tasks.spawn(self._refresh_periodically(), name="readiness-probes")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._tasks.close()

    async def refresh(self) -> None:
        """Run every probe now, together."""
        self._begun += 1
        number = self._begun
        measured = list(await asyncio.gather(*(self._run(p) for p in self._probes)))
        if number < self._applied:
            return
        self._applied = number
        self._measured = measured
        self._measured_once = True
        self.report()  # logs a change of verdict, whoever asks

    async def _run(self, probe: Probe) -> Sequence[Check]:
        try:
            async with asyncio.timeout(self._timeout):
                return await probe.measure()
        except TimeoutError:
            why = f"not measured: no answer within {self._timeout:g} s"
        except Exception as error:
            why = f"not measured: {type(error).__name__}: {error}"
        return [Check(name, False, why) for name in probe.names]

    def report(self) -> ReadinessReport:
        """Every check now: the instant ones computed, the probes' as last measured."""
        instant = [check for compute in self._instant if (check := compute()) is not None]
        checks = [*instant, *(check for measured in self._measured for check in measured)]
        report = ReadinessReport(all(c.ok for c in checks if c.required), checks, datetime.now(UTC))
        if self._measured_once and report.ready != self._was_ready:
            self._was_ready = report.ready
            self._log(report)
        return report

    def _log(self, report: ReadinessReport) -> None:
        if report.ready:
            log.info("instance_ready")
        else:
            failing = {c.name: c.reason for c in report.checks if c.required and not c.ok}
            log.warning("instance_not_ready", failing=failing)

    @property
    def ready(self) -> bool:
        return self.report().ready

    async def _refresh_periodically(self) -> None:
        while True:
            # Measured at once, then every interval: a new instance is not "not measured
            # yet" (not ready) for a whole interval after it starts.
            try:
                await self.refresh()
            except Exception:  # never stop measuring: the verdict would freeze
                log.exception("readiness_probe_failed_unexpectedly")
            await asyncio.sleep(self._interval)


def breaker_check(name: str, breaker: CircuitBreaker, *, what: str, required: bool = True) -> Check:
    """Ok while `breaker` is closed; else why it opened, and since when."""
    state = breaker.state
    if state is State.CLOSED:
        return Check(name, True, f"{what} answers", required, {"breaker": state.value})
    since = breaker.down_since
    reason = f"{what} unreachable: {breaker.last_error or 'calls failed'}"
    if state is State.HALF_OPEN:
        reason += " (trying again)"
    details = {
        "breaker": state.value,
        "down_since": datetime.fromtimestamp(since, UTC).isoformat() if since else None,
    }
    return Check(name, False, reason, required, details)


def resident_bytes() -> int | None:
    """This process's resident memory (RSS) in bytes; None where /proc cannot tell."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def memory_probe(limit_mb: int | None) -> Probe:
    """RSS against `limit_mb` (None: reported, never failing)."""

    async def measure() -> list[Check]:
        rss = resident_bytes()
        details = {"rss_bytes": rss, "limit_bytes": limit_mb * 2**20 if limit_mb else None}
        if rss is None:
            return [Check("memory", True, "RSS unknown on this platform", True, details)]
        used = f"{rss / 2**20:.0f} MiB resident"
        if limit_mb is None:
            return [Check("memory", True, f"{used}; no limit set", True, details)]
        ok = rss <= limit_mb * 2**20
        verdict = "within" if ok else "over"
        return [Check("memory", ok, f"{used}, {verdict} the {limit_mb} MiB limit", True, details)]

    return Probe(("memory",), measure)


def connections_check(
    transports: Callable[[], int], limit: int, draining: Callable[[], bool]
) -> Instant:
    """Room for one more client: not draining, and below `limit` connections."""

    def check() -> Check:
        held = transports()
        details = {"connections": held, "limit": limit}
        if draining():
            return Check("connections", False, "draining: this instance is stopping", True, details)
        if held >= limit:
            return Check("connections", False, f"full: {held} of {limit}", True, details)
        return Check("connections", True, f"{held} of {limit}", True, details)

    return check
