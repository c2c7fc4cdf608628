"""The fields of a trace's metadata.json that aios-lab reads, checked once.

Trace.open validates these so that every consumer (analyze, compare,
export, train, the DVFS demand replay) can trust their types and sizes: a
hand-edited `lost: [1, 2]` or a CPU id of 1e9 in the topology (which would
make the demand replay allocate gigabytes) is a TraceError naming the
field, not a crash or an allocation somewhere downstream. Unknown fields
are left alone: metadata is also free-form notes.
"""
from __future__ import annotations

from typing import Any

from aios_lab.errors import TraceError

# The kernel's largest NR_CPUS (CONFIG_NR_CPUS_RANGE_END on x86 is 8192).
MAX_CPUS = 8192
_DICTS = ("kernel", "host", "topology", "workload", "collector", "bpf", "start", "end", "lost",
          "sched_ext_at_start", "sched_ext_at_end")
_FIX = "the metadata was edited or damaged; re-collect the trace"


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_metadata(md: dict, where: str) -> None:
    """TraceError when a field aios-lab reads has the wrong type or size."""
    def bad(field: str, why: str) -> TraceError:
        return TraceError(f"{where}: metadata.json field {field} {why}", hint=_FIX)

    for key in _DICTS:
        # Decision traces of mllb written before 2026-12-03 carry the kernel
        # as its release string; readers treat a string as "no details".
        if key == "kernel" and isinstance(md.get(key), str) and len(md[key]) <= 256:
            continue
        if md.get(key) is not None and not isinstance(md[key], dict):
            raise bad(key, f"is {type(md[key]).__name__}, expected an object")
    for k, v in (md.get("lost") or {}).items():
        if not _int(v, 0, 2 ** 63 - 1):
            raise bad(f"lost.{k}", f"is {v!r}, expected a count >= 0")
    for key in ("interval_ms",):
        if md.get(key) is not None and not _int(md[key], 1, 2 ** 31 - 1):
            raise bad(key, f"is {md[key]!r}, expected a positive integer")
    for key in ("start", "end"):
        ns = (md.get(key) or {}).get("monotonic_ns")
        if ns is not None and not _int(ns, 0, 2 ** 63 - 1):
            raise bad(f"{key}.monotonic_ns", f"is {ns!r}, expected nanoseconds >= 0")
    pid = (md.get("collector") or {}).get("pid")
    if pid is not None and not _int(pid, 0, 2 ** 31 - 1):
        raise bad("collector.pid", f"is {pid!r}, expected a process id")
    cmd = (md.get("workload") or {}).get("command")
    if cmd is not None and not (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)):
        raise bad("workload.command", "is not a list of strings")
    _check_topology(md.get("topology") or {}, bad)


def _check_topology(topo: dict, bad) -> None:
    online = topo.get("online_cpus")
    if online is not None and not (isinstance(online, list) and len(online) <= MAX_CPUS
                                   and all(_int(c, 0, MAX_CPUS - 1) for c in online)):
        raise bad("topology.online_cpus", f"is not a list of CPU ids 0..{MAX_CPUS - 1}")
    cpus = topo.get("cpus")
    if cpus is None:
        return
    if not isinstance(cpus, list) or len(cpus) > MAX_CPUS:
        raise bad("topology.cpus", f"is not a list of at most {MAX_CPUS} CPUs")
    for i, c in enumerate(cpus):
        if not isinstance(c, dict) or not _int(c.get("cpu"), 0, MAX_CPUS - 1):
            raise bad(f"topology.cpus[{i}]", f"is {c!r}, expected an object with a cpu id 0..{MAX_CPUS - 1}")
        for k in ("llc", "node", "core"):
            if c.get(k) is not None and not _int(c[k], 0, MAX_CPUS - 1):
                raise bad(f"topology.cpus[{i}].{k}", f"is {c[k]!r}, expected an id 0..{MAX_CPUS - 1} or null")
