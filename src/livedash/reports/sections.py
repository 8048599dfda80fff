"""What every report type is made of, and the helpers they share.

A builder returns a report's figures, tables, charts and notes for one scope (the hospital or
one department) over one period; `livedash.reports.generation` adds where it comes from.
Days are the hospital's local days, so a day across a daylight-saving change is 23 or 25
hours long.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement

from livedash.reports.document import Chart, Column, Figure, Kind, Table
from livedash.reports.inputs import ReportInputs, Scope, Window, by_day, departments, series


@dataclass(frozen=True, slots=True)
class Sections:
    figures: tuple[Figure, ...]
    tables: tuple[Table, ...]
    charts: tuple[Chart, ...] = ()
    notes: tuple[str, ...] = ()


Builder = Callable[[ReportInputs, Scope, Window], Awaitable[Sections]]

DAY = Column("date", "Date", Kind.DATE)
DEPARTMENT = Column("department", "Department", Kind.TEXT)
MARGIN = timedelta(days=2)


def in_scope(column: Any, scope: Scope) -> list[ColumnElement[bool]]:
    """The WHERE clause that limits `column` (a department id) to the scope."""
    return [] if scope.ident is None else [column == scope.ident]


def around(column: Any, window: Window) -> list[ColumnElement[bool]]:
    """The WHERE clause that finds every row whose `column` lies in the window (and some rows
    either side of it): the builder keeps those that `Window.holds`.

    SQLite compares the text the hospital wrote, which need not be in SQLAlchemy's form
    ("…23:00:00" without a fraction, "…T23:00:00Z"): near a bound, text compares wrongly. Every
    form begins with its date, so bounds a few days wider find every row of the period.
    """
    return [column >= window.start - MARGIN, column < window.end + MARGIN]


async def scopes_below(inputs: ReportInputs, scope: Scope) -> list[Scope]:
    """The departments a hospital-wide report breaks its figures down by (none for one)."""
    return await departments(inputs) if scope.ident is None else []


async def daily_counts(
    inputs: ReportInputs, names: tuple[str, ...], scope: Scope, window: Window
) -> dict[str, dict[date, int]]:
    """Roll-up series summed by local day."""
    counts: dict[str, dict[date, int]] = {}
    for name in names:
        points = await series(inputs, name, scope, window, "day")
        counts[name] = {day: int(point.value or 0) for day, point in by_day(points, window).items()}
    return counts
