"""The figures the benches print: nearest-rank percentiles of samples, and how to show them.

One definition of a percentile for every bench, so that a p99 means the same everywhere: the
nearest rank (the smallest sample with at least that share of the samples at or below it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_NAMES = {0.5: "p50", 0.95: "p95", 0.99: "p99", 1.0: "max"}


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of unsorted `values` (0 when empty); `fraction` 1 is the max."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(int(fraction * len(ordered) + 0.999999) - 1, 0)
    return float(ordered[min(rank, len(ordered) - 1)])


def spread(values: Sequence[float], scale: float = 1000, digits: int = 1) -> str:
    """p50/p95/p99/max in aligned columns: of seconds, in ms (or of anything, times `scale`)."""
    if not values:
        return "no samples"
    figures = [percentile(values, q) for q in (0.5, 0.95, 0.99)] + [max(values)]
    return "  ".join(
        f"{name} {value * scale:8.{digits}f}"
        for name, value in zip(("p50", "p95", "p99", "max"), figures, strict=True)
    )


def duration(seconds: float) -> str:
    """Seconds in the unit a reader takes in at a glance: 1.2 s, 35 ms, 0.4 ms."""
    if seconds >= 1:
        return f"{seconds:.1f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.1f} ms"


def quantiles(
    values: Sequence[float], *fractions: float, show: Callable[[float], str] = duration
) -> str:
    """Chosen percentiles of seconds, each shown by `show`: "p50 3 ms  max 1.2 s"."""
    if not values:
        return "no samples"
    return "  ".join(f"{_NAMES[q]} {show(percentile(values, q))}" for q in fractions)


def in_seconds(values: Sequence[float]) -> str:
    """p50, p95 and max of seconds, and how many: "p50 1.20 s, p95 ..., max ... (n)"."""
    if not values:
        return "none"
    return (
        f"p50 {percentile(values, 0.5):.2f} s, p95 {percentile(values, 0.95):.2f} s, "
        f"max {max(values):.2f} s ({len(values)})"
    )
