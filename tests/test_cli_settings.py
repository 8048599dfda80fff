"""Settings as an operator meets them: one documented table that cannot drift from the code,
and a bad value that stops `livedash` with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from livedash.cli import app
from livedash.settings import Settings
from livedash.settings_doc import REGENERATE, explain, settings_table, undescribed, variable

SETTINGS_DOC = Path(__file__).parent.parent / "docs" / "settings.md"


def test_every_setting_is_described() -> None:
    assert undescribed() == [], "give these settings a description (a docstring under each)"


def test_the_documented_table_is_the_settings_model() -> None:
    assert SETTINGS_DOC.read_text() == settings_table(), f"regenerate it: `{REGENERATE}`"


def test_the_table_names_each_variable_with_its_type_default_and_description() -> None:
    table = settings_table()
    for name in Settings.model_fields:
        assert f"| `{variable(name)}` |" in table
    assert (
        "| `LIVEDASH_PORT` | integer, 1 to 65535 | `8000` | The TCP port the service listens on. |"
        in table
    )
    assert "| `LIVEDASH_JWT_SECRET` | secret | unset |" in table
    assert "| `LIVEDASH_JWT_ALGORITHM` | one of `HS256`, `RS256`, `ES256` | `HS256` |" in table
    assert "| `LIVEDASH_SMTP_TLS` | text, matching `^(none\\|starttls\\|tls)$` |" in table
    assert '| `LIVEDASH_REPORT_RETENTION_DAYS` | JSON object of integers | `{"default": 90}` |' in (
        table
    )
    printed = CliRunner().invoke(app, ["settings-doc"])
    assert printed.exit_code == 0
    assert printed.stdout == table


def _livedash(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`livedash ARGS` in its own process, with only these LIVEDASH_ variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDASH_")}
    return subprocess.run(
        [sys.executable, "-m", "livedash", *args],
        env={**environment, **settings},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable_", "value", "words"),
    [
        (
            "LIVEDASH_PORT",
            "abc",
            "LIVEDASH_PORT='abc' is not valid: input should be a valid integer",
        ),
        ("LIVEDASH_PORT", "0", "LIVEDASH_PORT='0' is not valid: input should be greater than or"),
        ("LIVEDASH_TIMEZONE", "Mars/Base", "LIVEDASH_TIMEZONE='Mars/Base' is not valid: unknown"),
        ("LIVEDASH_CORS_ORIGINS", "https://a", "LIVEDASH_CORS_ORIGINS is not valid JSON"),
        ("LIVEDASH_SMTP_TLS", "ssl", "LIVEDASH_SMTP_TLS='ssl' is not valid: string should match"),
    ],
)
def test_a_bad_setting_stops_the_start_with_a_message_naming_it(
    tmp_path: Path, variable_: str, value: str, words: str
) -> None:
    database = tmp_path / "hospital.db"
    stopped = _livedash("serve", "--db", str(database), **{variable_: value})
    assert stopped.returncode == 2
    assert stopped.stdout == ""
    assert "Traceback" not in stopped.stderr
    message = stopped.stderr.strip()
    assert len(message.splitlines()) == 1, message  # one paragraph
    assert message.startswith("livedash cannot start: ")
    assert words in message
    assert "docs/settings.md" in message
    assert not database.exists()  # nothing was started or created


def test_the_doctor_reports_a_bad_setting_as_its_failed_check(tmp_path: Path) -> None:
    result = _livedash("doctor", "--db", str(tmp_path / "hospital.db"), LIVEDASH_PORT="abc")
    assert result.returncode == 1
    assert "FAIL  configuration  livedash cannot start: LIVEDASH_PORT='abc'" in result.stdout
    assert result.stdout.rstrip().endswith("1 of 1 checks failed.")


def test_a_secret_is_never_repeated_in_the_message() -> None:
    message = explain([{"loc": ("smtp_password",), "msg": "too long", "input": "hunter2"}], {})
    assert "LIVEDASH_SMTP_PASSWORD is not valid: too long" in message
    assert "hunter2" not in message
    named = explain(
        [{"loc": ("port",), "msg": "Input should be ...", "input": 0}], {"port": "--port"}
    )
    assert named.startswith("livedash cannot start: --port=0 is not valid: input should be")
