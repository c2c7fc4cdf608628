"""Attach a sched_ext policy, watch it, detach it cleanly.

Lifecycle (after libbpf-bootstrap): check privileges and kernel -> open ->
set rodata tunables -> load -> attach the struct_ops map through a link ->
wait until the kernel says enabled -> poll stats / watch for ejection ->
destroy the link -> wait until disabled -> read the exit info.

The scheduler is attached through a struct_ops *link* owned by this process
and never pinned, so if the controller dies, even by SIGKILL, the kernel
drops the link and disables the scheduler; nothing is left attached. A small
record in /run/aios-lab lets `aios-lab status` find the live maps by their
kernel ids; ids of freed maps cannot be opened, so a stale record is detected
and removed, never trusted.
"""
from __future__ import annotations

import ctypes
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import sched_ext
from .bpf import BpfObject, Map
from .bpf import libbpf as _libbpf
from .errors import BpfError, BuildError, LayoutError, SchedExtError, SchedulerEjected
from .policy import Policy
from .sched_ext import ExitInfo

RECORD_DIR = Path(os.environ.get("AIOS_LAB_RUN_DIR", "/run/aios-lab"))
EXIT_VAR = "aios_exit"
EXIT_STRUCT = "aios_exit_info"


def _record_path() -> Path:
    return RECORD_DIR / "deployed.json"


class _StatsReader:
    """Sums a policy's per-CPU stats array; names come from the C enum in BTF."""

    def __init__(self, stats_map: Map, names: list[str]) -> None:
        self.map = stats_map
        self.names = names

    @classmethod
    def for_policy(cls, policy: Policy, obj: BpfObject) -> "_StatsReader | None":
        if policy.stats is None:
            return None
        enum = obj.btf.enum(policy.stats.enum)
        # Counters are the members named PREFIX*, numbered 0..n-1; anything
        # else (the FOO_NR_STATS sentinel) only sizes the array.
        named = {idx: full.removeprefix(policy.stats.prefix) for full, idx in enum.items()
                 if full.startswith(policy.stats.prefix)}
        if sorted(named) != list(range(len(named))):
            raise LayoutError(f"enum {policy.stats.enum}: {policy.stats.prefix}* values are not 0..{len(named) - 1}")
        stats_map = obj.map(policy.stats.map)
        if stats_map.max_entries < len(named):
            raise LayoutError(f"map {policy.stats.map} has {stats_map.max_entries} slots for {len(named)} stats")
        return cls(stats_map, [named[i] for i in range(len(named))])

    def read(self) -> dict[str, int]:
        return {name: self.map.sum_percpu_u64(i.to_bytes(4, "little")) for i, name in enumerate(self.names)}


def _exit_reader(obj: BpfObject):
    """Return a function that reads struct aios_exit_info from the object's .bss."""
    bss = obj.map(".bss")
    var = obj.btf.datasec(".bss").get(EXIT_VAR)
    if var is None:
        raise BuildError(f"{obj.path} has no {EXIT_VAR} in .bss",
                         hint="policies must include aios/scx.bpf.h and call aios_record_exit() in ops.exit")
    ctype = obj.btf.ctypes_type(EXIT_STRUCT)

    def read() -> ExitInfo | None:
        raw = bss.lookup((0).to_bytes(4, "little"))
        if raw is None:
            return None
        rec = ctype.from_buffer_copy(raw[var.offset:var.offset + ctypes.sizeof(ctype)])
        if rec.nr_exits == 0:
            return None
        return ExitInfo(kind=rec.kind, exit_cpu=rec.exit_cpu, exit_code=rec.exit_code, flags=rec.flags,
                        reason=bytes(rec.reason).split(b"\0")[0].decode(errors="replace"),
                        msg=bytes(rec.msg).split(b"\0")[0].decode(errors="replace"))
    return read


