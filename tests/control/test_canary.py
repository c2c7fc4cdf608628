"""control.canary: the kernel's own counters a canary window reads."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aios_lab.control.canary import WaitSample, events_delta, kernel_log_tail, read_events, read_wait

SCHEDSTAT = """version 17
timestamp 4300000000
cpu0 0 0 100 10 50 20 9000000 3000000 300
domain0 MC 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
cpu1 0 0 100 10 50 20 9000000 1000000 100
"""


def test_wait_is_summed_over_cpus_and_domains_are_ignored(tmp_path):
    p = tmp_path / "schedstat"
    p.write_text(SCHEDSTAT)
    s = read_wait(p)
    assert s == WaitSample(run_delay_ns=4_000_000, timeslices=400)
    later = WaitSample(run_delay_ns=5_000_000, timeslices=500)
    assert later.mean_wait_since(s) == 10_000.0
    assert s.mean_wait_since(s) is None  # nothing ran: no mean


def test_this_kernels_schedstat_counts_timeslices():
    if not Path("/proc/schedstat").exists():
        pytest.skip("this kernel has no /proc/schedstat (CONFIG_SCHEDSTATS)")
    before = read_wait()
    t = time.monotonic()
    while time.monotonic() - t < 0.05:
        os.sched_yield()
    after = read_wait()
    assert after.timeslices > before.timeslices and after.run_delay_ns >= before.run_delay_ns


def test_events(tmp_path):
    p = tmp_path / "events"
    p.write_text("SCX_EV_SELECT_CPU_FALLBACK 3\nSCX_EV_DISPATCH_KEEP_LAST 10\nnot a counter line\n")
    before = read_events(p)
    assert before == {"SCX_EV_SELECT_CPU_FALLBACK": 3, "SCX_EV_DISPATCH_KEEP_LAST": 10}
    p.write_text("SCX_EV_SELECT_CPU_FALLBACK 5\nSCX_EV_DISPATCH_KEEP_LAST 10\n")
    assert events_delta(read_events(p), before) == {"SCX_EV_SELECT_CPU_FALLBACK": 2, "SCX_EV_DISPATCH_KEEP_LAST": 0}
    assert read_events(tmp_path / "missing") is None and events_delta(None, before) == {}


def test_kernel_log_tail_is_bounded():
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("the kernel log is not readable here")
    tail = kernel_log_tail(5)
    assert len(tail) <= 5
    assert all(line.startswith("[") for line in tail)
