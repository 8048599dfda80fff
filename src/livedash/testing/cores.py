"""Which CPUs a bench's server and its clients run on.

On a machine whose cores the load generator shares with the server, a figure is the two
together. A bench pinned with `--server-cpus` and `--client-cpus` gives each its own cores:
the server is started under `taskset` (so every thread it ever starts inherits the set), and
the bench itself, with every client process it starts after, is pinned with
`os.sched_setaffinity`. Linux only, as the benches' /proc readings are.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def cpu_list(text: str) -> frozenset[int]:
    """CPUs written as Linux writes them ("1", "0-1,3"), each one this process may run on;
    an argparse type, so a bad list is a usage error."""
    cpus: set[int] = set()
    for part in text.split(","):
        found = _RANGE.match(part.strip())
        if found is None:
            raise argparse.ArgumentTypeError(f"{text!r}: CPUs as 0-1,3")
        first, last = int(found[1]), int(found[2] or found[1])
        if last < first:
            raise argparse.ArgumentTypeError(f"{text!r}: {first}-{last} counts down")
        cpus.update(range(first, last + 1))
    allowed = os.sched_getaffinity(0)
    if not cpus <= allowed:
        raise argparse.ArgumentTypeError(
            f"{text!r}: this process may run on CPUs {written(allowed)} only"
        )
    return frozenset(cpus)


def written(cpus: Collection[int]) -> str:
    """`cpus` as a list Linux and taskset read: "0-1,3"."""
    parts: list[str] = []
    # Consecutive CPUs keep the same difference from their place in the sorted list.
    for _, run in itertools.groupby(enumerate(sorted(cpus)), lambda pair: pair[1] - pair[0]):
        block = [cpu for _, cpu in run]
        parts.append(str(block[0]) if len(block) == 1 else f"{block[0]}-{block[-1]}")
    return ",".join(parts)


def on_cpus(command: Sequence[str], cpus: Collection[int] | None) -> list[str]:
    """`command` run on `cpus` only, or as it is when `cpus` is None."""
    if cpus is None:
        return list(command)
    return ["taskset", "--cpu-list", written(cpus), *command]


def allowed_cpus(pid: int) -> str:
    """The CPUs process `pid` may run on, as /proc says ("0-1")."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^Cpus_allowed_list:\s*(\S+)$", status, re.MULTILINE)
    return found[1] if found else "?"


def check_on(pid: int, cpus: Collection[int] | None) -> None:
    """Raise unless process `pid` runs on exactly `cpus` (None: nothing to check)."""
    if cpus is not None and (found := allowed_cpus(pid)) != written(cpus):
        raise RuntimeError(f"process {pid} runs on CPUs {found}, not {written(cpus)}")


def pin_bench(cpus: Collection[int] | None) -> None:
    """Run this process, and every process it starts from now on, on `cpus` (None: as is)."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
