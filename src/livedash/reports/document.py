"""A report as data: what every format (JSON, CSV, PDF) renders, and nothing else.

A report is built once from the database (`livedash.reports.catalogue`) into a
`ReportDocument`; the formats only lay it out. Cells are JSON-ready values whose meaning
the column's `kind` gives, so a CSV cell parsed back by its column's kind is the JSON cell:

    text      str
    integer   int
    decimal   float (a mean, rounded to 2 places)
    rate      float, a fraction from 0 to 1 (4 places)
    money     str, currency units exact to the cent ("1234.50")
    date      str, ISO 8601 date in the hospital's time zone
    hour      str, ISO 8601 local time with its offset ("2026-03-29T03:00:00+02:00")
    hours     float, a duration in hours (2 places)

A missing value (a rate of nothing, a mean of no stays) is None.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Cell = int | float | str | None


class Kind(enum.StrEnum):
    TEXT = "text"
    INTEGER = "integer"
    DECIMAL = "decimal"
    RATE = "rate"
    MONEY = "money"
    DATE = "date"
    HOUR = "hour"
    HOURS = "hours"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Table:
    """Rows of one kind: every row has one cell per column, in the columns' order."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "columns": [
                {"key": c.key, "title": c.title, "kind": c.kind.value} for c in self.columns
            ],
            "rows": [list(row) for row in self.rows],
        }


@dataclass(frozen=True, slots=True)
class Figure:
    """One headline number of the report."""

    key: str
    title: str
    kind: Kind
    value: Cell

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "kind": self.kind.value, "value": self.value}


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart drawn from one of the report's tables: `x` against each of `y`."""

    key: str
    title: str
    table: str
    x: str
    y: tuple[str, ...]
    style: str = "line"  # or "bar"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "table": self.table,
            "x": self.x,
            "y": list(self.y),
            "style": self.style,
        }


@dataclass(frozen=True, slots=True)
class ReportPeriod:
    """[start, end) as aware moments in the hospital's zone, and how it was asked for."""

    start: datetime
    end: datetime
    zone: str
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "time_zone": self.zone,
            "label": self.label,
        }


@dataclass(frozen=True, slots=True)
class ReportDocument:
    """One generated report: where it comes from, its figures, tables and charts."""

    report_type: str
    title: str
    hospital: str
    department: str | None  # its code; None: the whole hospital
    department_name: str | None
    period: ReportPeriod
    generated_at: datetime  # aware
    generated_for: str  # the username it was generated for
    generator_version: str
    feed_position: int
    parameters: dict[str, Any]
    figures: tuple[Figure, ...] = ()
    tables: tuple[Table, ...] = ()
    charts: tuple[Chart, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def table(self, key: str) -> Table:
        return next(table for table in self.tables if table.key == key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "report_type": self.report_type,
            "title": self.title,
            "hospital": self.hospital,
            "department": self.department,
            "department_name": self.department_name,
            "period": self.period.as_dict(),
            "generated_at": self.generated_at.isoformat(),
            "generated_for": self.generated_for,
            "generator_version": self.generator_version,
            "feed_position": self.feed_position,
            "parameters": self.parameters,
            "figures": [figure.as_dict() for figure in self.figures],
            "tables": [table.as_dict() for table in self.tables],
            "charts": [chart.as_dict() for chart in self.charts],
            "notes": list(self.notes),
        }
