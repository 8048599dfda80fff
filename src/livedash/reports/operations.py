"""Reports on the hospital's operations: appointments, revenue, alerts."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select

from livedash.metrics.definitions import ALERT_SEVERITIES, APPOINTMENT_STATUSES
from livedash.reports.document import Chart, Column, Figure, Kind, Table
from livedash.reports.inputs import (
    ReportInputs,
    Scope,
    Window,
    cents,
    hours_between,
    mean,
    ratio,
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
from livedash.store.models import Alert, Appointment
from livedash.timeutil import naive_utc


async def appointments(inputs: ReportInputs, scope: Scope, window: Window) -> Sections:
    # Appointments belong to the day they are booked for: a period that ends part-way through
    # a day (today, so far) holds that day's whole list, as `appointments_today` does.
    window = window.whole_days()
    query = select(Appointment.department_id, Appointment.scheduled_at, Appointment.status).where(
        *around(Appointment.scheduled_at, window),
        *in_scope(Appointment.department_id, scope),
    )
    async with inputs.database.connect() as connection:
        found = [row for row in await connection.execute(query) if window.holds(row[1])]
    per_day: dict[date, Counter[str]] = defaultdict(Counter)
    per_department: dict[int, Counter[str]] = defaultdict(Counter)
    for department, scheduled, status in found:
        per_day[window.day_of(scheduled)][status] += 1
        per_department[department][status] += 1

    def row(counts: Counter[str]) -> tuple[int | float | None, ...]:
        total = sum(counts.values())
        return (
            total,
            *(counts[status] for status in APPOINTMENT_STATUSES),
            ratio(counts["completed"], total),
            ratio(counts["cancelled"], total),
            ratio(counts["no_show"], total),
        )

    columns = (
        Column("total", "Total", Kind.INTEGER),
        *(Column(s, s.replace("_", " ").capitalize(), Kind.INTEGER) for s in APPOINTMENT_STATUSES),
        Column("completion_rate", "Completion", Kind.RATE),
        Column("cancellation_rate", "Cancellation", Kind.RATE),
        Column("no_show_rate", "No-show", Kind.RATE),
    )
    tables = [
        Table(
            "by_day",
            "Appointments by day",
            (DAY, *columns),
            tuple((day.isoformat(), *row(per_day.get(day, Counter()))) for day in window.days()),
        )
    ]
    below = await scopes_below(inputs, scope)
    if below:
        tables.append(
            Table(
                "by_department",
                "By department",
                (DEPARTMENT, *columns),
                tuple((d.name, *row(per_department.get(d.ident or 0, Counter()))) for d in below),
            )
        )
    everything: Counter[str] = Counter(status for _d, _s, status in found)
    total, *_statuses, completion, cancellation, no_show = row(everything)
    return Sections(
        figures=(
            Figure("total", "Appointments", Kind.INTEGER, total),
            Figure("completion_rate", "Completion rate", Kind.RATE, completion),
            Figure("cancellation_rate", "Cancellation rate", Kind.RATE, cancellation),
            Figure("no_show_rate", "No-show rate", Kind.RATE, no_show),
        ),
        tables=tuple(tables),
        charts=(
            Chart(
                "daily",
                "Appointments by day",
                "by_day",
                "date",
                ("completed", "cancelled", "no_show"),
                "bar",
            ),
        ),
        notes=("Rates are shares of every appointment scheduled in the period, any status.",),
    )


async def revenue(inputs: ReportInputs, scope: Scope, window: Window) -> Sections:
    daily = (await daily_counts(inputs, ("revenue",), scope, window))["revenue"]
    days = window.days()
    rows = tuple((day.isoformat(), cents(daily.get(day, 0))) for day in days)
    total = sum(daily.values())
    tables = [
        Table("by_day", "Revenue by day", (DAY, Column("revenue", "Revenue", Kind.MONEY)), rows)
    ]
    below = await scopes_below(inputs, scope)
    if below:
        rows_below = []
        for department in below:
            own = (await daily_counts(inputs, ("revenue",), department, window))["revenue"]
            rows_below.append((department.name, cents(sum(own.values()))))
        tables.append(
            Table(
                "by_department",
                "Revenue by department",
                (DEPARTMENT, Column("revenue", "Revenue", Kind.MONEY)),
                tuple(rows_below),
            )
        )
    return Sections(
        figures=(
            Figure("revenue", "Revenue", Kind.MONEY, cents(total)),
            Figure("revenue_daily_mean", "Per day", Kind.MONEY, cents(_per_day(total, len(days)))),
        ),
        tables=tuple(tables),
        charts=(Chart("daily", "Revenue by day", "by_day", "date", ("revenue",), "bar"),),
        notes=(
            "Revenue is payments received, counted on the local day they were paid; the "
            "mean per day is rounded to the cent.",
        ),
    )


async def alerts(inputs: ReportInputs, scope: Scope, window: Window) -> Sections:
    query = select(
        Alert.raised_at, Alert.severity, Alert.rule, Alert.acknowledged_at, Alert.resolved_at
    ).where(
        *around(Alert.raised_at, window),
        *in_scope(Alert.department_id, scope),
    )
    async with inputs.database.connect() as connection:
        found = [
            (naive_utc(raised), severity, rule, _utc(acknowledged), _utc(resolved))
            for raised, severity, rule, acknowledged, resolved in await connection.execute(query)
            if window.holds(raised)
        ]
    per_day: dict[date, Counter[str]] = defaultdict(Counter)
    per_rule: dict[str, list[tuple[datetime, datetime | None, datetime | None]]] = defaultdict(list)
    for raised, severity, rule, acknowledged, resolved in found:
        per_day[window.day_of(raised)][severity] += 1
        per_rule[rule or "(raised by hand)"].append((raised, acknowledged, resolved))

    def minutes(pairs: list[tuple[datetime, datetime | None]]) -> float | None:
        return mean([hours_between(a, b) * 60 for a, b in pairs if b is not None and b >= a])

    acknowledge = [(r, a) for r, _s, _rule, a, _res in found]
    resolve = [(r, res) for r, _s, _rule, _a, res in found]
    noisiest = sorted(per_rule.items(), key=lambda item: (-len(item[1]), item[0]))[:10]
    severity_columns = tuple(Column(s, s.capitalize(), Kind.INTEGER) for s in ALERT_SEVERITIES)
    return Sections(
        figures=(
            Figure("raised", "Alerts raised", Kind.INTEGER, len(found)),
            *(
                Figure(
                    f"raised_{s}", f"Raised, {s}", Kind.INTEGER, sum(1 for f in found if f[1] == s)
                )
                for s in ALERT_SEVERITIES
            ),
            Figure(
                "acknowledge_minutes_mean",
                "Mean time to acknowledge (min)",
                Kind.DECIMAL,
                minutes(acknowledge),
            ),
            Figure(
                "resolve_minutes_mean", "Mean time to resolve (min)", Kind.DECIMAL, minutes(resolve)
            ),
        ),
        tables=(
            Table(
                "by_day",
                "Alerts raised by day",
                (DAY, Column("raised", "Raised", Kind.INTEGER), *severity_columns),
                tuple(
                    (
                        day.isoformat(),
                        sum(per_day.get(day, Counter()).values()),
                        *(per_day.get(day, Counter())[s] for s in ALERT_SEVERITIES),
                    )
                    for day in window.days()
                ),
            ),
            Table(
                "noisiest_rules",
                "Noisiest rules",
                (
                    Column("rule", "Rule", Kind.TEXT),
                    Column("raised", "Raised", Kind.INTEGER),
                    Column("acknowledge_minutes_mean", "Mean to acknowledge (min)", Kind.DECIMAL),
                    Column("resolve_minutes_mean", "Mean to resolve (min)", Kind.DECIMAL),
                ),
                tuple(
                    (
                        rule,
                        len(raised),
                        minutes([(r, a) for r, a, _res in raised]),
                        minutes([(r, res) for r, _a, res in raised]),
                    )
                    for rule, raised in noisiest
                ),
            ),
        ),
        charts=(Chart("daily", "Alerts raised by day", "by_day", "date", ALERT_SEVERITIES, "bar"),),
        notes=("Times to acknowledge and resolve are means over the alerts that were.",),
    )


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else naive_utc(moment)


def _per_day(total: int, days: int) -> int:
    """Cents per day, rounded half up as money is (Python's `round` would round half to even)."""
    return int((Decimal(total) / days).quantize(Decimal(1), rounding=ROUND_HALF_UP))
