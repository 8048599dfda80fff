"""Moments in the forms livedash uses: naive UTC (as the schema stores time), aware (as
clocks and screens give it), and the hospital's local date, hour and midnight.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo


def naive_utc(moment: datetime) -> datetime:
    """`moment` in UTC without its zone, as the schema stores time (a naive one is UTC)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def as_aware(moment: datetime) -> datetime:
    """`moment` with its zone: a naive one is read as UTC, an aware one is kept."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def local_date(moment: datetime, zone: ZoneInfo) -> date:
    """The date in `zone` of a moment (naive: UTC)."""
    return as_aware(moment).astimezone(zone).date()


def local_hour(moment: datetime, zone: ZoneInfo) -> datetime:
    """The start (naive UTC) of the hour in `zone` that holds a moment (naive: UTC)."""
    local = as_aware(moment).astimezone(zone)
    return naive_utc(local.replace(minute=0, second=0, microsecond=0))


def local_midnight(moment: datetime, zone: ZoneInfo) -> datetime:
    """The start (naive UTC) of the day in `zone` that holds a moment (naive: UTC)."""
    local = as_aware(moment).astimezone(zone)
    return naive_utc(local.replace(hour=0, minute=0, second=0, microsecond=0))
