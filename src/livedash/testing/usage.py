"""What a run costs the machine: a process's CPU time, memory and waits for a CPU (read from
/proc), and how late the bench's own event loop runs.

A bench prints these beside its figures so that a saturated bench, or a machine with more
runnable processes than CPUs, can be told apart from a slow service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

LAG_TICK_SECONDS = 0.01


def cpu_seconds(pid: int | str = "self", *, children: bool = False) -> float:
    """utime + stime of process `pid` (and, with `children`, of its reaped children)."""
    return _cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), children=children)


def _cpu_seconds(stat: str, *, children: bool = False) -> float:
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime and stime: fields 14 and 15 of proc(5), cutime and cstime 16 and 17, counted
    # after the ")".
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> tuple[set[int], dict[int, str]]:
    """Process `root` and its live descendants, with each one's /proc/PID/stat."""
    parents: dict[int, int] = {}
    stats: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            stats[int(entry.name)] = stat
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree, stats


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of process `root` and all its descendants, reaped ones included."""
    tree, stats = _tree(root)
    # A child's time moves into its parent's cutime/cstime when it is reaped: counting both
    # for every process in the tree counts each second once, before and after.
    return sum(_cpu_seconds(stats[pid], children=True) for pid in tree if pid in stats)


def tree_rss_kb(root: int) -> int | None:
    """Resident memory of process `root` and its live descendants (socket workers), in KB;
    None once `root` is gone."""
    tree, _ = _tree(root)
    own = rss_kb(root)
    if own is None:
        return None
    return own + sum(rss_kb(pid) or 0 for pid in tree - {root})


def run_queue_seconds(pid: int | str = "self") -> float:
    """Seconds the process's main thread (its event loop) was runnable but not running: it
    waited for a CPU that other processes held (/proc/PID/schedstat)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    return 0.0


def rss_kb(pid: int) -> int | None:
    """The process's resident memory (VmRSS) in KB; None once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


class LoopLag:
    """How late a 10 ms timer fires on the running loop: high means the bench is busy."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK_SECONDS)
            self.samples.append(max(time.monotonic() - before - LAG_TICK_SECONDS, 0.0))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
