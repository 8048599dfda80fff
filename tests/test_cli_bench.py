"""`livedash bench`: the latency bench against a temporary instance, its figures printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from livedash.cli import app


def test_the_bench_runs_a_temporary_instance_and_prints_its_figures() -> None:
    result = CliRunner().invoke(
        app,
        [
            *("bench", "--clients", "2", "--writes-per-second", "5"),
            *("--seconds", "1", "--warmup", "0", "--client-kind", "python"),
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "database:           SQLite (WAL) at " in out  # a temporary one
    assert re.search(r"updates:\s+expected \d+, received \d+, missing 0", out), out
    assert re.search(r"latency \(ms\).*\n\s+p50\s+[\d.]+\s+p95", out), out
    assert "server RSS:" in out
    temporary = re.search(r"SQLite \(WAL\) at (\S+);", out)
    assert temporary is not None
    assert not Path(temporary[1]).exists()  # everything it made is gone


def test_without_the_source_checkout_it_says_where_the_bench_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("livedash.cli.operations.BENCH_SCRIPT", tmp_path / "latency.py")
    result = CliRunner().invoke(app, ["bench"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "The bench comes with livedash's source (bench/latency.py)" in result.stderr
