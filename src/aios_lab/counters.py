"""Cheap scheduler event counts (switches, migrations, wakeups) from BPF.

Loads bpf/counters.bpf.o (tp_btf on the sched tracepoints) and sums its
per-CPU array. Works on any kernel with BTF, sched_ext or not.
"""
from __future__ import annotations

from . import build, paths
from .bpf import BpfObject
from .errors import BuildError

PROGRAMS = ("on_switch", "on_migrate", "on_wakeup", "on_wakeup_new")


class SchedCounters:
    def __init__(self) -> None:
        path = build.object_path(paths.project_root() / "bpf" / "counters.bpf.c")
        if not path.exists():
            raise BuildError(f"{path} is not built", hint="run `aios-lab build`")
        self.obj = BpfObject.open(path)
        try:
            self.obj.load()
            for prog in PROGRAMS:
                self.obj.attach(prog)
            enum = self.obj.btf.enum("aios_counter")
            self.names = {idx: name.removeprefix("AIOS_CNT_").lower()
                          for name, idx in enum.items() if not name.startswith("AIOS_NR")}
            self.map = self.obj.map("counters")
        except BaseException:
            self.obj.close()
            raise

    def read(self) -> dict[str, int]:
        return {n: self.map.sum_percpu_u64(i.to_bytes(4, "little")) for i, n in sorted(self.names.items())}

    def close(self) -> None:
        self.obj.close()

    def __enter__(self) -> "SchedCounters":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
