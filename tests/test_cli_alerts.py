"""`livedash alerts …` as an operator on call runs it: the open alerts as a table, and silences
that the running service (its REST API) then shows, under the operator's name."""

from __future__ import annotations

import asyncio
import getpass
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from livedash.cli import app
from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.alerting import bearer
from tests.support.live import LiveServer
from tests.support.writers import Write

NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI configures logging for its process; in here that process is the test run,
    # whose output streams CliRunner swaps out and closes.
    monkeypatch.setattr("livedash.cli.configure_logging", lambda *args, **kwargs: None)


async def livedash(settings: Settings, *args: str) -> Result:
    """`livedash ARGS` on the test's database and rules (in a thread: it runs its own loop)."""
    environment = {
        "LIVEDASH_DATABASE_URL": settings.database_url,
        "LIVEDASH_ALERT_RULES_FILE": str(settings.alert_rules_file),
        "LIVEDASH_TIMEZONE": settings.timezone,
        "LIVEDASH_REDIS_URL": None,
        "COLUMNS": "250",  # a table row on one line
    }
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=environment)


def rows(result: Result) -> dict[str, list[str]]:
    """The table's rows by their first cell (the id)."""
    found: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) > 1 and cells[0].isdigit():
            found[cells[0]] = cells
    return found


async def _alert(
    writer: Write,
    department: int | None,
    severity: str,
    *,
    status: str = "active",
    rule: str = "beds-busy",
    minutes_ago: int = 10,
    acknowledged_by: str | None = None,
) -> str:
    raised = (NOW - timedelta(minutes=minutes_ago)).replace(tzinfo=None)
    ident = await writer(
        "INSERT INTO alerts (department_id, severity, status, title, raised_at, rule, value, "
        "threshold, acknowledged_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            department,
            severity,
            status,
            f"{severity} {rule}",
            raised.isoformat(sep=" ", timespec="microseconds"),
            rule,
            95.0,
            90.0,
            acknowledged_by,
        ),
    )
    return str(ident)


@pytest.mark.both_backends
async def test_the_open_alerts_as_a_table_filtered_by_department_and_severity(
    settings: Settings, hospital: dict[str, int], writer: Write
) -> None:
    ed = await _alert(writer, hospital["ED"], "critical", minutes_ago=5)
    card = await _alert(
        writer, hospital["CARD"], "high", status="acknowledged", acknowledged_by="ann"
    )
    whole = await _alert(writer, None, "medium", rule="revenue-low", minutes_ago=30)
    done = await _alert(writer, hospital["ED"], "low", status="resolved", minutes_ago=60)

    listed = await livedash(settings, "alerts", "list")
    assert listed.exit_code == 0, listed.output
    table = rows(listed)
    assert list(table) == sorted([ed, card, whole], key=int, reverse=True)  # newest first
    raised = (NOW - timedelta(minutes=5)).astimezone(settings.zone)
    assert table[ed] == [
        ed,
        "critical",
        "ED",
        "beds-busy",
        "critical beds-busy",
        "95 / 90",
        "active",
        f"{raised:%Y-%m-%d %H:%M}",  # in the hospital's time zone
    ]
    assert table[card][6] == "acknowledged by ann"
    assert table[whole][2] == "hospital"
    assert "raised (Europe/Berlin)" in listed.stdout

    assert list(rows(await livedash(settings, "alerts", "list", "-d", "ED"))) == [ed]
    severe = await livedash(settings, "alerts", "list", "-s", "critical", "-s", "medium")
    assert set(rows(severe)) == {ed, whole}
    assert list(rows(await livedash(settings, "alerts", "list", "-d", "hospital"))) == [whole]
    resolved = await livedash(settings, "alerts", "list", "--status", "resolved")
    assert list(rows(resolved)) == [done]
    none = await livedash(settings, "alerts", "list", "-d", "CARD", "-s", "low")
    assert none.exit_code == 0
    assert "No alerts match." in none.stderr
    typo = await livedash(settings, "alerts", "list", "-d", "EDD")
    assert typo.exit_code == 2
    assert "'EDD' is not a department of this hospital" in typo.stderr
    assert "CARD, ED" in typo.stderr


