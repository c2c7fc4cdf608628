"""A prompt ring reader for the BPF tests on a busy host.

The telemetry rings are system-wide: every task on the machine writes them,
and the test process is their only reader. At the suite's priority (the
shared development machines run tests at nice 19) a reader waits its turn
behind every CPU hog: under `stress-ng --cpu 2` plus a colleague's benchmark
(a QEMU guest under SCHED_RR, a hackbench) the test process ran about 1 % of
the time and the rings overflowed (one run lost 706,934 switches, 499,041
wakeups and 91,937 migrations; benchmarks/RESULTS.md, "Issue 20: host tests
under load"). That measures the reader's share of the CPU, not the
collector, so the tests give the reader what a production reader would be
given (perf record -r does the same): real-time priority while it drains,
one step above a benchmark guest's SCHED_RR. The reader sleeps in epoll
between drains, so it takes little from anyone.

The workloads a test starts must keep the suite's priority: SCHED_RESET_ON_FORK
puts children back to SCHED_OTHER at nice 0, and `SUITE_NICE` is what they
set (and what tests compare a task's recorded nice with).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from aios_lab.vm.runner import RT_PRIORITY

SUITE_NICE = os.getpriority(os.PRIO_PROCESS, 0)   # read at import, before any boost
READER_RT_PRIORITY = RT_PRIORITY + 1    # above `vm run --rt` guests (SCHED_RR RT_PRIORITY)
FALLBACK_NICE = -20                     # where real-time is refused (an RT-less cgroup)


@contextmanager
def prompt_reader() -> Iterator[str]:
    """Run the calling process (the ring reader) under SCHED_FIFO with reset
    on fork for the duration; yields the policy it got ("fifo", "nice" or
    "none")."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                              os.sched_param(READER_RT_PRIORITY))
        got = "fifo"
    except PermissionError:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, FALLBACK_NICE)
            got = "nice"
        except PermissionError:     # no CAP_SYS_NICE: the suite's priority, as before
            got = "none"
    try:
        yield got
    finally:
        os.sched_setscheduler(0, policy, param)
        os.setpriority(os.PRIO_PROCESS, 0, nice)

