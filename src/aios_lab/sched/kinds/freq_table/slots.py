"""Push a FreqTable into the running `freq` policy, atomically; read what it did.

The policy looks up `table[ctl.active]` on every tick; the inactive slot is
written and read back, then `ctl.active` flips (one aligned u32 whose only
changing byte is 0 or 1), with a grace period before a retired slot is
reused: mllb's scheme, shared in aios_lab.bpf.double_buffer.

Everything that would make the kernel's view wrong is checked before the
first write (`check_table`): shape, integer perf levels within 1..1024, no
NaN, a valid version, and a version that is not already live with other
values (the per-CPU state reports the version it used, so one version must
mean one table). Layouts and limits come from the object's BTF
(policies/freq/intf.h) and must agree with aios_lab.dvfs.table.
"""
from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from ....bpf.btf import Btf
from ....bpf.double_buffer import GRACE_S, SlotWriter  # noqa: F401 (GRACE_S: part of this module's API)
from ....dvfs import table as tbl
from ....dvfs.table import FreqTable
from ....errors import AiosError, BuildError, LayoutError, ModelError

TABLE_STRUCT, CTL_STRUCT, CPU_STRUCT, LIMIT_ENUM = "freq_table", "freq_ctl", "freq_cpu", "freq_limit"
TASK_STRUCT, TASK_MAP = "freq_task", "task_est"   # per-task state, task-local storage keyed by pidfd
PRIOR_STRUCT, PRIOR_MAP = "freq_prior", "prog_est"  # per program (comm): a new task's first estimate


class _MapLike(Protocol):
    """What FreqSlots needs of a map (aios_lab.bpf.Map; tests pass a fake)."""
    value_size: int
    max_entries: int

    def lookup_u32_key(self, i: int) -> Any: ...
    def update(self, key: bytes, value: bytes, flags: int = 0) -> None: ...


@dataclass(frozen=True)
class TableLimits:
    """enum freq_limit (policies/freq/intf.h) as the object's BTF carries it."""

    util_buckets: int
    rq_buckets: int
    perf_max: int
    util_shift: int
    max_cpus: int
    magic: int          # FREQ_TABLE_MAGIC: a slot holding a table starts with it
    no_cpu: int         # FREQ_NO_CPU: freq_task.queued_cpu of a task in no queue

    @classmethod
    def from_enum(cls, limit: dict[str, int]) -> "TableLimits":
        """From the object's enum freq_limit, whose table must be aios_lab.dvfs.table's."""
        try:
            lim = cls(util_buckets=limit["FREQ_UTIL_BUCKETS"], rq_buckets=limit["FREQ_RQ_BUCKETS"],
                      perf_max=limit["FREQ_PERF_MAX"], util_shift=limit["FREQ_UTIL_SHIFT"],
                      max_cpus=limit["FREQ_MAX_CPUS"], magic=limit["FREQ_TABLE_MAGIC"],
                      no_cpu=limit["FREQ_NO_CPU"])
        except KeyError as exc:
            raise LayoutError(f"enum {LIMIT_ENUM} lacks {exc.args[0]}",
                              hint="rebuild the policy (`aios-lab build`)") from None
        # BPF buckets util with a shift; the table module with a division.
        same_buckets = tbl.UTIL_MAX >> lim.util_shift == lim.util_buckets
        if (lim.util_buckets, lim.rq_buckets, lim.perf_max) != (
                tbl.UTIL_BUCKETS, tbl.RQ_BUCKETS, tbl.PERF_MAX) or not same_buckets:
            raise LayoutError(f"the freq policy's table is {lim.util_buckets}x{lim.rq_buckets} (perf max "
                              f"{lim.perf_max}, util >> {lim.util_shift}); this aios-lab's is "
                              f"{tbl.UTIL_BUCKETS}x{tbl.RQ_BUCKETS} (perf max {tbl.PERF_MAX})",
                              hint="rebuild the policy with this aios-lab (`aios-lab build`)")
        return lim


@functools.lru_cache(maxsize=None)
def default_limits() -> TableLimits:
    """The limits of the freq policy this aios-lab deploys, read once from its
    built object's BTF (no root or kernel support needed)."""
    from ...policy import get

    path = get("freq").object_path
    if not path.exists():
        raise BuildError(f"{path} is not built; the freq policy's limits are read from it",
                         hint="run `aios-lab build`")
    with Btf.parse(path) as btf:
        return TableLimits.from_enum(btf.enum(LIMIT_ENUM))