@pytest.mark.both_backends
async def test_a_silence_made_from_the_shell_is_the_services_under_the_operators_name(
    settings: Settings, hospital: dict[str, int], writer: Write, server: LiveServer, token: Any
) -> None:
    await _alert(writer, hospital["ED"], "high")
    made = await livedash(
        settings,
        *("alerts", "silence", "--rule", "beds-busy", "-d", "ED", "--for", "2h"),
        *("--reason", "ward refit", "--by", "it:jo"),
    )
    assert made.exit_code == 0, made.output
    assert "(rule beds-busy, department ED)" in made.stderr
    assert "by it:jo" in made.stderr
    admin = bearer(token(Role.SUPER_ADMIN))
    async with httpx.AsyncClient(base_url=server.url) as http:
        listed = (await http.get("/api/alerts/silences", headers=admin)).json()["items"]
        [silence] = listed
        assert (silence["rule"], silence["department"], silence["severity"]) == (
            "beds-busy",
            "ED",
            None,
        )
        assert (silence["created_by"], silence["comment"]) == ("it:jo", "ward refit")
        ends = datetime.fromisoformat(silence["ends_at"])
        assert timedelta(hours=2) - (ends - NOW) < timedelta(minutes=5)

        shown = await livedash(settings, "alerts", "silences")
        assert shown.exit_code == 0
        line = rows(shown)[str(silence["id"])]
        assert line[1:2] + line[4:] == ["rule beds-busy, department ED", "it:jo", "ward refit"]

        by_default = await livedash(
            settings, "alerts", "silence", "-s", "low", "--for", "30m", "--reason", "noisy"
        )
        assert by_default.exit_code == 0, by_default.output
        assert f"by cli:{getpass.getuser()}" in by_default.stderr

        ended = await livedash(settings, "alerts", "unsilence", str(silence["id"]), "--by", "it:jo")
        assert ended.exit_code == 0, ended.output
        assert f"Silence {silence['id']} ended by it:jo." in ended.stderr
        left = (await http.get("/api/alerts/silences", headers=admin)).json()["items"]
        assert [s["severity"] for s in left] == ["low"]
    gone = await livedash(settings, "alerts", "unsilence", "9999")
    assert gone.exit_code == 2
    assert "no silence 9999" in gone.stderr


async def test_bad_silences_are_refused_and_change_nothing(
    settings: Settings, hospital: dict[str, int], writer: Write, database_path: Path
) -> None:
    await _alert(writer, hospital["ED"], "high")
    cases = {
        ("--rule", "beds-busy", "--for", "5x"): "is not a duration",
        ("--rule", "beds-busy", "--for", "0m"): "longer than 0",
        ("--for", "1h"): "at least one matcher",
        ("--rule", "beds-bussy", "--for", "1h"): "no rule in force and no alert is called",
        ("-d", "NOPE", "--for", "1h"): "'NOPE' is not a department of this hospital",
        ("-d", "ED", "--for", "40d"): "at most 31 days",
    }
    for args, words in cases.items():
        refused = await livedash(settings, "alerts", "silence", *args, "--reason", "test")
        assert refused.exit_code == 2, (args, refused.output)
        assert words in " ".join(refused.output.split()), (args, refused.output)
    blank = await livedash(
        settings, "alerts", "silence", "-d", "ED", "--for", "1h", "--reason", " "
    )
    assert blank.exit_code == 2
    assert "give a reason" in " ".join(blank.output.split())
    with sqlite3.connect(database_path) as connection:
        assert connection.execute("SELECT count(*) FROM alert_silences").fetchone() == (0,)
