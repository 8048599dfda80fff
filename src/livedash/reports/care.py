"""Reports on patients' care: occupancy and length of stay, admissions, the emergency
department."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime

from sqlalchemy import select

from livedash.reports.document import Chart, Column, Figure, Kind, Table
from livedash.reports.inputs import (
    ReportInputs,
    Scope,
    Window,
    by_day,
    hours_between,
    mean,
    series,
)
from livedash.reports.sections import (
    DAY,
    DEPARTMENT,
    Sections,
    around,
    daily_counts,
    in_scope,
    scopes_below,
)
from livedash.store.models import Admission, Patient
from livedash.timeutil import naive_utc


async def occupancy(inputs: ReportInputs, scope: Scope, window: Window) -> Sections:
    hourly = await series(inputs, "occupancy", scope, window, "hour")
    daily = by_day(await series(inputs, "occupancy", scope, window, "day"), window)
    stays = await _stays(inputs, scope, window)
    per_day: dict[date, list[float]] = defaultdict(list)
    for _department, hours, day in stays:
        per_day[day].append(hours)
    observed = [p.value for p in hourly if isinstance(p.value, float | int)]
    peaks = [p.peak for p in hourly if p.peak is not None]
    all_stays = [hours for _d, hours, _day in stays]
    rows = []
    for day in window.days():
        point = daily.get(day)
        lengths = per_day.get(day, [])
        rows.append(
            (
                day.isoformat(),
                point.value if point is not None else None,
                point.peak if point is not None else None,
                len(lengths),
                mean(lengths),
                round(max(lengths), 2) if lengths else None,
            )
        )
    tables = [
        Table(
            "by_day",
            "Occupancy and stays by day",
            (
                DAY,
                Column("occupancy_mean", "Mean occupancy", Kind.RATE),
                Column("occupancy_peak", "Peak occupancy", Kind.RATE),
                Column("stays_ended", "Stays ended", Kind.INTEGER),
                Column("length_of_stay_mean", "Mean stay (h)", Kind.HOURS),
                Column("length_of_stay_max", "Longest stay (h)", Kind.HOURS),
            ),
            tuple(rows),
        ),
        Table(
            "by_hour",
            "Occupancy by hour",
            (
                Column("hour", "Hour", Kind.HOUR),
                Column("occupancy_mean", "Mean occupancy", Kind.RATE),
                Column("occupancy_peak", "Peak occupancy", Kind.RATE),
            ),
            tuple((p.start.astimezone(window.zone).isoformat(), p.value, p.peak) for p in hourly),
        ),
    ]
    below = await scopes_below(inputs, scope)
    if below:
        by_department: dict[int, list[float]] = defaultdict(list)
        for department, hours, _day in stays:
            by_department[department].append(hours)
        rows_below = []
        for unit in below:
            points = await series(inputs, "occupancy", unit, window, "hour")
            values = [p.value for p in points if isinstance(p.value, float | int)]
            lengths = by_department.get(unit.ident or 0, [])
            rows_below.append((unit.name, mean(values, 4), len(lengths), mean(lengths)))
        tables.append(
            Table(
                "by_department",
                "By department",
                (
                    DEPARTMENT,
                    Column("occupancy_mean", "Mean occupancy", Kind.RATE),
                    Column("stays_ended", "Stays ended", Kind.INTEGER),
                    Column("length_of_stay_mean", "Mean stay (h)", Kind.HOURS),
                ),
                tuple(rows_below),
            )
        )
    return Sections(
        figures=(
            Figure("occupancy_mean", "Mean hourly occupancy", Kind.RATE, mean(observed, 4)),
            Figure("occupancy_peak", "Peak occupancy", Kind.RATE, max(peaks, default=None)),
            Figure("stays_ended", "Stays ended", Kind.INTEGER, len(all_stays)),
            Figure("length_of_stay_mean", "Mean length of stay (h)", Kind.HOURS, mean(all_stays)),
        ),
        tables=tuple(tables),
        charts=(
            Chart("hourly_occupancy", "Occupancy by hour", "by_hour", "hour", ("occupancy_mean",)),
        ),
        notes=(
            "Occupancy is occupied beds over beds in service, averaged over each hour as the "
            "dashboard observed it; a stay counts on the day it ended.",
        ),
    )


async def _stays(
    inputs: ReportInputs, scope: Scope, window: Window
) -> list[tuple[int, float, date]]:
    """(department id, hours, local end date) of each stay that ended in the period."""
    query = select(Admission.department_id, Admission.admitted_at, Admission.discharged_at).where(
        *around(Admission.discharged_at, window),
        *in_scope(Admission.department_id, scope),
    )
    async with inputs.database.connect() as connection:
        found = list(await connection.execute(query))
    stays = []
    for department, admitted, discharged in found:
        if discharged is not None and window.holds(discharged):
            ended = naive_utc(discharged)
            stays.append(
                (department, hours_between(naive_utc(admitted), ended), window.day_of(ended))
            )
    return stays


async def admissions(inputs: ReportInputs, scope: Scope, window: Window) -> Sections:
    names = ("admissions", "discharges")
    counts = await daily_counts(inputs, names, scope, window)
    days = window.days()
    rows = tuple(
        (
            day.isoformat(),
            counts["admissions"].get(day, 0),
            counts["discharges"].get(day, 0),
            counts["admissions"].get(day, 0) - counts["discharges"].get(day, 0),
        )
        for day in days
    )
    columns = (
        Column("admissions", "Admissions", Kind.INTEGER),
        Column("discharges", "Discharges", Kind.INTEGER),
        Column("net", "Net", Kind.INTEGER),
    )
    tables = [Table("by_day", "Admissions and discharges by day", (DAY, *columns), rows)]
    below = await scopes_below(inputs, scope)
    if below:
        rows_below = []
        for department in below:
            own = await daily_counts(inputs, names, department, window)
            admitted, discharged = sum(own["admissions"].values()), sum(own["discharges"].values())
            rows_below.append((department.name, admitted, discharged, admitted - discharged))
        tables.append(
            Table("by_department", "By department", (DEPARTMENT, *columns), tuple(rows_below))
        )
    total_in = sum(row[1] for row in rows)
    total_out = sum(row[2] for row in rows)
    return Sections(
        figures=(
            Figure("admissions", "Admissions", Kind.INTEGER, total_in),
            Figure("discharges", "Discharges", Kind.INTEGER, total_out),
            Figure("net", "Net change", Kind.INTEGER, total_in - total_out),
            Figure(
                "admissions_daily_mean",
                "Admissions per day",
                Kind.DECIMAL,
                mean([r[1] for r in rows]),
            ),
        ),
        tables=tuple(tables),
        charts=(
            Chart(
                "daily",
                "Admissions and discharges",
                "by_day",
                "date",
                ("admissions", "discharges"),
                "bar",
            ),
        ),
    )


async def emergency(inputs: ReportInputs, scope: Scope, window: Window) -> Sections:
    daily = by_day(await series(inputs, "emergency_arrivals", scope, window, "day"), window)
    hourly = await series(inputs, "emergency_arrivals", scope, window, "hour")
    query = (
        select(Patient.id, Patient.registered_at, Admission.admitted_at)
        .outerjoin(Admission, Admission.patient_id == Patient.id)
        .where(
            Patient.emergency.is_(True),
            *around(Patient.registered_at, window),
            *in_scope(Patient.department_id, scope),
        )
    )
    async with inputs.database.connect() as connection:
        found = list(await connection.execute(query))
    # The first admission of each, found here: SQLite's MIN would compare the text written.
    arrivals: dict[int, datetime] = {}
    first_admission: dict[int, datetime] = {}
    for ident, registered_at, admitted_at in found:
        if not window.holds(registered_at):
            continue
        arrivals[ident] = naive_utc(registered_at)
        if admitted_at is not None:
            moment = naive_utc(admitted_at)
            first_admission[ident] = min(moment, first_admission.get(ident, moment))
    waits: dict[date, list[float]] = defaultdict(list)
    not_admitted = 0
    for ident, registered in arrivals.items():
        admitted = first_admission.get(ident)
        if admitted is None or admitted < registered:
            not_admitted += 1
        else:
            waits[window.day_of(registered)].append(hours_between(registered, admitted))
    by_hour_of_day: Counter[int] = Counter()
    for point in hourly:
        by_hour_of_day[point.start.astimezone(window.zone).hour] += int(point.value or 0)
    days = window.days()
    day_rows = tuple(
        (
            day.isoformat(),
            int(daily[day].value or 0) if day in daily else 0,
            len(waits.get(day, [])),
            mean(waits.get(day, [])),
            round(max(waits[day]), 2) if waits.get(day) else None,
        )
        for day in days
    )
    hour_rows = tuple(
        (hour, by_hour_of_day[hour], round(by_hour_of_day[hour] / len(days), 2))
        for hour in range(24)
    )
    all_waits = [w for values in waits.values() for w in values]
    busiest = max(range(24), key=lambda hour: (by_hour_of_day[hour], -hour))
    peak_hour = max(hourly, key=lambda p: int(p.value or 0), default=None)
    return Sections(
        figures=(
            Figure("arrivals", "Emergency arrivals", Kind.INTEGER, sum(r[1] for r in day_rows)),
            Figure(
                "admitted", "Admitted from the emergency department", Kind.INTEGER, len(all_waits)
            ),
            Figure("not_admitted", "Not admitted", Kind.INTEGER, not_admitted),
            Figure("wait_mean", "Mean wait for admission (h)", Kind.HOURS, mean(all_waits)),
            Figure("busiest_hour_of_day", "Busiest hour of the day", Kind.INTEGER, busiest),
            Figure(
                "peak_hour_arrivals",
                "Most arrivals in one hour",
                Kind.INTEGER,
                int(peak_hour.value or 0) if peak_hour is not None else 0,
            ),
        ),
        tables=(
            Table(
                "by_day",
                "Arrivals and waits by day",
                (
                    DAY,
                    Column("arrivals", "Arrivals", Kind.INTEGER),
                    Column("admitted", "Admitted", Kind.INTEGER),
                    Column("wait_mean", "Mean wait (h)", Kind.HOURS),
                    Column("wait_max", "Longest wait (h)", Kind.HOURS),
                ),
                day_rows,
            ),
            Table(
                "by_hour_of_day",
                "Arrivals by hour of day",
                (
                    Column("hour_of_day", "Hour of day", Kind.INTEGER),
                    Column("arrivals", "Arrivals", Kind.INTEGER),
                    Column("arrivals_daily_mean", "Per day", Kind.DECIMAL),
                ),
                hour_rows,
            ),
        ),
        charts=(
            Chart(
                "arrivals_by_hour",
                "Arrivals by hour of day",
                "by_hour_of_day",
                "hour_of_day",
                ("arrivals",),
                "bar",
            ),
        ),
        notes=(
            "A wait runs from registration to the patient's first admission; patients not "
            "admitted are counted apart.",
        ),
    )
