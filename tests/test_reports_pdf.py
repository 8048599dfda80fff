"""A report as a PDF, read the way a person reads it: poppler's text of each page, and a picture.

Uses Debian's poppler-utils (pdftotext, pdfinfo, pdftoppm), a system dependency like Chromium.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from livedash.reports.document import Cell, Column, Kind, ReportDocument, Table
from livedash.reports.pdf import render_pdf
from tests.support.reports import HOSPITAL, sample_document

ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
HEADER = re.compile(r"Date\s+Admissions\s+Discharges")
"""The per-day table's header row, as pdftotext lays it out."""


def _pages(pdf: Path, mode: str = "-layout") -> list[str]:
    """The text of each page: laid out as printed, or `-raw` in the order it was drawn."""
    text = subprocess.run(
        ["pdftotext", mode, str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout
    return text.split("\f")[:-1]


def _page_count(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True)
    return int(re.search(r"^Pages:\s+(\d+)$", info.stdout, re.MULTILINE)[1])  # type: ignore[index]


def _write(document: ReportDocument, path: Path) -> Path:
    path.write_bytes(render_pdf(document))
    return path


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three days over the spring clock change, the whole hospital."""
    return _write(sample_document(days=3), tmp_path_factory.mktemp("pdf") / "short.pdf")


@pytest.fixture(scope="module")
def quarter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ninety days of the emergency department."""
    return _write(
        sample_document(days=90, department="ED"), tmp_path_factory.mktemp("pdf") / "q.pdf"
    )


def test_every_page_says_where_when_and_for_whom(quarter: Path) -> None:
    pages = _pages(quarter)
    assert len(pages) == _page_count(quarter) > 1
    for number, page in enumerate(pages, 1):
        assert f"{HOSPITAL} — Notaufnahme \N{EN DASH} Süd" in page
        assert "Daily operations" in page
        assert "2026-03-27 00:00 \N{EN DASH} 2026-06-25 00:00 (Europe/Berlin)" in page
        assert "generated 2026-06-25 06:15 for m.schneider" in page
        assert f"page {number} of {len(pages)}" in page


def test_the_first_page_shows_the_figures_and_notes(short: Path) -> None:
    document = sample_document(days=3)
    figures = {figure.key: figure.value for figure in document.figures}
    first = _pages(short)[0]
    assert "All departments · 3 days" in first
    assert f"{figures['admissions']:,}" in first
    assert f"{float(str(figures['occupancy'])) * 100:.1f} %" in first  # a rate as a percentage
    assert f"{Decimal(str(figures['revenue'])):,.2f}" in first  # money with two decimals
    assert "Mean bed occupancy" in first
    assert "Zeiten in Ortszeit (Europe/Berlin)" in first
    assert "Admissions and discharges" in first
    assert "Arrivals by hour, last day" in first


def test_tables_show_numbers_money_rates_and_missing_values(short: Path) -> None:
    text = "".join(_pages(short))
    lines = text.splitlines()
    first_day = next(line for line in lines if "Fri 2026-03-27" in line)
    assert "31,415.50" in first_day
    quiet_day = next(line for line in lines if "Sat 2026-03-28" in line)
    # No discharges that day, so no mean stay: a dash between the rate and the money.
    assert re.search(r"\s0\s+\d+\.\d %\s+\N{EN DASH}\s+[\d,]+\.\d\d$", quiet_day), quiet_day
    assert 'Ward 3 closed, "deep clean"' in text
    assert "Notaufnahme \N{EN DASH} Süd: Überlastung" in text
    # The last day by hour has 23 hours: 02:00 never happened in Berlin that night.
    hours = [line for line in lines if re.search(r"Sun 2026-03-29 \d\d:00", line)]
    assert len(hours) == 23
    assert not any("Sun 2026-03-29 02:00" in line for line in hours)


def test_an_hour_that_comes_twice_shows_its_offset(tmp_path: Path) -> None:
    autumn = sample_document(days=2, start=date(2026, 10, 24))
    text = "".join(_pages(_write(autumn, tmp_path / "autumn.pdf")))
    assert "Sun 2026-10-25 02:00 +02:00" in text
    assert "Sun 2026-10-25 02:00 +01:00" in text
    assert "Sun 2026-10-25 03:00 " in text


def test_a_long_report_loses_no_row_and_repeats_its_header(quarter: Path) -> None:
    pages = _pages(quarter)
    days = [date(2026, 3, 27) + timedelta(days=n) for n in range(90)]
    text = "".join(pages)
    for day in days:
        assert re.search(rf"{day:%a %Y-%m-%d}\s+\d+\s+\d+\s+\d+\.\d %", text), day
    holding_rows = [page for page in pages if re.search(r"\w{3} 2026-0\d-\d\d\s+\d+\s+\d", page)]
    assert len(holding_rows) >= 2
    assert all(HEADER.search(page) for page in holding_rows)


def test_a_long_series_shows_a_readable_number_of_dates(quarter: Path) -> None:
    first = _pages(quarter, "-raw")[0]  # the labels are set at a slant
    labels = re.findall(r"\b(\d\d)\s+(Mar|Apr|May|Jun)\b", first)
    assert 12 <= len(labels) <= 31, labels
    assert labels[0] == ("27", "Mar")


def test_empty_tables_say_so(tmp_path: Path) -> None:
    document = sample_document(days=1)
    empty = dataclasses.replace(
        document, tables=tuple(dataclasses.replace(t, rows=()) for t in document.tables)
    )
    text = "".join(_pages(_write(empty, tmp_path / "empty.pdf")))
    assert text.count("No rows for this period.") == 4  # two charts and two tables
    assert "Per day" in text


def test_a_table_too_wide_for_the_page_comes_in_parts(tmp_path: Path) -> None:
    wards = [Column(f"c{i}", f"W{i:02}", Kind.INTEGER) for i in range(30)]
    columns = (Column("date", "Date", Kind.DATE), *wards)
    rows: tuple[tuple[Cell, ...], ...] = tuple(
        ("2026-03-27", *(10_000 * i + r for i in range(30))) for r in range(3)
    )
    wide = dataclasses.replace(
        sample_document(days=1), tables=(Table("wide", "Beds", columns, rows),), charts=()
    )
    text = "".join(_pages(_write(wide, tmp_path / "wide.pdf")))
    assert all(f"W{i:02}" in text for i in range(30))
    assert all(f"{10_000 * i + r:,}" in text for i in range(30) for r in range(3))
    assert text.count("Fri 2026-03-27") > 3  # each part led by the date again


def test_the_first_page_as_a_picture(short: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = ARTIFACTS / "report-page-1.png"
    png.unlink(missing_ok=True)
    command = ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile"]
    subprocess.run([*command, str(short), str(png.with_suffix(""))], check=True)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (round(width / 10), round(height / 10)) == (50, 70)  # A4 at 60 dpi: 496 by 702
    assert len(data) > 20_000  # a page with figures and charts, not a blank one
