"""What the bpf tier's tests against the host kernel share: their marks, the
probe's key and value layouts (tests/data/bpf/host_probe.h), and ways to make
the kernel produce the events the probe counts."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from aios_lab.bpf import RingBuffer

HOST_KERNEL = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF"),
    pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="kernel has no BTF"),
]

KEY = struct.Struct("=II")       # struct hp_key (checked against BTF in tests/bpf/test_btf.py)
VAL = struct.Struct("=Qq")       # struct hp_val


def make_switches(n: int = 20) -> None:
    """Force context switches on this thread: sleeping always deschedules."""
    for _ in range(n):
        time.sleep(0.001)


def drain(rb: RingBuffer, until, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until():
        rb.poll(50)


def prog_exists(prog_id: int) -> bool:
    tool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    return subprocess.run([tool, "prog", "show", "id", str(prog_id)], capture_output=True).returncode == 0
