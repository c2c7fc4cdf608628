"""Cheap scheduler event counts (switches, migrations, wakeups) from BPF.

Loads bpf/counters.bpf.o (tp_btf on the sched tracepoints) and sums its
per-CPU array. Works on any kernel with BTF, sched_ext or not.
"""
from __future__ import annotations

from . import build, paths
from .bpf import BpfObject
from .bpf.loader import LoadSpec, load

PROGRAMS = ("on_switch", "on_migrate", "on_wakeup", "on_wakeup_new")


class SchedCounters:
    def __init__(self) -> None:
        path = build.object_path(paths.project_root() / "bpf" / "counters.bpf.c")
        self._live = load(LoadSpec(path, programs=PROGRAMS), before_attach=self._bind)

    def _bind(self, obj: BpfObject) -> None:
        enum = obj.btf.enum("aios_counter")
        self.names = {idx: name.removeprefix("AIOS_CNT_").lower()
                      for name, idx in enum.items() if not name.startswith("AIOS_NR")}
        self.map = obj.map("counters")

    def read(self) -> dict[str, int]:
        return {n: self.map.sum_percpu_u64(i.to_bytes(4, "little")) for i, n in sorted(self.names.items())}

    def close(self) -> None:
        self._live.close()

    def __enter__(self) -> "SchedCounters":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
