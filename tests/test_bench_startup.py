"""bench/startup.py: from `livedash serve` to a healthy instance, start after start."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "startup.py"


def test_each_start_is_timed_to_a_healthy_instance_and_summed_up() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--starts", "2"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"^\s+(\d) +(\d+\.\d\d)s +(\d+\.\d\d)s$", result.stdout, re.MULTILINE)
    assert [row[0] for row in rows] == ["1", "2"], result.stdout
    assert all(float(healthy) > 0 and float(cpu) > 0 for _, healthy, cpu in rows)
    assert re.search(r"^median healthy after \d+\.\d\d s \(", result.stdout, re.MULTILINE)


def test_no_start_at_all_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--starts", "0"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "--starts must be at least 1" in result.stderr
