"""A report as JSON and as CSV: what a spreadsheet opens, and the same data parsed back."""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livedash.reports.document import Cell, Column, Kind, ReportDocument, Table
from livedash.reports.formats import (
    EXTENSIONS,
    MEDIA_TYPES,
    parse_csv,
    render,
    to_csv,
    to_json,
)
from tests.support.reports import HOSPITAL, REMARKS, sample_document


def _rows(data: bytes) -> list[list[str]]:
    """The CSV as a spreadsheet reads it."""
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def _without_charts(document: ReportDocument) -> dict[str, Any]:
    expected: dict[str, Any] = json.loads(to_json(document))
    del expected["charts"]
    return expected


def test_json_is_the_document_in_utf8() -> None:
    document = sample_document(days=3, department="ED")
    data = to_json(document)
    assert json.loads(data) == document.as_dict()
    assert "Notaufnahme \N{EN DASH} Süd" in data.decode("utf-8")
    assert list(json.loads(data))[:3] == ["report_type", "title", "hospital"]
    assert to_json(document) == data


def test_csv_is_utf8_with_a_bom_and_crlf_lines() -> None:
    data = to_csv(sample_document(department="ED"))
    assert data.startswith(codecs.BOM_UTF8)
    first, second = data[3:].split(b"\r\n")[:2]
    assert first == b"report_type,operations"
    assert second == b"title,Daily operations"
    assert "Notaufnahme \N{EN DASH} Süd".encode() in data


def test_csv_opens_as_blocks_with_titles_right_above_the_rows() -> None:
    document = sample_document(days=3)
    rows = _rows(to_csv(document))
    assert ["hospital", HOSPITAL] in rows
    assert ["time_zone", "Europe/Berlin"] in rows
    assert ["period_start", "2026-03-27T00:00:00+01:00"] in rows
    assert ["period_end", "2026-03-30T00:00:00+02:00"] in rows
    assert ["generated_for", "m.schneider"] in rows
    assert ["department", ""] in rows
    figures = rows.index(["figures"])
    assert rows[figures - 1] == []
    assert rows[figures + 1] == ["key", "title", "kind", "value"]
    assert rows[figures + 2] == [
        "admissions",
        "Admissions",
        "integer",
        str(document.figures[0].value),
    ]
    daily = rows.index(["table", "daily", "Per day"])
    assert rows[daily + 1][:4] == ["date", "admissions", "discharges", "occupancy"]
    assert rows[daily + 2][:4] == ["date", "integer", "integer", "rate"]
    assert rows[daily + 3][:4] == ["Date", "Admissions", "Discharges", "Bed occupancy"]
    first_day = rows[daily + 4]
    assert first_day[0] == "2026-03-27"
    assert first_day[5] == "31415.50"  # money: the exact string, never a float
    assert rows[daily + 7] == []  # three days, then the next block
    assert rows[-3:-2] == [["notes"]]


def test_csv_parsed_back_is_the_json() -> None:
    for document in (
        sample_document(days=1),
        sample_document(days=3, department="ED"),
        sample_document(days=90, department="ICU"),
        sample_document(days=2, notes=False),
    ):
        assert parse_csv(to_csv(document)) == _without_charts(document)


def test_money_and_missing_values_read_back_exactly() -> None:
    document = sample_document(days=3)
    daily = next(t for t in parse_csv(to_csv(document))["tables"] if t["key"] == "daily")
    assert [row[5] for row in daily["rows"]] == [row[5] for row in document.table("daily").rows]
    assert daily["rows"][0][5] == "31415.50"
    assert daily["rows"][1][4] is None  # a day without discharges has no mean stay
    assert daily["rows"][0][6] is None
    revenue = parse_csv(to_csv(document))["figures"][-1]
    assert revenue["value"] == str(
        sum(Decimal(str(row[5])) for row in document.table("daily").rows)
    )


