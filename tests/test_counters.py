"""aios_lab.counters on the host kernel: bpf/counters.bpf.o loaded through
the shared loader lifecycle, counting real switches (root, BTF needed)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aios_lab import build, paths
from aios_lab.counters import SchedCounters

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF"),
    pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="kernel has no BTF"),
    pytest.mark.skipif(not build.object_path(paths.project_root() / "bpf" / "counters.bpf.c").exists(),
                       reason="run `aios-lab build` first"),
]


def test_counts_switches_and_close_detaches():
    with SchedCounters() as counters:
        before = counters.read()
        for _ in range(20):
            time.sleep(0.001)       # each sleep switches this thread out
        after = counters.read()
        live = counters._live
    assert set(after) == {"switch", "migrate", "wakeup", "wakeup_new"}
    assert after["switch"] - before["switch"] >= 20
    assert "closed" in repr(live.obj) and not any(link.alive for link in live.links.values())
