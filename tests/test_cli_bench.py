"""`livedash bench`: livedash and the two bare baselines, in one table, as bench/run.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from livedash.cli import app

NOTE = re.compile(r"^  \S+, \d+ sockets: ")


def test_the_bench_measures_livedash_next_to_a_baseline_and_prints_one_table(
    tmp_path: Path,
) -> None:
    saved = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            *("bench", "--sockets", "2", "--writes-per-second", "5"),
            *("--seconds", "1", "--warmup", "0", "--clients", "python"),
            *("--scenarios", "python,livedash", "--json", str(saved)),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["scenario", "sockets"])
    assert "p99/python" in lines[header]
    # The table's rows, then a note per row that has one ("python-socketio, 2 sockets: 3 % of
    # sends dropped"), which a loaded machine can bring.
    printed = {
        line.split()[0]: line.split()
        for line in lines[header + 1 :]
        if line.strip() and not NOTE.match(line)
    }
    assert set(printed) == {"python-socketio", "livedash"}, result.stdout
    assert printed["livedash"][1:3] == ["2", "5"]  # sockets, writes/s
    assert printed["livedash"][-1].endswith("x")  # its p99 against python-socketio's
    rows = {row["scenario"]: row for row in json.loads(saved.read_text())["rows"]}
    assert set(rows) == {"python-socketio", "livedash"}
    for row in rows.values():
        assert row["delivered_share"] == 1.0, row
        assert 0 < row["p50"] <= row["p99"], row
    assert rows["livedash"]["p99_vs_python"] > 0


def test_without_the_source_checkout_it_says_where_the_bench_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("livedash.cli.operations.BENCH_SCRIPT", tmp_path / "run.py")
    result = CliRunner().invoke(app, ["bench"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "The bench comes with livedash's source (bench/run.py)" in result.stderr


def test_the_bench_runs_livedash_with_socket_workers_and_counts_every_process(
    tmp_path: Path,
) -> None:
    saved = tmp_path / "bench.json"
    arguments = ["bench", "--sockets", "2", "--writes-per-second", "5", "--seconds", "1"]
    arguments += ["--warmup", "0", "--clients", "python", "--scenarios", "livedash"]
    result = CliRunner().invoke(app, [*arguments, "--socket-workers", "1", "--json", str(saved)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(saved.read_text())["rows"]
    assert row["delivered_share"] == 1.0, row
    # The main process alone holds ~130 MB: a worker is a Python process of its own.
    assert row["server_rss_mb"] > 200, row


def test_the_bench_gives_the_servers_and_the_load_cpus_of_their_own(tmp_path: Path) -> None:
    available = sorted(os.sched_getaffinity(0))
    server, clients = str(available[-1]), str(available[0])
    saved = tmp_path / "bench.json"
    arguments = ["bench", "--sockets", "2", "--writes-per-second", "5", "--seconds", "1"]
    arguments += ["--warmup", "0", "--scenarios", "python", "--json", str(saved)]
    arguments += ["--server-cpus", server, "--client-cpus", clients]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert f"CPUs: servers {server}; the bench, its clients and writer {clients}" in result.stdout
    saved_run = json.loads(saved.read_text())
    assert (saved_run["server_cpus"], saved_run["client_cpus"]) == (server, clients)
    assert all(row["delivered_share"] == 1.0 for row in saved_run["rows"]), saved_run


def test_the_bench_refuses_cpus_this_machine_does_not_give_it(
    capfd: pytest.CaptureFixture[str],
) -> None:
    result = CliRunner().invoke(app, ["bench", "--server-cpus", "4096"])
    assert result.exit_code == 2, result.output
    assert "The bench failed (exit code 2)" in result.stderr
    # What the bench itself said, on the terminal's own standard error.
    assert "--server-cpus: '4096': this process may run on CPUs" in capfd.readouterr().err
