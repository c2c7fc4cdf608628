"""The "freq-table" model kind: the `freq` policy running with a frequency table.

`FreqRun` wraps a Deployment of a policy whose manifest says
[model] kind = "freq-table". The table is checked before the BPF object is
even opened, checked again against the loaded object's BTF limits and
pushed before the scheduler goes live, so the first tick already reads it;
`swap()` replaces it atomically while the policy runs (hot swap), and
`states()` reads what each CPU observed and asked for.

Nothing is half-done on error: a table that fails a check is never written
to a slot, and a failure before attach leaves nothing attached.

`FreqTableKind` is the kind the deploy loop drives: a FreqRun, plus
`--watch` (the table file re-read when it changes and swapped in live).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ....errors import ModelError, PolicyError
from ...policy import Policy
from .. import Event, ModelKind, for_policy, register

if TYPE_CHECKING:
    from ....bpf import BpfObject
    from ....dvfs.table import FreqTable
    from ...deployment import Deployment
    from .slots import CpuState, FreqSlots, TaskEstimate

# numpy, libbpf and the table code are imported where they are used: every
# kind module is imported when a manifest is read (`policy list`, and each
# CLI start in a TCG guest, where an import costs seconds).


@dataclass
class TableSwap:
    t: float
    version: int
    slot: int
    source: str


@dataclass
class FreqRun:
    policy: Policy
    tunables: dict[str, Any] = field(default_factory=dict)
    table: FreqTable | None = None
    source: str = ""
    dep: Deployment | None = None
    slots: FreqSlots | None = None
    swaps: list[TableSwap] = field(default_factory=list)

    @classmethod
    def create(cls, policy: Policy, tunables: dict[str, Any] | None = None,
               table_path: Path | str | None = None) -> "FreqRun":
        """Load and check the table file (if any) before anything touches the kernel."""
        if for_policy(policy) is not FreqTableKind:
            raise PolicyError(f"policy {policy.name} does not deploy a frequency table "
                              f"(its manifest has no [model] kind = \"{FreqTableKind.name}\")")
        table = FreqTableKind.load(table_path) if table_path else None
        return cls(policy=policy, tunables=dict(tunables or {}), table=table, source=str(table_path or ""))

    # -- lifecycle -------------------------------------------------------------------

    def start(self, prepare: Callable[[BpfObject], None] | None = None) -> "FreqRun":
        """Load, `prepare` (this run's own unless the caller, its model kind,
        passes its step), attach."""
        if for_policy(self.policy) is not FreqTableKind:
            raise PolicyError(f"policy {self.policy.name} does not deploy a frequency table")
        if self.table is not None:
            from .slots import check_table

            check_table(self.table, where=self.source or "table")  # before the object is opened
        from ...deployment import Deployment

        self.dep = Deployment(self.policy, self.tunables, before_attach=prepare or self.prepare)
        self.dep.start()
        return self

    def prepare(self, obj: BpfObject) -> None:
        """After load, before attach: the table slots, the table checked
        against the object's limits and pushed, the status record's model."""
        spec = self.policy.model
        assert spec is not None and self.dep is not None
        from .slots import FreqSlots

        self.slots = FreqSlots.from_object(obj, spec)
        if self.table is not None:
            slot = self.slots.push(self.table, where=self.source or "table")
            self.swaps.append(TableSwap(time.time(), int(self.table.version), slot, self.source))
        self.dep.record_extra["model"] = self.slots.status_record()

    def stop(self):
        info = self.dep.stop() if self.dep else None
        self.slots = None
        return info

    def __enter__(self) -> "FreqRun":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- while running ---------------------------------------------------------------

    def _live(self) -> FreqSlots:
        if self.slots is None:
            raise ModelError("the freq policy is not running")
        return self.slots

    def swap(self, table: FreqTable, source: str = "") -> TableSwap:
        """Check `table` against the live policy and make it the active one."""
        slot = self._live().push(table, where=source or "new table")
        self.table, self.source = table, source
        rec = TableSwap(time.time(), int(table.version), slot, source)
        self.swaps.append(rec)
        return rec

    def active_version(self) -> int | None:
        live = self._live().active_table()
        return live.version if live is not None else None

    def states(self) -> list[CpuState]:
        return self._live().cpu_states()

    def task_estimate(self, pid: int) -> TaskEstimate | None:
        """The policy's per-task activation estimate of `pid` (None: it has no state for it)."""
        return self._live().task_estimate(pid)

    def program_priors(self) -> dict:
        """The policy's per-program priors of a new task's first activation, by program name."""
        return self._live().program_priors()


@register
class FreqTableKind(ModelKind):
    name = "freq-table"
    policies = "frequency-table policies (freq)"
    what = "a frequency table"
    noun = "table"
    usage = "use --model TABLE [--watch]"
    options = frozenset({"watch"})
    backends = ("sched_ext", "cpufreq")

    def __init__(self, run: FreqRun, watch: bool = False) -> None:
        self.run = run
        self.policy = run.policy
        self.path = run.source if watch else ""
        self._stamp = _file_stamp(self.path) if watch else None

    @property
    def dep(self) -> Deployment | None:
        return self.run.dep

    @classmethod
    def load(cls, path: str | Path) -> FreqTable:
        from ....dvfs.table import load_table
        from .slots import check_table

        table = load_table(path)
        check_table(table, where=f"frequency table {path}")
        return table

    @classmethod
    def create(cls, policy: Policy, tunables: dict[str, Any], model_path: str | None = None, *,
               watch: bool = False, **_: Any) -> "FreqTableKind":
        return cls(FreqRun.create(policy, tunables, table_path=model_path), watch=watch)

    def start(self) -> Deployment:
        self.run.start(prepare=self.prepare)
        assert self.run.dep is not None
        return self.run.dep

    def prepare(self, obj: BpfObject) -> None:
        self.run.prepare(obj)

    def stop(self):
        return self.run.stop()

    def swap(self, model: FreqTable, source: str = "") -> TableSwap:
        return self.run.swap(model, source=source)

    def status(self) -> dict[str, Any]:
        t = self.run.table
        return {"table": {"version": int(t.version), "source": self.run.source} if t is not None else None}

    def tick(self, t: float, emit: Event) -> None:
        """--watch: when the table file changed, load, check and swap it in."""
        if not self.path:
            return
        stamp = _file_stamp(self.path)
        if stamp == self._stamp or stamp is None:
            return  # unchanged, or being replaced right now: look again next interval
        self._stamp = stamp
        from ....dvfs.table import load_table

        try:
            table = load_table(self.path)  # checked against the live policy by swap
            live = self.run.table
            if live is not None and live.version == table.version and (live.perf == table.perf).all():
                return  # rewritten with the same table
            rec = self.swap(table, source=str(self.path))
        except ModelError as exc:
            emit({"event": "swap_rejected", "t": t, "why": exc.one_line()})
            return
        emit({"event": "table_swapped", "t": t, "version": rec.version, "slot": rec.slot, "source": rec.source})

    def end(self, status: str, final: dict[str, Any], emit: Event) -> dict[str, Any]:
        return {"table_swaps": [s.__dict__ for s in self.run.swaps]}


def _file_stamp(path: str | Path | None) -> tuple[int, int, int] | None:
    """(inode, mtime_ns, size): an atomic rewrite changes the inode, an edit in place the rest."""
    try:
        st = os.stat(path)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
