"""livedash.testing.cores: the CPU lists the benches' --server-cpus and --client-cpus take."""

from __future__ import annotations

import argparse
import os

import pytest

from livedash.testing.cores import allowed_cpus, check_on, cpu_list, on_cpus, written


@pytest.mark.parametrize(
    ("cpus", "text"),
    [({0}, "0"), ({0, 1}, "0-1"), ({3, 0, 1}, "0-1,3"), ({7, 0, 2, 3, 4}, "0,2-4,7")],
)
def test_cpus_are_written_as_linux_and_taskset_read_them(cpus: set[int], text: str) -> None:
    assert written(cpus) == text
    assert on_cpus(["node", "server.js"], cpus) == [
        "taskset",
        "--cpu-list",
        text,
        "node",
        "server.js",
    ]


def test_a_list_of_this_process_cpus_reads_back_as_linux_has_them() -> None:
    mine = os.sched_getaffinity(0)
    assert cpu_list(written(mine)) == mine
    assert allowed_cpus(os.getpid()) == written(mine)
    check_on(os.getpid(), mine)  # as it is: no error
    assert on_cpus(["node"], None) == ["node"]


def test_a_process_elsewhere_than_asked_is_an_error() -> None:
    elsewhere = {max(os.sched_getaffinity(0)) + 1}
    with pytest.raises(RuntimeError, match=f"runs on CPUs {allowed_cpus(os.getpid())}, not"):
        check_on(os.getpid(), elsewhere)


@pytest.mark.parametrize("text", ["", "first", "1-0", "0,,1", "4096"])
def test_a_list_that_does_not_parse_or_names_a_cpu_out_of_reach_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cpu_list(text)
