"""`livedash report …` as a hospital IT person runs it: a PDF written to a file, a clear
refusal for what cannot be generated, the list of reports, and schedules from the shell."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from livedash.cli import app
from tests.support.report_schedules import HOSPITAL, pdf_text

Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI configures logging for its process; in here that process is the test run,
    # whose output streams CliRunner swaps out and closes.
    monkeypatch.setattr("livedash.cli.configure_logging", lambda *args, **kwargs: None)


@pytest.fixture
def cli(database_path: Path, tmp_path: Path, hospital: dict[str, int]) -> Cli:
    """`livedash` on the test's SQLite hospital, its reports kept under tmp_path."""
    env = {
        "LIVEDASH_JWT_SECRET_FILE": str(tmp_path / "secret"),
        "LIVEDASH_REPORT_DIR": str(tmp_path / "archive"),
        "LIVEDASH_TIMEZONE": "Europe/Berlin",
        "LIVEDASH_HOSPITAL_NAME": HOSPITAL,
        "LIVEDASH_SMTP_HOST": "127.0.0.1",  # recipients need e-mail; nothing is sent here
        "COLUMNS": "250",  # rich wraps at the terminal's width: one line per message here
    }

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, [*args, "--db", str(database_path)], env=env)

    return invoke


def table_rows(printed: str) -> list[list[str]]:
    """The cells of each row of a table rich printed (the header left out)."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in printed.splitlines()
        if line.startswith("│")
    ]


def test_generate_writes_the_report_to_a_file(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "occupancy.pdf"
    result = cli(
        *("report", "generate", "--type", "occupancy", "--period", "yesterday"),
        *("--format", "pdf", "--out", str(out)),
    )

    assert result.exit_code == 0, result.output
    content = out.read_bytes()
    assert content.startswith(b"%PDF-")
    text = pdf_text(content, tmp_path)
    assert HOSPITAL in text
    assert "Occupancy and length of stay" in text
    said = re.search(
        r"Report (\d+) \(occupancy, (\S+)\) written to (.+): ([\d,]+) bytes", result.stderr
    )
    assert said is not None, result.stderr
    assert Path(said[3]) == out
    assert int(said[4].replace(",", "")) == len(content)
    assert f"sha256 {hashlib.sha256(content).hexdigest()}" in result.stderr

    listed = cli("report", "list")
    assert listed.exit_code == 0, listed.output
    assert table_rows(listed.stdout) == [
        [said[1], "occupancy", "hospital", said[2], "pdf", "done", said[4], "cli"]
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--period", "fortnight"), "unknown period 'fortnight'"),
        (("--period", "day:2999-01-01"), "the period starts in the future"),
        (("--from", "2026-03-10", "--to", "2026-03-01"), "must come before"),
        (("--period", "yesterday", "--department", "XRAY"), "unknown department 'XRAY'"),
        (("--period", "yesterday", "--format", "docx"), "unknown format 'docx'"),
        (("--period", "yesterday", "--type", "beds"), "unknown report type 'beds'"),
    ],
)
def test_what_cannot_be_generated_is_refused_and_writes_nothing(
    cli: Cli, tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "out" / "report.pdf"
    out.parent.mkdir()
    typed = () if "--type" in options else ("--type", "occupancy")
    result = cli("report", "generate", *typed, *options, "--out", str(out))

    assert result.exit_code == 2, result.output
    assert "Refused:" in result.stderr
    assert message in " ".join(result.stderr.split())
    assert list(out.parent.iterdir()) == []
    assert "Traceback" not in result.output


def test_a_file_that_cannot_be_written_is_explained(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "no-such-directory" / "report.pdf"
    result = cli(
        "report", "generate", "--type", "occupancy", "--period", "yesterday", "--out", str(out)
    )

    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert f"cannot write {out}: No such file or directory" in said
    assert "the report is kept as report 1 in the archive" in said
    assert not out.parent.exists()


def test_schedules_are_added_listed_paused_resumed_and_deleted(cli: Cli) -> None:
    def schedules() -> list[list[str]]:
        listed = cli("report", "schedule", "list")
        assert listed.exit_code == 0, listed.output
        return table_rows(listed.stdout)

    added = cli(
        *("report", "schedule", "add", "--name", "Morning", "--type", "occupancy"),
        *("--cron", "@daily", "--format", "csv", "--department", "CARD"),
    )
    assert added.exit_code == 0, added.output
    assert re.search(r"Schedule 1 added; next run \d{4}-\d\d-\d\d \d\d:\d\d UTC", added.stderr)
    [row] = schedules()
    assert row[:4] == ["1", "Morning", "occupancy CARD", "@daily"]
    assert row[5:] == ["active", ""]

    for action, state in (("pause", "paused"), ("resume", "active")):
        changed = cli("report", "schedule", action, "1")
        assert changed.exit_code == 0, changed.output
        assert f"Schedule 1: {action}d." in changed.stderr
        assert schedules()[0][5] == state

    deleted = cli("report", "schedule", "delete", "1")
    assert deleted.exit_code == 0, deleted.output
    assert schedules() == []
    again = cli("report", "schedule", "delete", "1")
    assert again.exit_code == 2
    assert "no report schedule 1" in again.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--cron", "61 * * * *"), "the minute field '61' is out of range"),
        (("--cron", "@daily", "--recipient", "nobody"), "recipient 'nobody' is not an active user"),
        (("--cron", "@daily", "--type", "beds"), "unknown report type 'beds'"),
        (("--cron", "@daily", "--misfire", "later"), "Not a valid schedule"),
    ],
)
def test_a_schedule_that_cannot_run_is_refused(
    cli: Cli, options: tuple[str, ...], message: str
) -> None:
    typed = () if "--type" in options else ("--type", "occupancy")
    result = cli("report", "schedule", "add", "--name", "Morning", *typed, *options)

    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    listed = cli("report", "schedule", "list")
    assert "Morning" not in listed.stdout
