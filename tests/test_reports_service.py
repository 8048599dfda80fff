"""Generating and keeping reports: where each comes from and whether it still holds, what a
full disk leaves behind, storage in the database, retention, refused requests, a long PDF,
and CSV that reads back as its JSON."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import subprocess
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.exc import OperationalError

import livedash.reports.archive
import livedash.reports.service
from livedash.errors import InvalidPayload, RateLimited, UnknownReport
from livedash.metrics.clock import ManualClock
from livedash.reports.archive import ReportInfo
from livedash.reports.document import ReportPeriod
from livedash.reports.formats import parse_csv
from livedash.reports.generation import GENERATOR_VERSION, ReportRequest
from livedash.reports.periods import resolve_period
from livedash.reports.service import AT_ONCE, QUEUED_PER_USER
from livedash.settings import Settings
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import services_of
from tests.support.report_oracle import REPORT_TYPES, feed_applied, patient_screen
from tests.support.writers import Write, register_patient

NOW = datetime(2026, 11, 25, 13, 30, tzinfo=UTC)  # a Wednesday, 14:30 in Berlin
ZONE = ZoneInfo("Europe/Berlin")
WEEK = (date(2026, 11, 16), date(2026, 11, 23))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    return tmp_path / "reports"


@pytest.fixture
async def reporting(
    serve: Serve, settings: Settings, report_dir: Path, clock: ManualClock
) -> LiveServer:
    """The service on a clock that stands at NOW, its reports as files under `report_dir`."""
    return await serve(settings.model_copy(update={"report_dir": report_dir}), clock)


def _local(day: date, hour: int = 0, minute: int = 0) -> str:
    """A local wall-clock time as the tables store it (naive UTC)."""
    moment = datetime.combine(day, time(hour, minute), ZONE).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


async def _stay(write: Write, department: int, admitted: str, discharged: str | None) -> int:
    patient = await register_patient(write, department, "a patient")
    return await write(
        "INSERT INTO admissions (patient_id, department_id, admitted_at, discharged_at) "
        "VALUES (?, ?, ?, ?)",
        (patient, department, admitted, discharged),
    )


async def _scoped(
    server: LiveServer,
    report_type: str,
    department: str | None,
    fmt: str = "json",
    period: tuple[date, date] = WEEK,
) -> ReportRequest:
    reports = services_of(server).reports
    first, stop = period
    return ReportRequest(
        report_type,
        await reports.scope(department),
        resolve_period(None, start=first, end=stop, zone=ZONE, now=NOW),
        fmt,
        "m.schneider",
    )


def _files(directory: Path) -> list[str]:
    """The names of the files in `directory` (none if it was never made)."""
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


async def _done(server: LiveServer, request: ReportRequest) -> tuple[ReportInfo, bytes]:
    reports = services_of(server).reports
    info = await reports.generate(request)
    assert info.status == "done", info.error
    return info, await reports.archive.content(info.id)


@pytest.mark.both_backends
async def test_a_report_says_where_it_comes_from_and_whether_it_still_holds(
    reporting: LiveServer,
    connect: Connect,
    token: Any,
    hospital: dict[str, int],
    writer: Write,
    database_url: str,
) -> None:
    screen = await patient_screen(connect, reporting, token)
    card = hospital["CARD"]
    monday, tuesday = WEEK[0], WEEK[0] + timedelta(days=1)
    changing = await _stay(writer, card, _local(monday, 9), _local(tuesday, 11, 30))
    await _stay(writer, card, _local(tuesday, 8), None)
    await _stay(writer, card, _local(monday, 0), _local(monday, 20))
    await register_patient(writer, card, "the last write")
    await feed_applied(database_url, screen)
    reports = services_of(reporting).reports

    info, content = await _done(reporting, await _scoped(reporting, "admissions", "CARD"))
    document = json.loads(content)
    assert info.generator_version == document["generator_version"] == GENERATOR_VERSION
    assert info.feed_position == document["feed_position"] > 0
    assert info.requested_by == document["generated_for"] == "m.schneider"
    assert info.parameters == document["parameters"]
    assert info.parameters == {
        "report_type": "admissions",
        "department": "CARD",
        "start": "2026-11-16T00:00:00+01:00",
        "end": "2026-11-23T00:00:00+01:00",
        "time_zone": "Europe/Berlin",
        "label": "2026-11-16 to 2026-11-22",
        "format": "json",
    }
    assert [f["value"] for f in document["figures"] if f["key"] == "admissions"] == [3]

    unchanged = await reports.verify(info)
    assert (unchanged.same, unchanged.reason) == (True, "the same figures")
    assert unchanged.feed_position_then == info.feed_position

    # Activity outside the report's period moves the feed, not the figures.
    await _stay(writer, card, _local(date(2026, 11, 24), 10), None)
    await register_patient(writer, card, "the last write")
    await feed_applied(database_url, screen)
    elsewhere = await reports.verify(info)
    assert (elsewhere.same, elsewhere.reason) == (True, "the same figures")
    assert elsewhere.feed_position_now > info.feed_position  # type: ignore[operator]

    # A stay in the period corrected afterwards: the report no longer holds, and says why.
    await writer(
        "UPDATE admissions SET admitted_at = ? WHERE id = ?", (_local(monday, 10), changing)
    )
    await writer("UPDATE admissions SET discharged_at = NULL WHERE id = ?", (changing,))
    await register_patient(writer, card, "the last write")
    await feed_applied(database_url, screen)
    changed = await reports.verify(info)
    assert not changed.same
    assert changed.feed_position_then == info.feed_position
    assert changed.feed_position_now > elsewhere.feed_position_now
    assert changed.reason == (
        f"the data changed since: computed at feed position {info.feed_position}, "
        f"now {changed.feed_position_now}"
    )

    # A report of another generator version is told apart from changed data.
    await writer(
        "UPDATE reports SET generator_version = 'livedash-reports/0' WHERE id = ?", (info.id,)
    )
    older = await reports.verify(await reports.archive.get(info.id))
    assert not older.same
    assert older.reason.startswith(f"generated by livedash-reports/0, now {GENERATOR_VERSION}")


class _FillingDisk:
    """A file on a disk with room for half of what is written to it."""

    def __init__(self, path: str, file: Any) -> None:
        self.path = path
        self._file = file
        self.filled: list[int] = []

    def __enter__(self) -> _FillingDisk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()

    def write(self, data: bytes) -> int:
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        self.filled.append(os.path.getsize(self.path))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


async def test_a_full_disk_fails_the_report_and_leaves_no_file(
    reporting: LiveServer, report_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[_FillingDisk] = []

    def full(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by its wrapper
        if "w" not in mode:
            return file
        opened.append(_FillingDisk(str(path), file))
        return opened[-1]

    monkeypatch.setattr(livedash.reports.archive, "open", full, raising=False)
    reports = services_of(reporting).reports
    info = await reports.generate(await _scoped(reporting, "occupancy", None, "pdf"))
    assert info.status == "failed"
    assert info.error == "the disk is full: no space left to write the report"
    assert (info.size, info.sha256, info.finished_at) == (None, None, NOW)
    assert [disk.filled[0] > 0 for disk in opened] == [True]  # half a PDF was on the disk...
    assert _files(report_dir) == []  # ...and is gone, `.partial` and all
    with pytest.raises(UnknownReport):
        await reports.archive.content(info.id)
    assert [report.status for report in await reports.archive.listed()] == ["failed"]

    monkeypatch.undo()  # room again: the same request now succeeds
    again, content = await _done(reporting, await _scoped(reporting, "occupancy", None, "pdf"))
    assert content.startswith(b"%PDF")
    assert _files(report_dir) == [f"report-{again.id}.pdf"]


async def test_a_report_the_database_cannot_mark_done_leaves_no_file(
    reporting: LiveServer, report_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = services_of(reporting).reports
    mark = reports.archive._set

    async def refusing(ident: int, **values: Any) -> None:
        if values.get("status") == "done":
            raise OperationalError("UPDATE reports", {}, Exception("disk I/O error"))
        await mark(ident, **values)

    monkeypatch.setattr(reports.archive, "_set", refusing)
    info = await reports.generate(await _scoped(reporting, "revenue", None, "csv"))
    assert info.status == "failed"
    assert info.error == "generation failed (OperationalError); see the service's log"
    assert _files(report_dir) == []


async def test_reports_kept_in_the_database_leave_no_file(
    serve: Serve, settings: Settings, report_dir: Path, clock: ManualClock
) -> None:
    server = await serve(
        settings.model_copy(update={"report_dir": report_dir, "report_storage": "database"}),
        clock,
    )
    info, content = await _done(server, await _scoped(server, "appointments", None, "csv"))
    assert content.startswith("\N{BYTE ORDER MARK}report_type,appointments".encode())
    assert info.size == len(content)
    assert parse_csv(content)["report_type"] == "appointments"
    assert _files(report_dir) == []


async def test_old_reports_are_removed_by_their_type_s_retention(
    serve: Serve, settings: Settings, report_dir: Path, clock: ManualClock
) -> None:
    server = await serve(
        settings.model_copy(
            update={
                "report_dir": report_dir,
                "report_retention_days": {"default": 30, "alerts": 7},
            }
        ),
        clock,
    )
    reports = services_of(server).reports
    made: dict[str, ReportInfo] = {}
    for name, report_type, days in (
        ("alerts, day 0", "alerts", 0),
        ("revenue, day 0", "revenue", 0),
        ("alerts, day 6", "alerts", 6),
        ("revenue, day 20", "revenue", 20),
    ):
        clock.set(NOW + timedelta(days=days))
        made[name], _ = await _done(server, await _scoped(server, report_type, None))

    def kept(*names: str) -> set[str]:
        return {f"report-{made[name].id}.json" for name in names}

    assert await reports.archive.expire(NOW + timedelta(days=7)) == 0  # exactly 7 days: kept
    assert set(_files(report_dir)) == kept(*made)
    assert await reports.archive.expire(NOW + timedelta(days=7, seconds=1)) == 1
    assert set(_files(report_dir)) == kept("revenue, day 0", "alerts, day 6", "revenue, day 20")
    assert await reports.archive.expire(NOW + timedelta(days=31)) == 2
    assert set(_files(report_dir)) == kept("revenue, day 20")
    for name in ("alerts, day 0", "revenue, day 0", "alerts, day 6"):
        with pytest.raises(UnknownReport):
            await reports.archive.get(made[name].id)
    assert [r.id for r in await reports.archive.listed()] == [made["revenue, day 20"].id]


async def test_bad_requests_are_refused_with_a_clear_reason(reporting: LiveServer) -> None:
    reports = services_of(reporting).reports
    week = resolve_period(None, start=WEEK[0], end=WEEK[1], zone=ZONE, now=NOW)
    hospital = await reports.scope(None)

    def refused(error: pytest.ExceptionInfo[InvalidPayload], *phrases: str) -> None:
        assert error.value.code == "invalid_payload"
        for phrase in phrases:
            assert phrase in error.value.message, error.value.message

    with pytest.raises(InvalidPayload) as unknown_type:
        ReportRequest("payroll", hospital, week, "json", "m.schneider")
    refused(unknown_type, "unknown report type 'payroll'", "occupancy, admissions, emergency")
    with pytest.raises(InvalidPayload) as unknown_format:
        ReportRequest("revenue", hospital, week, "xlsx", "m.schneider")
    refused(unknown_format, "unknown format 'xlsx'", "json, csv, pdf")
    with pytest.raises(InvalidPayload) as unknown_department:
        await reports.scope("XRAY")
    refused(unknown_department, "unknown department 'XRAY'")

    with pytest.raises(InvalidPayload) as backwards:
        resolve_period(None, start=WEEK[1], end=WEEK[0], zone=ZONE, now=NOW)
    refused(backwards, "from (2026-11-23 00:00 CET) must come before to (2026-11-16 00:00 CET)")
    with pytest.raises(InvalidPayload) as empty:
        resolve_period(None, start=WEEK[0], end=WEEK[0], zone=ZONE, now=NOW)
    refused(empty, "must come before")
    with pytest.raises(InvalidPayload) as too_long:
        resolve_period(None, start=date(2025, 9, 1), end=WEEK[0], zone=ZONE, now=NOW)
    refused(too_long, "a report covers at most 400 days")

    # A period built by other code than `resolve_period` is checked all the same.
    backwards_period = ReportPeriod(week.end, week.start, week.zone, "backwards")
    with pytest.raises(InvalidPayload) as built_backwards:
        ReportRequest("revenue", hospital, backwards_period, "json", "m.schneider")
    refused(built_backwards, "must end after it starts")
    two_years = ReportPeriod(week.start - timedelta(days=730), week.end, week.zone, "long")
    with pytest.raises(InvalidPayload) as built_too_long:
        ReportRequest("revenue", hospital, two_years, "json", "m.schneider")
    refused(built_too_long, "a report covers at most 400 days")
    assert await reports.archive.listed() == []  # nothing was queued for any of them


def _pdf_text(pdf: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout


def _page_count(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True)
    found = re.search(r"^Pages:\s+(\d+)$", info.stdout, re.MULTILINE)
    assert found is not None
    return int(found[1])


async def test_a_90_day_department_pdf_loses_no_day(
    reporting: LiveServer,
    connect: Connect,
    token: Any,
    hospital: dict[str, int],
    writer: Write,
    database_url: str,
    tmp_path: Path,
) -> None:
    screen = await patient_screen(connect, reporting, token)
    first = date(2026, 8, 3)  # a quarter that takes in the autumn clock change
    days = [first + timedelta(days=n) for n in range(90)]
    for n, day in enumerate(days):
        for admission in range(n % 4):
            discharged = _local(day + timedelta(days=1), 10) if admission % 2 else None
            await _stay(writer, hospital["CARD"], _local(day, 8 + admission), discharged)
    await register_patient(writer, hospital["CARD"], "the last write")
    await feed_applied(database_url, screen)

    period = (first, days[-1] + timedelta(days=1))
    _, content = await _done(
        reporting, await _scoped(reporting, "admissions", "CARD", "pdf", period)
    )
    _, data = await _done(reporting, await _scoped(reporting, "admissions", "CARD", "json", period))
    pdf = tmp_path / "quarter.pdf"
    pdf.write_bytes(content)
    assert _page_count(pdf) > 1
    text = _pdf_text(pdf)
    (rows,) = [t["rows"] for t in json.loads(data)["tables"] if t["key"] == "by_day"]
    assert [row[0] for row in rows] == [day.isoformat() for day in days]
    assert sum(row[1] for row in rows) == sum(n % 4 for n in range(90))
    found = []
    for day, admitted, discharged, net in rows:
        shown = date.fromisoformat(day)
        line = rf"{shown:%a %Y-%m-%d}\s+{admitted}\s+{discharged}\s+{re.escape(f'{net:,}')}\b"
        match = re.search(line, text)
        assert match, (day, admitted, discharged, net)
        found.append(match.start())
    assert found == sorted(found)  # in the order of the days


async def test_every_report_as_csv_reads_back_as_its_json_and_prints_as_a_pdf(
    reporting: LiveServer,
    connect: Connect,
    token: Any,
    hospital: dict[str, int],
    writer: Write,
    database_url: str,
    tmp_path: Path,
) -> None:
    screen = await patient_screen(connect, reporting, token)
    # A name a spreadsheet would take for a formula, with a comma and quotes in it.
    await writer("INSERT INTO departments (code, name) VALUES ('NEURO', '-Neuro, \"Nord\"')")
    await _stay(writer, hospital["ED"], _local(WEEK[0], 9), _local(WEEK[0], 17, 45))
    await register_patient(writer, hospital["ED"], "the last write")
    await feed_applied(database_url, screen)
    for report_type in REPORT_TYPES:
        _, csv = await _done(reporting, await _scoped(reporting, report_type, None, "csv"))
        _, data = await _done(reporting, await _scoped(reporting, report_type, None, "json"))
        document = json.loads(data)
        del document["charts"]
        document["parameters"]["format"] = "csv"  # the one thing asked differently
        assert parse_csv(csv) == document, report_type
        if report_type == "admissions":
            assert b'\r\n"\'-Neuro, ""Nord""",0,0,0\r\n' in csv

        _, content = await _done(reporting, await _scoped(reporting, report_type, "ED", "pdf"))
        pdf = tmp_path / f"{report_type}.pdf"
        pdf.write_bytes(content)
        text = _pdf_text(pdf)
        assert document["title"] in text
        assert "2026-11-16 00:00 \N{EN DASH} 2026-11-23 00:00 (Europe/Berlin)" in text
        assert "for m.schneider" in text


async def test_a_user_s_burst_of_requests_waits_its_turn_and_a_fifth_is_refused(
    reporting: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = services_of(reporting).reports
    computing = 0
    full, release = asyncio.Event(), asyncio.Event()
    real_build = livedash.reports.service.build_document

    async def slow_build(*args: Any, **kwargs: Any) -> Any:
        nonlocal computing
        computing += 1
        if computing == AT_ONCE:
            full.set()
        await release.wait()
        return await real_build(*args, **kwargs)

    monkeypatch.setattr(livedash.reports.service, "build_document", slow_build)
    request = await _scoped(reporting, "revenue", None)
    queued = [await reports.submit(request) for _ in range(QUEUED_PER_USER)]
    with pytest.raises(RateLimited, match="still being generated"):
        await reports.submit(request)
    other = await reports.submit(replace(request, requested_by="k.weber"))  # not their queue
    await full.wait()
    assert computing == AT_ONCE  # the rest wait for a turn, queued
    assert {(await reports.archive.get(info.id)).status for info in queued} == {
        "running",
        "queued",
    }
    release.set()
    await reports.settled()
    for info in [*queued, other]:
        assert (await reports.archive.get(info.id)).status == "done"
