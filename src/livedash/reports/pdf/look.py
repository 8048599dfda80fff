"""How a report PDF looks: its page, fonts, colours, paragraph styles and cell formats."""

from __future__ import annotations

import functools
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

from livedash.reports.document import Cell, Kind

FONT, BOLD, ITALIC = "Vera", "Vera-Bold", "Vera-Italic"  # shipped with reportlab, wide Unicode
INK = colors.HexColor("#1d2b3a")
MUTED = colors.HexColor("#5d6b79")
ACCENT = colors.HexColor("#1f5f8b")
STRIPE = colors.HexColor("#eef3f7")
RULE = colors.HexColor("#c5d0da")
SERIES = [colors.HexColor(c) for c in ("#1f5f8b", "#e07a1f", "#2a9d8f", "#b23a48", "#6a4c93")]

NUMERIC = {Kind.INTEGER, Kind.DECIMAL, Kind.RATE, Kind.MONEY, Kind.HOURS}
NONE = "\N{EN DASH}"
EMPTY = "No rows for this period."

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 1.6 * cm
PADDING = 6  # a platypus frame's own, inside the margins
WIDTH = PAGE_WIDTH - 2 * (MARGIN + PADDING)
"""The width the body's flowables have."""


@functools.cache
def register_fonts() -> None:
    """Make the fonts known to reportlab (once per process)."""
    for name, file in ((FONT, "Vera.ttf"), (BOLD, "VeraBd.ttf"), (ITALIC, "VeraIt.ttf")):
        pdfmetrics.registerFont(TTFont(name, file))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=BOLD, italic=ITALIC, boldItalic=BOLD)


def _style(name: str, size: float, font: str = FONT, **more: Any) -> ParagraphStyle:
    settings: dict[str, Any] = {"leading": size * 1.25, "textColor": INK, **more}
    return ParagraphStyle(name, fontName=font, fontSize=size, **settings)


TITLE = _style("title", 17, BOLD, spaceAfter=2)
SUBTITLE = _style("subtitle", 10, textColor=MUTED, spaceAfter=10)
HEADING = _style(
    "heading", 11.5, BOLD, textColor=ACCENT, spaceBefore=12, spaceAfter=5, keepWithNext=1
)
BODY = _style("body", 8.5)
NOTE = _style("note", 8.5, ITALIC, textColor=MUTED, spaceAfter=2)
CELL = _style("cell", 7.5)
FIGURE = _style("figure", 8, leading=17)
HEADER = _style("header", 7.5, BOLD, textColor=colors.white)
HEADER_RIGHT = _style("header_right", 7.5, BOLD, textColor=colors.white, alignment=2)


def display(kind: Kind, value: Cell) -> str:
    """A cell as a reader sees it: 1,234 · 83.4 % · 1,234.50 · Sun 2026-03-29; None as NONE."""
    if value is None:
        return NONE
    if kind is Kind.INTEGER:
        return f"{int(value):,}"
    if kind in (Kind.DECIMAL, Kind.HOURS):
        return f"{float(value):,.2f}"
    if kind is Kind.RATE:
        return f"{float(value) * 100:.1f} %"
    if kind is Kind.MONEY:
        return f"{Decimal(str(value)):,.2f}"
    if kind is Kind.DATE:
        return f"{date.fromisoformat(str(value)):%a %Y-%m-%d}"
    if kind is Kind.HOUR:
        return f"{datetime.fromisoformat(str(value)):%a %Y-%m-%d %H:%M}"
    return str(value)


def width(text: str, font: str, size: float) -> float:
    """How wide `text` is set in `font` at `size` points."""
    return float(pdfmetrics.stringWidth(text, font, size))


def fit(text: str, font: str, size: float, room: float) -> str:
    """`text`, cut short with an ellipsis where it is wider than `room`."""
    while len(text) > 1 and width(text, font, size) > room:
        text = text[:-2] + "\N{HORIZONTAL ELLIPSIS}"
    return text
