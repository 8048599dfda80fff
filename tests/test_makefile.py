"""The Makefile behind the README's two commands, `make demo` and `make test`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_processes_make_starts_keep_their_compiled_modules() -> None:
    """Where the environment says not to write bytecode (PYTHONDONTWRITEBYTECODE, common in
    containers), every `livedash serve` a test or the demo starts would compile livedash anew."""
    probe = f"probe: ; @{sys.executable} -c 'import sys; print(sys.dont_write_bytecode)'"
    result = subprocess.run(
        ["make", "--no-print-directory", "--eval", probe, "probe"],
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"
