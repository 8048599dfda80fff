"""A report document as bytes: JSON, CSV, or PDF (laid out by `livedash.reports.pdf`).

JSON is `ReportDocument.as_dict()`, UTF-8. CSV is one file that a spreadsheet opens as it is:
UTF-8 with a byte-order mark, `\\r\\n` line ends, blocks parted by one empty row:

    report_type,operations            metadata, one `name,value` row each: report_type, title,
    title,Daily operations            hospital, department, department_name, period_start,
    ...                               period_end, time_zone, period_label, generated_at,
    parameters,"{""days"": 3}"        generated_for, generator_version, feed_position,
                                      parameters (as JSON)
    figures
    key,title,kind,value
    admissions,Admissions,integer,214

    table,daily,Per day               then, for each table: its key and title,
    date,admissions,occupancy         its column keys,
    date,integer,rate                 their kinds,
    Date,Admissions,Bed occupancy     their titles, right above the rows,
    2026-03-27,71,0.8342              and the rows

    notes                             last, one row per note (when there are notes)
    Revenue is provisional.

A cell holds its JSON value (see `livedash.reports.document`): money as its exact string,
rates as fractions, dates and hours in ISO 8601. A missing value (None) is an empty cell, so
an empty text reads back as None. Text that a spreadsheet would take for a formula (starting
with = + - @, a tab or a carriage return) is written behind an apostrophe, as is text that
starts with one; `parse_csv` takes the apostrophe off again.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

from livedash.reports.document import Cell, Kind, ReportDocument

MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "pdf": "application/pdf",
}
EXTENSIONS: dict[str, str] = {"json": ".json", "csv": ".csv", "pdf": ".pdf"}

_FLOATS = (Kind.DECIMAL, Kind.RATE, Kind.HOURS)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
_FIGURES_HEADER = ["key", "title", "kind", "value"]


def to_json(document: ReportDocument) -> bytes:
    """The document as UTF-8 JSON, keys in `as_dict` order."""
    text = json.dumps(document.as_dict(), ensure_ascii=False, indent=2, allow_nan=False)
    return (text + "\n").encode()


def to_csv(document: ReportDocument) -> bytes:
    """The document as one CSV file (layout in the module docstring)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    period = document.period
    metadata: list[tuple[str, str | int | None]] = [
        ("report_type", document.report_type),
        ("title", document.title),
        ("hospital", document.hospital),
        ("department", document.department),
        ("department_name", document.department_name),
        ("period_start", period.start.isoformat()),
        ("period_end", period.end.isoformat()),
        ("time_zone", period.zone),
        ("period_label", period.label),
        ("generated_at", document.generated_at.isoformat()),
        ("generated_for", document.generated_for),
        ("generator_version", document.generator_version),
        ("feed_position", document.feed_position),
        ("parameters", json.dumps(document.parameters, ensure_ascii=False, sort_keys=True)),
    ]
    writer.writerows(
        [name, _text(value) if isinstance(value, str) else value] for name, value in metadata
    )
    writer.writerow([])
    writer.writerow(["figures"])
    writer.writerow(_FIGURES_HEADER)
    for figure in document.figures:
        writer.writerow(
            [
                _text(figure.key),
                _text(figure.title),
                figure.kind.value,
                _cell(figure.kind, figure.value),
            ]
        )
    for table in document.tables:
        writer.writerow([])
        writer.writerow(["table", _text(table.key), _text(table.title)])
        writer.writerow([_text(column.key) for column in table.columns])
        writer.writerow([column.kind.value for column in table.columns])
        writer.writerow([_text(column.title) for column in table.columns])
        kinds = [column.kind for column in table.columns]
        writer.writerows(
            [_cell(kind, value) for kind, value in zip(kinds, row, strict=True)]
            for row in table.rows
        )
    if document.notes:
        writer.writerow([])
        writer.writerow(["notes"])
        writer.writerows([_text(note)] for note in document.notes)
    return out.getvalue().encode("utf-8-sig")


