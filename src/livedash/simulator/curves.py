"""Daily rhythms: how busy each kind of activity is at a given hour, 1.0 on average."""

from __future__ import annotations

from collections.abc import Sequence


class DailyCurve:
    """A 24-point hourly profile, linearly interpolated and scaled to average 1.0."""

    def __init__(self, hourly: Sequence[float]) -> None:
        if len(hourly) != 24:
            raise ValueError("a daily curve needs 24 hourly values")
        mean = sum(hourly) / 24
        self._points = [value / mean for value in hourly]

    def at(self, hour: float) -> float:
        """The curve's value at `hour` (0 <= hour < 24, wraps around midnight)."""
        hour %= 24.0
        index = int(hour)
        fraction = hour - index
        left, right = self._points[index], self._points[(index + 1) % 24]
        return left + (right - left) * fraction


# Arrivals peak late morning and early evening and are low at night.
ARRIVALS = DailyCurve(
    [0.35, 0.3, 0.25, 0.22, 0.25, 0.35, 0.55, 0.9, 1.3, 1.6, 1.8, 1.75,
     1.5, 1.3, 1.25, 1.3, 1.45, 1.65, 1.7, 1.5, 1.15, 0.85, 0.6, 0.45]
)  # fmt: skip

# Ward rounds, discharges, cashier and housekeeping work mostly by day.
DAYTIME = DailyCurve(
    [0.25, 0.2, 0.2, 0.2, 0.2, 0.25, 0.45, 0.8, 1.2, 1.5, 1.7, 1.75,
     1.7, 1.6, 1.55, 1.45, 1.3, 1.1, 0.9, 0.7, 0.55, 0.45, 0.35, 0.3]
)  # fmt: skip

# Outpatient clinics open at eight and close at six.
CLINIC = DailyCurve(
    [0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.1, 0.6, 1.8, 2.2, 2.2, 2.0,
     1.5, 1.8, 2.1, 2.0, 1.8, 1.2, 0.5, 0.15, 0.05, 0.02, 0.02, 0.02]
)  # fmt: skip

# Staff clock in and out around the 07:00, 15:00 and 23:00 handovers.
SHIFTS = DailyCurve(
    [0.3, 0.2, 0.2, 0.2, 0.3, 0.6, 2.5, 4.0, 1.2, 0.4, 0.3, 0.3,
     0.3, 0.4, 2.5, 4.0, 1.2, 0.4, 0.3, 0.3, 0.3, 0.4, 2.5, 4.0]
)  # fmt: skip


def on_duty_share(hour: float) -> float:
    """The share of a department's staff that is normally on duty at `hour`."""
    hour %= 24.0
    if 7.0 <= hour < 15.0:
        return 0.42
    if 15.0 <= hour < 23.0:
        return 0.30
    return 0.20
