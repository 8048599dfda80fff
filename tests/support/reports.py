"""A realistic report document, the same every time, for the format and PDF tests.

`sample_document` builds what an operations report holds: figures, a per-day table (integer,
rate, hours, money, date and text columns, some cells missing), the last day by hour (a day of
23 or 25 hours where clocks change), two charts and notes, with non-ASCII text throughout.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from statistics import fmean
from zoneinfo import ZoneInfo

from livedash.reports.document import (
    Cell,
    Chart,
    Column,
    Figure,
    Kind,
    ReportDocument,
    ReportPeriod,
    Table,
)

ZONE = "Europe/Berlin"
HOSPITAL = "St. Elisabeth-Krankenhaus Köln"
GENERATED_FOR = "m.schneider"
DEPARTMENTS = {
    "ED": "Notaufnahme \N{EN DASH} Süd",
    "ICU": "Intensivstation Nord",
    "CARD": "Kardiologie",
}
REMARKS = {
    1: 'Ward 3 closed, "deep clean"\nreopened 14:00',
    2: "Notaufnahme \N{EN DASH} Süd: Überlastung ab 18 Uhr",
}
DAILY_COLUMNS = (
    Column("date", "Date", Kind.DATE),
    Column("admissions", "Admissions", Kind.INTEGER),
    Column("discharges", "Discharges", Kind.INTEGER),
    Column("occupancy", "Bed occupancy", Kind.RATE),
    Column("mean_stay", "Mean stay (h)", Kind.HOURS),
    Column("revenue", "Revenue (EUR)", Kind.MONEY),
    Column("remark", "Remark", Kind.TEXT),
)
HOURLY_COLUMNS = (
    Column("hour", "Hour", Kind.HOUR),
    Column("arrivals", "Arrivals", Kind.INTEGER),
    Column("waiting", "Waiting at the hour", Kind.INTEGER),
    Column("mean_wait", "Mean wait (min)", Kind.DECIMAL),
)


def sample_document(
    days: int = 3,
    department: str | None = None,
    *,
    start: date = date(2026, 3, 27),
    notes: bool = True,
) -> ReportDocument:
    """`days` days of operations from `start` (by default over the spring clock change)."""
    zone = ZoneInfo(ZONE)
    rng = random.Random(f"{department}-{start}-{days}")
    scale = 1 if department is None else 0.3
    dates = [start + timedelta(days=n) for n in range(days)]
    daily: list[tuple[Cell, ...]] = []
    for n, day in enumerate(dates):
        discharges = 0 if n == 1 else round(rng.randint(50, 90) * scale)
        cents = 3_141_550 if n == 0 else round(rng.randint(1_500_000, 4_500_000) * scale)
        daily.append(
            (
                day.isoformat(),
                round(rng.randint(55, 95) * scale),
                discharges,
                round(rng.uniform(0.72, 0.97), 4),
                None if discharges == 0 else round(rng.uniform(20, 140), 2),
                str(Decimal(cents).scaleb(-2)),
                REMARKS.get(n),
            )
        )
    last = datetime.combine(dates[-1], time(), tzinfo=zone)
    hours: list[tuple[Cell, ...]] = []
    moment = last.astimezone(ZoneInfo("UTC"))
    while moment.astimezone(zone).date() == dates[-1]:
        local = moment.astimezone(zone)
        arrivals = 0 if local.hour == 4 else round(rng.randint(2, 14) * scale)
        hours.append(
            (
                local.isoformat(),
                arrivals,
                rng.randint(0, 12),
                None if arrivals == 0 else round(rng.uniform(8, 95), 2),
            )
        )
        moment += timedelta(hours=1)
    stays = [row[4] for row in daily if isinstance(row[4], float)]
    figures = (
        Figure("admissions", "Admissions", Kind.INTEGER, sum(_ints(daily, 1))),
        Figure("discharges", "Discharges", Kind.INTEGER, sum(_ints(daily, 2))),
        Figure("occupancy", "Mean bed occupancy", Kind.RATE, round(fmean(_floats(daily, 3)), 4)),
        Figure("mean_stay", "Mean stay (h)", Kind.HOURS, round(fmean(stays), 2) if stays else None),
        Figure("revenue", "Revenue (EUR)", Kind.MONEY, str(sum(Decimal(str(r[5])) for r in daily))),
    )
    end = datetime.combine(start + timedelta(days=days), time(), tzinfo=zone)
    return ReportDocument(
        report_type="operations",
        title="Daily operations",
        hospital=HOSPITAL,
        department=department,
        department_name=DEPARTMENTS.get(department) if department else None,
        period=ReportPeriod(
            start=datetime.combine(start, time(), tzinfo=zone),
            end=end,
            zone=ZONE,
            label=f"{days} days",
        ),
        generated_at=end + timedelta(hours=6, minutes=15),
        generated_for=GENERATED_FOR,
        generator_version="0.1.0",
        feed_position=48_213 + days,
        parameters={"days": days, "department": department},
        figures=figures,
        tables=(
            Table("daily", "Per day", DAILY_COLUMNS, tuple(daily)),
            Table(
                "hourly", f"Last day by hour ({dates[-1]:%d %b %Y})", HOURLY_COLUMNS, tuple(hours)
            ),
        ),
        charts=(
            Chart(
                "flow", "Admissions and discharges", "daily", "date", ("admissions", "discharges")
            ),
            Chart("arrivals", "Arrivals by hour, last day", "hourly", "hour", ("arrivals",), "bar"),
        ),
        notes=(
            "Bed occupancy counts staffed beds at midnight; revenue is provisional until coding "
            "is complete.",
            "Zeiten in Ortszeit (Europe/Berlin); Tage mit Zeitumstellung haben 23 oder 25 Stunden.",
        )
        if notes
        else (),
    )


def _ints(rows: list[tuple[Cell, ...]], i: int) -> list[int]:
    return [v for row in rows if isinstance(v := row[i], int)]


def _floats(rows: list[tuple[Cell, ...]], i: int) -> list[float]:
    return [v for row in rows if isinstance(v := row[i], float)]