def parse_csv(data: bytes) -> dict[str, Any]:
    """A CSV made by `to_csv` as the JSON's structure (everything but the charts)."""
    rows = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    blocks = list(_blocks(rows))
    if not blocks or any(len(row) != 2 for row in blocks[0]):
        raise ValueError("not a livedash report CSV: no metadata block")
    meta = {row[0]: _untext(row[1]) for row in blocks[0]}
    try:
        result: dict[str, Any] = {
            "report_type": meta["report_type"],
            "title": meta["title"],
            "hospital": meta["hospital"],
            "department": meta["department"] or None,
            "department_name": meta["department_name"] or None,
            "period": {
                "start": meta["period_start"],
                "end": meta["period_end"],
                "time_zone": meta["time_zone"],
                "label": meta["period_label"],
            },
            "generated_at": meta["generated_at"],
            "generated_for": meta["generated_for"],
            "generator_version": meta["generator_version"],
            "feed_position": int(meta["feed_position"]),
            "parameters": json.loads(meta["parameters"]),
            "figures": [],
            "tables": [],
            "notes": [],
        }
    except KeyError as missing:
        raise ValueError(f"not a livedash report CSV: no {missing} in its metadata") from None
    for block in blocks[1:]:
        head, body = block[0], block[1:]
        if head == ["figures"] and body[:1] == [_FIGURES_HEADER]:
            result["figures"] = [_figure(row) for row in body[1:]]
        elif head[0] == "table" and len(head) == 3 and len(body) >= 3:
            result["tables"].append(_table(head, body))
        elif head == ["notes"]:
            result["notes"] = [_untext(row[0]) for row in body]
        else:
            raise ValueError(f"not a livedash report CSV: unknown block {head[:3]!r}")
    return result


def to_pdf(document: ReportDocument) -> bytes:
    """The document as a PDF (reportlab)."""
    # Imported when first rendered: reportlab and Pillow are 8 MB of every instance's memory,
    # and most instances never render a PDF.
    from livedash.reports.pdf import render_pdf

    return render_pdf(document)


_RENDERERS: dict[str, Callable[[ReportDocument], bytes]] = {
    "json": to_json,
    "csv": to_csv,
    "pdf": to_pdf,
}


def render(document: ReportDocument, fmt: str) -> bytes:
    """The document in `fmt` ("json", "csv" or "pdf"); blocking: run it in a worker thread."""
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown report format {fmt!r}; one of {sorted(_RENDERERS)}") from None
    return renderer(document)


def _text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _untext(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


def _cell(kind: Kind, value: Cell) -> Cell:
    return _text(value) if kind is Kind.TEXT and isinstance(value, str) else value


def _value(kind: Kind, cell: str) -> Cell:
    if cell == "":
        return None
    if kind is Kind.TEXT:
        return _untext(cell)
    if kind is Kind.INTEGER:
        return int(cell)
    if kind in _FLOATS:
        return float(cell)
    return cell  # money, date and hour are exact strings already


def _figure(row: list[str]) -> dict[str, Any]:
    key, title, kind, value = row
    return {
        "key": _untext(key),
        "title": _untext(title),
        "kind": kind,
        "value": _value(Kind(kind), value),
    }


def _table(head: list[str], body: list[list[str]]) -> dict[str, Any]:
    keys, kinds, titles, *rows = body
    columns = [
        {"key": _untext(key), "title": _untext(title), "kind": kind}
        for key, kind, title in zip(keys, kinds, titles, strict=True)
    ]
    parsed = [Kind(kind) for kind in kinds]
    return {
        "key": _untext(head[1]),
        "title": _untext(head[2]),
        "columns": columns,
        "rows": [[_value(k, cell) for k, cell in zip(parsed, row, strict=True)] for row in rows],
    }


def _blocks(rows: Iterator[list[str]]) -> Iterator[list[list[str]]]:
    """The runs of rows between empty rows (a written row always has at least one field)."""
    block: list[list[str]] = []
    for row in rows:
        if row:
            block.append(row)
        elif block:
            yield block
            block = []
    if block:
        yield block
