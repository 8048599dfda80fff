"""A report's chart drawn from its table: a line or bar per column against the first one."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import date, datetime

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.charts.textlabels import Label
from reportlab.graphics.shapes import Drawing
from reportlab.graphics.widgets.markers import Marker
from reportlab.lib import colors
from reportlab.lib.units import cm
from reportlab.platypus import Flowable, Paragraph

from livedash.reports.document import Cell, Chart, Kind, Table
from livedash.reports.pdf.look import (
    BODY,
    EMPTY,
    FONT,
    INK,
    MUTED,
    RULE,
    SERIES,
    STRIPE,
    WIDTH,
    display,
    width,
)

MAX_X_LABELS = 24
"""A longer series shows every n-th label on its x axis."""
MARKED = 31
"""A line of at most this many points marks each point."""


def chart(shown: Chart, table: Table) -> Flowable:
    """`shown` as a drawing of `table`'s rows; rates in percent."""
    keys = [column.key for column in table.columns]
    x, ys = keys.index(shown.x), [keys.index(key) for key in shown.y]
    kinds = [table.columns[i].kind for i in ys]
    series = [
        [_number(kind, row[i]) for row in table.rows] for kind, i in zip(kinds, ys, strict=True)
    ]
    if all(value is None for values in series for value in values):
        return Paragraph(EMPTY, BODY)
    labels = _x_labels(table.columns[x].kind, [row[x] for row in table.rows])
    plot: VerticalBarChart | HorizontalLineChart
    if shown.style == "bar":
        plot = VerticalBarChart()
        for i, color in zip(range(len(series)), _colors(), strict=False):
            plot.bars[i].fillColor, plot.bars[i].strokeColor = color, None
    else:
        plot = HorizontalLineChart()
        for i, color in zip(range(len(series)), _colors(), strict=False):
            plot.lines[i].strokeColor, plot.lines[i].strokeWidth = color, 1.6
            if len(labels) <= MARKED:
                plot.lines[i].symbol = Marker(kind="FilledCircle", size=3.5, fillColor=color)
    drawing = Drawing(WIDTH, 5.9 * cm)
    plot.x, plot.y, plot.width, plot.height = 36, 36, int(WIDTH) - 42, 110
    plot.data = series
    step = math.ceil(len(labels) / MAX_X_LABELS)
    axis = plot.categoryAxis
    axis.visibleTicks = step == 1
    axis.visibleLabels = False  # drawn by `_axis_labels`
    axis.strokeColor = plot.valueAxis.strokeColor = RULE
    values = plot.valueAxis
    values.labels.fontName, values.labels.fontSize, values.labels.fillColor = FONT, 6.5, MUTED
    values.visibleGrid, values.gridStrokeColor, values.gridStrokeWidth = True, STRIPE, 0.6
    values.forceZero = True
    if all(kind is Kind.RATE for kind in kinds):
        values.labelTextFormat = "%.0f %%"
    else:
        values.labelTextFormat = lambda v: f"{v:,.0f}" if v == int(v) else f"{v:,.1f}"
    names = [table.columns[i].title for i in ys]
    legend = Legend()
    legend.x, legend.y, legend.alignment = plot.x, int(drawing.height) - 6, "right"
    legend.fontName, legend.fontSize, legend.fillColor = FONT, 7.5, INK
    legend.columnMaximum, legend.dx, legend.dy = 1, 8, 8  # one row, a column per series
    legend.deltax = math.ceil(max(width(name, FONT, 7.5) for name in names)) + 24
    legend.colorNamePairs = list(zip(_colors(), names, strict=False))
    drawing.add(plot)
    for label in _axis_labels(plot, labels, step):
        drawing.add(label)
    drawing.add(legend)
    return drawing


def _axis_labels(
    plot: VerticalBarChart | HorizontalLineChart, texts: list[str], step: int
) -> list[Label]:
    """Every `step`-th category's label, under the middle of its category.

    The category axis would make, measure and draw a label for every category, even one left
    blank: for the 720 hours of a 30-day occupancy chart that was most of the PDF's time.
    """
    band = plot.width / len(texts)
    shown = []
    for i in range(0, len(texts), step):
        label = Label()
        label.setOrigin(plot.x + (i + 0.5) * band, plot.y)
        label.setText(texts[i])
        label.fontName, label.fontSize, label.fillColor = FONT, 6.5, MUTED
        label.angle, label.boxAnchor, label.dy = 35, "ne", -2
        shown.append(label)
    return shown


def _colors() -> Iterator[colors.Color]:
    return itertools.cycle(SERIES)


def _number(kind: Kind, value: Cell) -> float | None:
    if value is None:
        return None
    return float(value) * 100 if kind is Kind.RATE else float(value)


def _x_labels(kind: Kind, values: list[Cell]) -> list[str]:
    if kind is Kind.DATE:
        return [f"{date.fromisoformat(str(v)):%d %b}" if v else "" for v in values]
    if kind is Kind.HOUR:
        moments = [datetime.fromisoformat(str(v)) if v else None for v in values]
        one_day = len({m.date() for m in moments if m}) <= 1
        return [f"{m:%H:%M}" if one_day else f"{m:%d %b %H:%M}" if m else "" for m in moments]
    return [display(kind, v) for v in values]