def _write_topology(obj: BpfObject, policy: Policy) -> None:
    """Fill the policy's u32[NR] cpu -> LLC / node rodata arrays from sysfs.

    CPUs sysfs says nothing about get 0, i.e. all alike: a policy then sees
    one LLC / one node, which is the truth as far as anyone can tell."""
    if not policy.topology:
        return
    from .telemetry.topology import CpuTopology

    topo = CpuTopology.read()
    for what, var in policy.topology.items():
        size = len(obj.get_rodata_raw(var))
        nr = size // 4
        if topo.cpus and max(topo.cpus) >= nr:
            raise SchedExtError(f"policy {policy.name} handles CPUs 0..{nr - 1}, this machine has CPU {max(topo.cpus)}")
        ids = topo.llc if what == "llc" else topo.node
        obj.set_rodata_raw(var, b"".join(int(ids.get(c, 0)).to_bytes(4, "little") for c in range(nr)))


@dataclass
class DeployRecord:
    pid: int
    policy: str
    ops_name: str
    stats_map_id: int | None
    stat_names: list[str]
    started: float
    tunables: dict[str, Any]
    # Set by the policy's session: {"model": {"ctl_map_id", "version_offset",
    # "swaps_offset", "kind"}} lets `status` read the live model version.
    extra: dict[str, Any] = field(default_factory=dict)


class Deployment:
    """One policy attached by this process. Use as a context manager."""

    def __init__(self, policy: Policy, tunables: dict[str, Any] | None = None,
                 before_attach: Callable[[BpfObject], None] | None = None,
                 before_load: Callable[[BpfObject], None] | None = None) -> None:
        """`before_attach` runs after load and before the scheduler goes live:
        a learning policy pushes its model there, so that its first decision
        already has one. `before_load` runs after the tunables are written and
        before load: the verifier shortens the struct_ops watchdog there."""
        if policy.kind != "sched_ext":
            raise SchedExtError(f"policy {policy.name} is a {policy.kind} policy, not sched_ext")
        self.policy = policy
        self.tunables = policy.resolve_tunables({k: v for k, v in (tunables or {}).items()})
        self.obj: BpfObject | None = None
        self.link = None
        self.stats: _StatsReader | None = None
        self._read_exit = None
        self.attach_s: float | None = None
        self.load_s: float | None = None
        self.final_exit: ExitInfo | None = None
        self._before_attach = before_attach
        self._before_load = before_load
        # Written into the status record; before_attach may fill it.
        self.record_extra: dict[str, Any] = {}

    # -- start -----------------------------------------------------------------------------

    def start(self, enable_timeout_s: float = 10.0) -> "Deployment":
        sched_ext.require_privileges()
        sched_ext.require()
        sched_ext.require_kfuncs(list(self.policy.requires.get("kfuncs", [])))
        _libbpf.require_struct_ops_link()
        sched_ext.require_free()
        path = self.policy.object_path
        if not path.exists():
            raise BuildError(f"{path} is not built", hint="run `aios-lab build`")
        try:
            t0 = time.monotonic()
            self.obj = BpfObject.open(path)
            self.obj.set_rodata_many(self.tunables)
            _write_topology(self.obj, self.policy)
            if self._before_load is not None:
                self._before_load(self.obj)
            self.obj.load()
            self.load_s = time.monotonic() - t0
            self.stats = _StatsReader.for_policy(self.policy, self.obj)
            self._read_exit = _exit_reader(self.obj)
            if self._before_attach is not None:
                self._before_attach(self.obj)
            t1 = time.monotonic()
            self.link = self.obj.attach_struct_ops(self.policy.struct_ops)
            self._wait_enabled(enable_timeout_s)
            self.attach_s = time.monotonic() - t1
            self._write_record()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_enabled(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.check()
            st = sched_ext.read_state()
            if st.state == "enabled" and st.ops == self.policy.ops_name:
                return
            if time.monotonic() > deadline:
                raise SchedExtError(f"{self.policy.name} attached but sched_ext stayed {st.state} "
                                    f"(ops={st.ops}) for {timeout_s:.0f}s")
            time.sleep(0.01)

    # -- while running ---------------------------------------------------------------------

    def exit_info(self) -> ExitInfo | None:
        return self._read_exit() if self._read_exit else None

    def check(self) -> None:
        """Raise SchedulerEjected if the kernel has disabled our scheduler."""
        info = self.exit_info()
        if info is not None:
            # The kernel records the exit before the state flips to disabled.
            self.final_exit = info
            raise SchedulerEjected(f"the kernel ejected {self.policy.name}: {info.one_line()}", info)
        st = sched_ext.read_state()
        if self.link is not None and st.state == "disabled":
            # Disabled without an exit record: give ops.exit a moment.
            time.sleep(0.05)
            info = self.exit_info()
            self.final_exit = info
            what = info.one_line() if info else "no exit info recorded"
            raise SchedulerEjected(f"the kernel disabled {self.policy.name}: {what}", info)

    def read_stats(self) -> dict[str, int]:
        return self.stats.read() if self.stats else {}

    # -- stop ------------------------------------------------------------------------------

    def stop(self, disable_timeout_s: float = 10.0) -> ExitInfo | None:
        """Detach and release everything; safe to call more than once."""
        try:
            if self.link is not None:
                self.link.destroy()
                self.link = None
                deadline = time.monotonic() + disable_timeout_s
                while time.monotonic() < deadline:
                    st = sched_ext.read_state()
                    if st.state == "disabled" or st.ops != self.policy.ops_name:
                        break
                    time.sleep(0.01)
            if self._read_exit is not None:
                try:
                    self.final_exit = self.exit_info() or self.final_exit
                except BpfError:
                    pass
        finally:
            self._read_exit = None
            self.stats = None
            if self.obj is not None:
                self.obj.close()
                self.obj = None
            self._remove_record()
        return self.final_exit

    def __enter__(self) -> "Deployment":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the record `aios-lab status` reads ---------------------------------------------------

    def _write_record(self) -> None:
        rec = DeployRecord(pid=os.getpid(), policy=self.policy.name, ops_name=self.policy.ops_name,
                           stats_map_id=self.stats.map.id if self.stats else None,
                           stat_names=self.stats.names if self.stats else [], started=time.time(),
                           tunables=self.tunables, extra=self.record_extra)
        RECORD_DIR.mkdir(parents=True, exist_ok=True)
        tmp = _record_path().with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec.__dict__, indent=2))
        os.replace(tmp, _record_path())

    def _remove_record(self) -> None:
        try:
            rec = json.loads(_record_path().read_text())
            if rec.get("pid") == os.getpid():
                _record_path().unlink()
        except (OSError, ValueError):
            pass


