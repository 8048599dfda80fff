"""bench/idle_sockets.py: the connect storm, against livedash and the two bare baselines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "idle_sockets.py"


def test_the_storm_subscribes_every_socket_of_livedash_and_of_both_baselines() -> None:
    # By default: livedash, then the baselines (node is installed with `make test`).
    command = [sys.executable, str(BENCH), "--sockets", "6", "--client-processes", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["server", "deflate"])
    rows = [line.split() for line in lines[header + 1 :] if line.strip()]
    # "node socket.io" is two words: the figures are counted from the right.
    by_server = {" ".join(row[:-10]): row[-10:] for row in rows}
    assert list(by_server) == ["livedash", "python-socketio", "node socket.io"], result.stdout
    for figures in by_server.values():
        assert figures[1:3] == ["6", "0"], result.stdout  # subscribed, failed
        assert figures[-1].endswith("ms/socket"), result.stdout


def test_the_servers_asked_for_run_alone_in_their_order() -> None:
    command = [sys.executable, str(BENCH), "--sockets", "2", "--client-processes", "1"]
    # The baselines, against their default order: livedash's own run is the test above's.
    command += ["--server", "node", "--server", "python"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["server", "deflate"])
    assert [line.split()[0] for line in lines[header + 1 :] if line.strip()] == [
        "node",
        "python-socketio",
    ]


def test_an_unknown_server_is_refused_with_the_choices() -> None:
    command = [sys.executable, str(BENCH), "--server", "nginx"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "invalid choice: 'nginx'" in result.stderr
    assert "livedash" in result.stderr.split("invalid choice")[1]


def test_a_pinned_storm_runs_the_server_and_its_clients_on_their_own_cpus() -> None:
    available = sorted(os.sched_getaffinity(0))
    server, clients = str(available[-1]), str(available[0])  # one CPU: both on it, still pinned
    command = [sys.executable, str(BENCH), "--sockets", "4", "--client-processes", "2"]
    command += ["--server", "livedash", "--server-cpus", server, "--client-cpus", clients]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["server", "deflate"])
    # The run's placement, read back from /proc once its server is up, then its row. (The
    # baselines are placed the same way: tests/test_cli_bench.py.)
    placement, row = lines[header + 1 :]
    assert placement == f"  livedash on CPUs {server}, the bench and its clients on CPUs {clients}"
    assert row.split()[:4] == ["livedash", "off", "4", "0"], result.stdout  # subscribed, failed


@pytest.mark.parametrize(
    ("option", "cpus", "refusal"),
    [
        ("--server-cpus", "4096", "this process may run on CPUs"),
        ("--client-cpus", "1-0", "counts down"),
        ("--client-cpus", "first", "CPUs as 0-1,3"),
    ],
)
def test_cpus_that_cannot_be_used_are_refused(option: str, cpus: str, refusal: str) -> None:
    command = [sys.executable, str(BENCH), option, cpus]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert refusal in result.stderr
