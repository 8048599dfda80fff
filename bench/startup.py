"""How long `livedash serve` takes from its start to a healthy instance, and its CPU for it.

What a hospital waits for after every deploy or restart before screens can reconnect. The
service starts `--starts` times on one embedded database, already migrated and seeded as the
first start leaves it, each start stopped before the next:

    .venv/bin/python bench/startup.py --starts 5

Prints each start's seconds to a healthy `/health` and the CPU seconds of the service and its
children (the migration's process, when there is one), then the median and range of each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from livedash.testing.hospital import migrated_hospital
from livedash.testing.service import ServiceProcess, begin_bench, bench_settings
from livedash.testing.usage import tree_cpu_seconds


def one_start(workdir: Path, db: Path, secret: str) -> tuple[float, float]:
    """Seconds from the start to healthy, and CPU seconds meanwhile, of one start."""
    started = time.monotonic()
    with ServiceProcess(workdir, secret, db=db) as server:
        server.wait_healthy()
        healthy = time.monotonic() - started
        cpu = tree_cpu_seconds(server.pid)
    return healthy, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    if args.starts < 1:
        parser.error("--starts must be at least 1")
    begin_bench()
    with tempfile.TemporaryDirectory(prefix="livedash-startup-") as temp:
        workdir = Path(temp)
        db = workdir / "hospital.db"
        url, _ = migrated_hospital(db)
        secret = bench_settings(url, workdir).signing_key()
        print(f"{'start':>5} {'healthy after':>13} {'CPU':>7}")
        healthy_s, cpu_s = [], []
        for number in range(1, args.starts + 1):
            healthy, cpu = one_start(workdir, db, secret)
            healthy_s.append(healthy)
            cpu_s.append(cpu)
            print(f"{number:>5} {healthy:>12.2f}s {cpu:>6.2f}s", flush=True)
    print(
        f"median healthy after {statistics.median(healthy_s):.2f} s "
        f"({min(healthy_s):.2f}-{max(healthy_s):.2f}), CPU {statistics.median(cpu_s):.2f} s "
        f"({min(cpu_s):.2f}-{max(cpu_s):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