def check_table(table: FreqTable, limits: TableLimits | None = None, where: str = "table") -> np.ndarray:
    """Check `table` against the policy's limits; return its perf levels as int64.

    Re-checks what FreqTable.validate() checked at construction, because
    `perf` is a mutable array that may have been changed since."""
    lim = limits or default_limits()
    if not isinstance(table, FreqTable):
        raise ModelError(f"{where} is a {type(table).__name__}, not a FreqTable")
    if table.state != tbl.STATES[0]:
        raise ModelError(f"{where} is indexed by the {table.state!r} state; the freq policy looks tables up "
                         f"by ({tbl.STATES[0]}): a per-task-state table is judged in the simulator only",
                         hint="train it without --state task to deploy it")
    p = np.asarray(table.perf)
    if p.shape != (lim.util_buckets, lim.rq_buckets):
        raise ModelError(f"{where} has shape {tuple(p.shape)}; the policy's table is "
                         f"{lim.util_buckets}x{lim.rq_buckets} (util buckets x queue buckets)",
                         hint="retrain it with this aios-lab (`aios-lab train freq`)")
    if p.dtype.kind == "f":
        if not np.all(np.isfinite(p)):
            raise ModelError(f"{where} holds NaN or infinite perf levels")
        if not np.all(p == np.round(p)):
            raise ModelError(f"{where} holds non-integer perf levels; expected integers 1..{lim.perf_max}")
    elif p.dtype.kind not in "iu":
        raise ModelError(f"{where} perf levels are {p.dtype}, not integers 1..{lim.perf_max}")
    if p.min() < 1 or p.max() > lim.perf_max:
        raise ModelError(f"{where} perf levels span {p.min():g}..{p.max():g}, outside 1..{lim.perf_max}")
    version = table.version
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or not 1 <= int(version) < 2**63:
        raise ModelError(f"{where} has version {version!r}; a version is an integer 1..2^63-1")
    return p.astype(np.int64)


@dataclass(frozen=True)
class CpuState:
    """One CPU's entry of the policy's `cpu_state` map (struct freq_cpu)."""
    cpu: int
    util: int            # what the last decision was indexed by: util_win, or util_est when larger with work
    util_bucket: int
    nr_queued: int
    rq_bucket: int
    perf: int            # table value looked up, 0 = no table
    request: int         # passed to scx_bpf_cpuperf_set(), 0 = none
    perf_cur: int
    perf_cap: int
    table_version: int   # 0 = no table
    updates: int
    running: bool
    consistent: bool     # two identical copies with no update in flight
    util_win: int = 0    # the windowed EWMA at the last decision
    util_est: int = 0    # EWMA of the utilisation each time the CPU ran out of work (now)
    queued_est_ns: int = 0   # estimated next activations of the tasks waiting in its queue (now)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskEstimate:
    """One task's entry of the policy's `task_est` task storage (struct freq_task)."""
    pid: int
    est_ns: int          # the next activation's estimate (util_est of the lengths)
    last_ns: int         # the last complete activation
    act_ns: int          # run time of the activation in progress
    activations: int
    queued_cpu: int | None
    queued_est_ns: int
    prior_ns: int = 0    # the estimate it started with: its program's prior (0: none)
    program: str = ""    # its program when it entered sched_ext (a fork: the parent's name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProgramPrior:
    """One program's entry of the policy's `prog_est` map (struct freq_prior)."""
    program: str
    est_ns: int          # the util_est rule over its tasks' first activations
    tasks: int           # first activations folded in


def _comm(raw) -> str:
    """A kernel comm (char[16], NUL-padded; ctypes gives bytes or an array) as text."""
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace")


