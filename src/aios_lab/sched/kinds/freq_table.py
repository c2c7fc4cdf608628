"""The `freq` policy attached and running with a frequency table.

`FreqRun` wraps a Deployment of a policy whose manifest says
[model] kind = "freq-table". The table is checked before the BPF object is
even opened, checked again against the loaded object's BTF limits and
pushed before the scheduler goes live, so the first tick already reads it;
`swap()` replaces it atomically while the policy runs (hot swap), and
`states()` reads what each CPU observed and asked for.

Nothing is half-done on error: a table that fails a check is never written
to a slot, and a failure before attach leaves nothing attached.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...bpf import BpfObject
from ..deployment import Deployment
from ...errors import ModelError, PolicyError
from ..policy import Policy
from .freq_slots import CpuState, FreqSlots, TaskEstimate, check_table
from ...dvfs.table import FreqTable, load_table

KIND = "freq-table"


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
        if policy.model is None or policy.model.kind != KIND:
            raise PolicyError(f"policy {policy.name} does not deploy a frequency table "
                              f"(its manifest has no [model] kind = \"{KIND}\")")
        table = load_table(table_path) if table_path else None
        if table is not None:
            check_table(table, where=f"frequency table {table_path}")
        return cls(policy=policy, tunables=dict(tunables or {}), table=table, source=str(table_path or ""))

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> "FreqRun":
        if self.policy.model is None or self.policy.model.kind != KIND:
            raise PolicyError(f"policy {self.policy.name} does not deploy a frequency table")
        if self.table is not None:
            check_table(self.table, where=self.source or "table")  # before the object is opened
        self.dep = Deployment(self.policy, self.tunables, before_attach=self._prepare)
        self.dep.start()
        return self

    def _prepare(self, obj: BpfObject) -> None:
        spec = self.policy.model
        assert spec is not None and self.dep is not None
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