def read_record() -> DeployRecord | None:
    try:
        data = json.loads(_record_path().read_text())
        return DeployRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def live_status() -> dict:
    """sched_ext state plus, when an aios-lab policy is attached, its stats.

    The record is trusted only if its process is alive, sched_ext names the
    same ops, and the stats map id still opens; otherwise it is removed.
    """
    st = sched_ext.read_state()
    out: dict[str, Any] = {"sched_ext": st.describe(), "policy": None}
    rec = read_record()
    if rec is None:
        return out
    alive = _pid_alive(rec.pid)
    if not alive or st.state != "enabled" or st.ops != rec.ops_name:
        try:
            _record_path().unlink()
        except OSError:
            pass
        out["stale_record_removed"] = True
        return out
    policy: dict[str, Any] = {"name": rec.policy, "pid": rec.pid, "uptime_s": round(time.time() - rec.started, 1),
                              "tunables": rec.tunables}
    if rec.stats_map_id is not None:
        try:
            with Map.from_id(rec.stats_map_id) as m:
                policy["stats"] = {n: m.sum_percpu_u64(i.to_bytes(4, "little")) for i, n in enumerate(rec.stat_names)}
        except BpfError as exc:
            policy["stats_error"] = exc.one_line()
    model = _model_status(rec.extra.get("model"))
    if model is not None:
        policy["model"] = model
    out["policy"] = policy
    return out


def _model_status(spec: Any) -> dict[str, Any] | None:
    """The live model's version from its control map: a u64 read at the offset
    the session recorded, so no BTF has to be parsed here."""
    if not isinstance(spec, dict) or not isinstance(spec.get("ctl_map_id"), int):
        return None
    out: dict[str, Any] = {"kind": spec.get("kind")}
    try:
        with Map.from_id(spec["ctl_map_id"]) as m:
            raw = m.lookup((0).to_bytes(4, "little"))
    except BpfError as exc:
        out["error"] = exc.one_line()
        return out
    for key in ("version", "swaps"):
        off = spec.get(f"{key}_offset")
        if isinstance(raw, bytes) and isinstance(off, int) and 0 <= off <= len(raw) - 8:
            out[key] = int.from_bytes(raw[off:off + 8], "little")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
