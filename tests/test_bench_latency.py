"""bench/latency.py on PostgreSQL + Redis: through nginx, or straight to one instance."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "latency.py"


def run_bench(*arguments: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_direct_clients_reach_the_instance_itself_and_every_value() -> None:
    result = run_bench(
        *("--backend", "postgres", "--instances", "1", "--via", "direct"),
        *("--clients", "2", "--writes-per-second", "5", "--seconds", "1", "--warmup", "0"),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    instance = re.search(r"^instances: +1: pid \d+ at (\S+) \(leader\)", result.stdout, re.M)
    assert instance is not None, result.stdout
    assert re.search(rf"^direct: +{re.escape(instance.group(1))}, no proxy", result.stdout, re.M)
    assert "through nginx" not in result.stdout
    assert re.search(
        r"^sockets \(/health\): +instance 1 \(leader\) 2; 2 of 2 clients$", result.stdout, re.M
    )
    assert re.search(r"^updates: +expected (\d+), received \1, missing 0$", result.stdout, re.M)
    assert re.search(r"\bnginx 0%", result.stdout), result.stdout  # nothing went through it


@pytest.mark.parametrize(
    ("arguments", "refusal"),
    [
        (
            ("--backend", "postgres", "--instances", "2", "--via", "direct"),
            "--via direct is for --instances 1",
        ),
        (
            ("--via", "direct"),
            "--instances, --via and --client-processes are for --backend postgres",
        ),
    ],
)
def test_direct_is_refused_where_it_cannot_mean_one_instance(
    arguments: tuple[str, ...], refusal: str
) -> None:
    result = run_bench(*arguments)
    assert result.returncode == 2
    assert refusal in result.stderr
