"""The report's pages: the story of the body, and what every page carries around it."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.lib.units import cm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate

from livedash.reports.document import ReportDocument
from livedash.reports.pdf import charts, tables
from livedash.reports.pdf.look import (
    BOLD,
    FONT,
    HEADING,
    INK,
    MARGIN,
    MUTED,
    NOTE,
    PADDING,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    RULE,
    SUBTITLE,
    TITLE,
    WIDTH,
    fit,
    register_fonts,
    width,
)

TOP = PAGE_HEIGHT - 1.2 * cm
FOOT = 0.85 * cm
LEFT, RIGHT = MARGIN + PADDING, PAGE_WIDTH - MARGIN - PADDING


def render_pdf(document: ReportDocument) -> bytes:
    """The document as an A4 PDF (pure and blocking)."""
    register_fonts()
    out = io.BytesIO()
    pdf = SimpleDocTemplate(
        out,
        pagesize=(PAGE_WIDTH, PAGE_HEIGHT),
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=2.5 * cm,
        bottomMargin=1.8 * cm,
        title=document.title,
        author=document.hospital,
        subject=_period(document),
        creator=f"livedash {document.generator_version}",
        invariant=True,
        initialFontName=FONT,
    )
    decorate = _page_decoration(document)
    pdf.build(_story(document), onFirstPage=decorate, onLaterPages=decorate, canvasmaker=_Canvas)
    return out.getvalue()


def _story(document: ReportDocument) -> list[Flowable]:
    scope = document.department_name or document.department or "All departments"
    story: list[Flowable] = [
        Paragraph(escape(document.title), TITLE),
        Paragraph(escape(f"{scope} · {document.period.label}"), SUBTITLE),
    ]
    if document.figures:
        story.append(tables.figures(document.figures))
    if document.notes:
        story.append(Paragraph("Notes", HEADING))
        story += [Paragraph(escape(note), NOTE) for note in document.notes]
    by_key = {table.key: table for table in document.tables}
    for chart in document.charts:
        story.append(Paragraph(escape(chart.title), HEADING))
        story.append(charts.chart(chart, by_key[chart.table]))
    for table in document.tables:
        story.append(Paragraph(escape(table.title), HEADING))
        story += tables.table(table)
    return story


def _local(moment: datetime, zone: str) -> str:
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M}"


def _period(document: ReportDocument) -> str:
    start, end, zone = document.period.start, document.period.end, document.period.zone
    return f"{_local(start, zone)} \N{EN DASH} {_local(end, zone)} ({zone})"


def _page_decoration(document: ReportDocument) -> Callable[[Canvas, Any], None]:
    place = document.hospital
    if document.department_name:
        place += f" \N{EM DASH} {document.department_name}"
    generated = _local(document.generated_at, document.period.zone)
    made_for = f"generated {generated} for {document.generated_for}"
    source = f"livedash {document.generator_version} · feed position {document.feed_position}"
    period = _period(document)

    def decorate(canvas: Canvas, _doc: Any) -> None:
        canvas.saveState()
        canvas.setFillColor(INK)
        canvas.setFont(BOLD, 9.5)
        title = fit(document.title, BOLD, 9.5, WIDTH * 0.45)
        canvas.drawRightString(RIGHT, TOP, title)
        canvas.drawString(LEFT, TOP, fit(place, BOLD, 9.5, WIDTH - width(title, BOLD, 9.5) - 12))
        canvas.setFont(FONT, 8)
        canvas.setFillColor(MUTED)
        canvas.drawString(LEFT, TOP - 12, period)
        canvas.drawRightString(RIGHT, TOP - 12, fit(made_for, FONT, 8, WIDTH * 0.45))
        canvas.setStrokeColor(RULE)
        canvas.setLineWidth(0.6)
        canvas.line(LEFT, TOP - 18, RIGHT, TOP - 18)
        canvas.line(LEFT, FOOT + 11, RIGHT, FOOT + 11)
        canvas.drawString(LEFT, FOOT, source)
        canvas.restoreState()

    return decorate


class _Canvas(Canvas):
    """Holds each page back until the last, so that each can say "page X of Y"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()  # type: ignore[attr-defined]  # reportlab's fresh page, not in stubs

    def save(self) -> None:
        for number, page in enumerate(self._pages, 1):
            self.__dict__.update(page)
            self.setFont(FONT, 8)
            self.setFillColor(MUTED)
            self.drawRightString(RIGHT, FOOT, f"page {number} of {len(self._pages)}")
            super().showPage()
        super().save()