class FreqSlots:
    """The two table slots, the control word and the per-CPU state of one loaded policy."""

    def __init__(self, slots: _MapLike, ctl: _MapLike, state: _MapLike | None, table_t: type, ctl_t: type,
                 cpu_t: type | None, limits: TableLimits) -> None:
        if slots.value_size != ctypes.sizeof(table_t) or slots.max_entries != 2:
            raise LayoutError(f"table map is not two struct {TABLE_STRUCT} slots; rebuild the policy")
        if ctl.value_size != ctypes.sizeof(ctl_t):
            raise LayoutError(f"control map does not hold a struct {CTL_STRUCT}; rebuild the policy")
        if len(table_t().perf) != limits.util_buckets or len(table_t().perf[0]) != limits.rq_buckets:
            raise LayoutError(f"struct {TABLE_STRUCT} and enum {LIMIT_ENUM} disagree; rebuild the policy")
        if state is not None and cpu_t is not None and state.value_size != ctypes.sizeof(cpu_t):
            raise LayoutError(f"state map does not hold struct {CPU_STRUCT}; rebuild the policy")
        self.slots, self.ctl, self.state = slots, ctl, state
        self._table_t, self._ctl_t, self._cpu_t = table_t, ctl_t, cpu_t
        self.limits = limits
        self._writer = SlotWriter(self.slots)
        self.tasks: Any = None          # the task_est map and struct freq_task (from_object), when the policy has them
        self._task_t: type | None = None
        self.priors: Any = None         # the prog_est map and struct freq_prior, when the policy has them
        self._prior_t: type | None = None

    @classmethod
    def from_object(cls, obj, spec) -> "FreqSlots":
        """From a loaded (or maps-only) BpfObject and the manifest's [model] spec."""
        btf = obj.btf
        state = obj.map(spec.state_map) if spec.state_map else None
        slots = cls(obj.map(spec.slots_map), obj.map(spec.ctl_map), state, btf.ctypes_type(TABLE_STRUCT),
                    btf.ctypes_type(CTL_STRUCT), btf.ctypes_type(CPU_STRUCT) if state is not None else None,
                    TableLimits.from_enum(btf.enum(LIMIT_ENUM)))
        if TASK_MAP in obj.map_names():
            slots.tasks, slots._task_t = obj.map(TASK_MAP), btf.ctypes_type(TASK_STRUCT)
            if slots.tasks.value_size != ctypes.sizeof(slots._task_t):
                raise LayoutError(f"map {TASK_MAP} does not hold struct {TASK_STRUCT}; rebuild the policy")
        if PRIOR_MAP in obj.map_names():
            slots.priors, slots._prior_t = obj.map(PRIOR_MAP), btf.ctypes_type(PRIOR_STRUCT)
            if slots.priors.value_size != ctypes.sizeof(slots._prior_t):
                raise LayoutError(f"map {PRIOR_MAP} does not hold struct {PRIOR_STRUCT}; rebuild the policy")
        return slots

    # -- reading -------------------------------------------------------------------

    def read_ctl(self) -> dict[str, int]:
        c = self._ctl_t.from_buffer_copy(self.ctl.lookup_u32_key(0))
        return {"active": c.active, "version": c.version, "swaps": c.swaps}

    def read_slot(self, slot: int) -> Any:
        return self._table_t.from_buffer_copy(self.slots.lookup_u32_key(slot))

    def _decode(self, raw: Any) -> FreqTable | None:
        lim = self.limits
        if raw.magic != lim.magic or raw.util_buckets != lim.util_buckets or raw.rq_buckets != lim.rq_buckets:
            return None
        perf = np.array([[raw.perf[u][r] for r in range(lim.rq_buckets)] for u in range(lim.util_buckets)],
                        dtype=np.int64)
        try:
            return FreqTable(perf, method="live", version=int(raw.version))
        except ModelError:
            return None  # not a table this aios-lab would write; report it as none

    def active_table(self) -> FreqTable | None:
        """The table lookups read now, or None when the active slot holds none."""
        return self._decode(self.read_slot(self.read_ctl()["active"] & 1))

    def cpu_states(self, nr_cpus: int | None = None, retries: int = 100) -> list[CpuState]:
        """Each CPU's last observation and request. An entry is read until two
        copies agree with no update in flight (an even `seq`); one that never
        settles is returned with consistent=False."""
        if self.state is None or self._cpu_t is None:
            raise LayoutError("this policy has no per-CPU state map ([model] state_map)")
        n = min(nr_cpus or _possible_cpus(), self.limits.max_cpus, self.state.max_entries)
        out = []
        for cpu in range(n):
            ok = False
            for _ in range(retries):
                a = self.state.lookup_u32_key(cpu)
                b = self.state.lookup_u32_key(cpu)
                c = self._cpu_t.from_buffer_copy(b)
                if a == b and c.seq % 2 == 0:
                    ok = True
                    break
            out.append(CpuState(cpu=cpu, util=c.util, util_bucket=c.util_bucket, nr_queued=c.nr_queued,
                                rq_bucket=c.rq_bucket, perf=c.perf, request=c.request, perf_cur=c.perf_cur,
                                perf_cap=c.perf_cap, table_version=c.table_version, updates=c.updates,
                                running=bool(c.running), consistent=ok, util_win=c.util_win,
                                util_est=c.util_est, queued_est_ns=getattr(c, "queued_est_ns", 0)))
        return out

    def task_estimate(self, pid: int) -> TaskEstimate | None:
        """The policy's per-task state of `pid` (read through a pidfd), or None
        when it has none (not one of ours, or gone)."""
        if self.tasks is None or self._task_t is None:
            raise LayoutError(f"this policy has no per-task map {TASK_MAP!r}")
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        try:
            raw = self.tasks.lookup(fd.to_bytes(4, "little"))
        finally:
            os.close(fd)
        if raw is None:
            return None
        t = self._task_t.from_buffer_copy(raw)
        return TaskEstimate(pid=pid, est_ns=t.est_ns, last_ns=t.last_ns, act_ns=t.act_ns,
                            activations=t.activations, queued_cpu=None if t.queued_cpu == self.limits.no_cpu else t.queued_cpu,
                            queued_est_ns=t.queued_est_ns, prior_ns=getattr(t, "prior_ns", 0),
                            program=_comm(getattr(t, "prog", b"")))

    def program_priors(self) -> dict[str, ProgramPrior]:
        """Every program's prior in the policy's `prog_est` map, by name."""
        if self.priors is None or self._prior_t is None:
            raise LayoutError(f"this policy has no per-program map {PRIOR_MAP!r}")
        out = {}
        for key, raw in self.priors.items():
            v = self._prior_t.from_buffer_copy(raw)
            name = _comm(key)
            out[name] = ProgramPrior(name, v.est_ns, v.tasks)
        return out

    # -- writing -------------------------------------------------------------------

    def push(self, table: FreqTable, where: str = "table") -> int:
        """Write `table` into the inactive slot and make it active; returns that slot.

        On any error the live table, both slots and the control word are
        left exactly as they were."""
        perf = check_table(table, self.limits, where)
        version = int(table.version)
        live = self.active_table()
        if live is not None and live.version == version and not np.array_equal(live.perf, perf):
            raise ModelError(f"{where}: version {version} is live with different values",
                             hint="give the new table a higher version")
        t = self._table_t()
        t.magic = self.limits.magic
        t.util_buckets = self.limits.util_buckets
        t.rq_buckets = self.limits.rq_buckets
        t.version = version
        for u in range(self.limits.util_buckets):
            for r in range(self.limits.rq_buckets):
                t.perf[u][r] = int(perf[u, r])
        ctl = self.read_ctl()
        target = self._writer.write_inactive(ctl["active"], bytes(t), "table")
        c = self._ctl_t()
        c.active, c.version, c.swaps = target, version, ctl["swaps"] + 1
        self.ctl.update((0).to_bytes(4, "little"), bytes(c))
        self._writer.flipped()
        after = self.read_ctl()
        if after["active"] != target or after["version"] != version:
            raise ModelError(f"the control word reads back {after} after the flip to slot {target}")
        return target

    # -- for `aios-lab status` -----------------------------------------------------

    def status_record(self) -> dict[str, Any]:
        """What lets another process read the live version without BTF."""
        return {"kind": "freq-table", "ctl_map_id": getattr(self.ctl, "id", None),
                "version_offset": self._ctl_t.version.offset, "swaps_offset": self._ctl_t.swaps.offset}


def _possible_cpus() -> int:
    try:
        from ....bpf import num_possible_cpus

        return num_possible_cpus()
    except (AiosError, OSError):  # no libbpf here: the configured CPUs are as good a bound
        return os.cpu_count() or 1