def test_commas_quotes_and_newlines_in_text_survive() -> None:
    document = sample_document(days=3)
    rows = _rows(to_csv(document))
    assert [REMARKS[1]] in [row[-1:] for row in rows]  # one cell, as a spreadsheet shows it
    daily = parse_csv(to_csv(document))["tables"][0]
    assert daily["rows"][1][6] == 'Ward 3 closed, "deep clean"\nreopened 14:00'


def test_text_a_spreadsheet_would_run_as_a_formula_is_defused() -> None:
    texts = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "'quoted", "plain"]
    table = Table(
        "t", "=cmd", (Column("note", "@title", Kind.TEXT),), tuple((text,) for text in texts)
    )
    document = dataclasses.replace(
        sample_document(days=1), hospital="=evil()", tables=(table,), charts=()
    )
    data = to_csv(document)
    rows = _rows(data)
    assert ["hospital", "'=evil()"] in rows
    at = rows.index(["table", "t", "'=cmd"])
    assert rows[at + 4 : at + 11] == [
        ['\'=HYPERLINK("http://x")'],
        ["'+1"],
        ["'-2"],
        ["'@SUM(A1)"],
        ["''quoted"],
        ["plain"],
        [],
    ]
    assert parse_csv(data) == _without_charts(document)


def test_render_picks_the_format() -> None:
    document = sample_document(days=1)
    assert set(MEDIA_TYPES) == set(EXTENSIONS) == {"json", "csv", "pdf"}
    assert render(document, "json") == to_json(document)
    assert render(document, "csv") == to_csv(document)
    assert render(document, "pdf").startswith(b"%PDF-")
    assert MEDIA_TYPES["csv"] == "text/csv; charset=utf-8"
    with pytest.raises(ValueError, match="unknown report format 'xlsx'"):
        render(document, "xlsx")


def test_parse_csv_refuses_what_it_did_not_write() -> None:
    with pytest.raises(ValueError, match="not a livedash report CSV"):
        parse_csv(b"a,b,c\r\n1,2,3\r\n")


_CELLS: dict[Kind, st.SearchStrategy[Cell]] = {
    # An empty text is written as an empty cell, which reads back as None (module docstring).
    Kind.TEXT: st.text(min_size=1),
    Kind.INTEGER: st.integers(),
    Kind.DECIMAL: st.floats(allow_nan=False, allow_infinity=False),
    Kind.RATE: st.floats(0, 1),
    Kind.MONEY: st.integers(-(10**12), 10**12).map(lambda c: str(Decimal(c).scaleb(-2))),
    Kind.DATE: st.dates().map(lambda d: d.isoformat()),
    Kind.HOUR: st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    Kind.HOURS: st.floats(0, 10_000).map(lambda h: round(h, 2)),
}
_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)


@st.composite
def _tables(draw: st.DrawFn) -> Table:
    kinds = draw(st.lists(st.sampled_from(list(Kind)), min_size=1, max_size=6))
    columns = tuple(Column(draw(_KEYS), draw(st.text()), kind) for kind in kinds)
    rows = draw(st.lists(st.tuples(*(st.none() | _CELLS[kind] for kind in kinds)), max_size=8))
    return Table(draw(_KEYS), draw(st.text()), columns, tuple(rows))


@settings(max_examples=150, deadline=None)
@given(
    tables=st.lists(_tables(), max_size=3),
    hospital=st.text(),
    department=st.none() | st.text(min_size=1),
    notes=st.lists(st.text(), max_size=3),
)
def test_any_tables_read_back_as_their_json(
    tables: list[Table], hospital: str, department: str | None, notes: list[str]
) -> None:
    document = dataclasses.replace(
        sample_document(days=1),
        hospital=hospital,
        department=department,
        department_name=department,
        tables=tuple(tables),
        notes=tuple(notes),
    )
    assert parse_csv(to_csv(document)) == _without_charts(document)
