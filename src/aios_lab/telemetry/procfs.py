"""Per-process samples from /proc (psutil): no root, no BPF needed.

This is what a trace holds when the BPF collectors cannot run (no root): less
precise (cumulative counters read at each interval, processes shorter than an
interval are missed) but useful; metadata.json says which sources a trace has.
"""
from __future__ import annotations

import time

import psutil

_ATTRS = ["pid", "ppid", "name", "cpu_times", "memory_info", "num_threads", "num_ctx_switches", "cpu_num"]


def sample(ts_ns: int | None = None, pids: set[int] | None = None) -> list[dict]:
    """One row per live process (or per pid in ``pids``) with PROCESSES columns."""
    ts = ts_ns if ts_ns is not None else time.monotonic_ns()
    rows = []
    for proc in psutil.process_iter(_ATTRS):
        info = proc.info
        if pids is not None and info["pid"] not in pids:
            continue
        cpu = info.get("cpu_times")
        mem = info.get("memory_info")
        ctx = info.get("num_ctx_switches")
        rows.append({
            "ts_ns": ts, "pid": info["pid"], "ppid": info.get("ppid"), "comm": info.get("name"),
            "cpu_user_s": cpu.user if cpu else None, "cpu_system_s": cpu.system if cpu else None,
            "rss_bytes": mem.rss if mem else None, "num_threads": info.get("num_threads"),
            "ctx_voluntary": ctx.voluntary if ctx else None, "ctx_involuntary": ctx.involuntary if ctx else None,
            "last_cpu": info.get("cpu_num"),
        })
    return rows
