"""The headline figures as a row of tiles, and each table of a report in full."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, LongTable, Paragraph, Spacer, TableStyle

from livedash.reports.document import Cell, Column, Figure, Kind, Table
from livedash.reports.pdf.look import (
    ACCENT,
    BODY,
    BOLD,
    CELL,
    EMPTY,
    FIGURE,
    FONT,
    HEADER,
    HEADER_RIGHT,
    INK,
    MUTED,
    NUMERIC,
    RULE,
    STRIPE,
    WIDTH,
    display,
    width,
)

SIZE, PAD = 7.5, 6.0  # a cell's text size and its padding left and right
SMALLEST = 6.0  # a wider table comes in parts


def figures(shown: Sequence[Figure]) -> Flowable:
    """The figures as tiles, at most five to a row, their values in one size that fits."""
    per_row = math.ceil(len(shown) / math.ceil(len(shown) / 5))
    values = [display(figure.kind, figure.value) for figure in shown]
    widest = max(width(value, BOLD, 1) for value in values) or 1.0
    size = min(14.0, (WIDTH / per_row - 18) / widest)
    cells: list[Paragraph | str] = [
        Paragraph(
            f'<font size="{size:.1f}" name="{BOLD}">{escape(value)}</font>'
            f'<br/><font size="7.5" color="{MUTED.hexval()}">{escape(figure.title)}</font>',
            FIGURE,
        )
        for figure, value in zip(shown, values, strict=True)
    ]
    fillers = -len(cells) % per_row
    cells += [""] * fillers
    grid = LongTable(
        [cells[i : i + per_row] for i in range(0, len(cells), per_row)],
        colWidths=[WIDTH / per_row] * per_row,
    )
    style: list[tuple[Any, ...]] = [
        ("BACKGROUND", (0, 0), (-1, -1), STRIPE),
        ("LINEAFTER", (0, 0), (-2, -1), 3, colors.white),
        ("LINEBELOW", (0, 0), (-1, -2), 3, colors.white),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 6),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 7),
        ("LEFTPADDING", (0, 0), (-1, -1), 8),
    ]
    if fillers:
        style.append(("BACKGROUND", (-fillers, -1), (-1, -1), colors.white))
    grid.setStyle(TableStyle(style))
    return grid


def table(shown: Table) -> list[Flowable]:
    """Every row and column: the header row repeats on each page the table runs on to, and a
    table too wide for the page comes in parts, each led by its first column again."""
    if not shown.rows:
        return [Paragraph(EMPTY, BODY)]
    columns = shown.columns
    texts = [_texts(column, [row[i] for row in shown.rows]) for i, column in enumerate(columns)]
    needs = [_Needs(column, cells) for column, cells in zip(columns, texts, strict=True)]
    parts: list[list[int]] = [[0]]
    for i in range(1, len(columns)):
        grown = [*parts[-1], i]
        if len(grown) > 2 and sum(_layout([needs[j] for j in grown])[0]) > WIDTH + 0.01:
            parts.append([0, i])
        else:
            parts[-1] = grown
    grids: list[Flowable] = []
    for part in parts:
        if grids:
            grids.append(Spacer(0, 8))
        grids.append(
            _grid([columns[i] for i in part], [texts[i] for i in part], [needs[i] for i in part])
        )
    return grids


def _grid(columns: list[Column], texts: list[list[str]], needs: list[_Needs]) -> Flowable:
    widths, size, pad = _layout(needs)
    cell, head, head_right = (
        ParagraphStyle(f"{style.name}-{size:.2f}", style, fontSize=size, leading=size * 1.25)
        for style in (CELL, HEADER, HEADER_RIGHT)
    )
    header = [
        Paragraph(escape(c.title), head_right if c.kind in NUMERIC else head) for c in columns
    ]
    rows = [
        [
            Paragraph(escape(text), cell) if c.kind is Kind.TEXT else text
            for c, text in zip(columns, cells, strict=True)
        ]
        for cells in zip(*texts, strict=True)
    ]
    grid = LongTable([header, *rows], colWidths=widths, repeatRows=1)
    style: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, -1), FONT, size),
        ("TEXTCOLOR", (0, 1), (-1, -1), INK),
        ("BACKGROUND", (0, 0), (-1, 0), ACCENT),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, STRIPE]),
        ("LINEBELOW", (0, -1), (-1, -1), 0.5, RULE),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
        ("LEFTPADDING", (0, 0), (-1, -1), pad),
        ("RIGHTPADDING", (0, 0), (-1, -1), pad),
    ]
    style += [
        ("ALIGN", (i, 1), (i, -1), "RIGHT") for i, c in enumerate(columns) if c.kind in NUMERIC
    ]
    grid.setStyle(TableStyle(style))
    return grid


def _texts(column: Column, values: list[Cell]) -> list[str]:
    texts = [display(column.kind, value) for value in values]
    if column.kind is not Kind.HOUR:
        return texts
    # Where clocks go back, one local hour comes twice: only its offset tells them apart.
    twice = {text for text, n in Counter(texts).items() if n > 1}
    return [
        f"{text} {str(value)[-6:]}" if text in twice else text
        for text, value in zip(texts, values, strict=True)
    ]


class _Needs:
    """How wide a column's content is at SIZE: with its title on one line, or wrapped."""

    def __init__(self, column: Column, cells: list[str]) -> None:
        self.text = column.kind is Kind.TEXT  # text wraps: it takes the room that is left
        words = [width(word, BOLD, SIZE) for word in column.title.split()]
        content = max([*words, *(width(cell, FONT, SIZE) for cell in cells)])
        self.wrapped = 0.0 if self.text else content
        self.whole = 0.0 if self.text else max(content, width(column.title, BOLD, SIZE))


def _layout(needs: list[_Needs]) -> tuple[list[float], float, float]:
    """Column widths, text size and side padding: at SIZE where the columns fit, else smaller."""
    texts = sum(need.text for need in needs)
    for sizes in ([need.whole for need in needs], [need.wrapped for need in needs]):
        spare = WIDTH - sum(sizes) - 2 * PAD * len(needs)
        if spare >= WIDTH / 4 * texts:  # text narrower than a quarter page wraps too much
            share = [need.text or not texts for need in needs]
            widths = [
                size + 2 * PAD + spare * wide / sum(share)
                for size, wide in zip(sizes, share, strict=True)
            ]
            return widths, SIZE, PAD
    sizes = [60.0 if need.text else need.wrapped for need in needs]
    size = max(SMALLEST, SIZE * (WIDTH - 4 * len(needs)) / sum(sizes))
    return [room * size / SIZE + 4 for room in sizes], size, 2.0
