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
from typing import Any, Callable

from ..bpf import BpfObject, Map
from ..bpf import libbpf as _libbpf
from ..bpf.loader import LiveObject, LoadSpec, attach, prepare
from ..errors import BpfError, BuildError, LayoutError, SchedExtError, SchedulerEjected
from . import sched_ext
from .policy import Policy
from .sched_ext import ExitInfo
from .status import RECORD_DIR, DeployRecord, _record_path

EXIT_VAR = "aios_exit"
EXIT_STRUCT = "aios_exit_info"


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

    def read() -> tuple[int, ExitInfo | None]:
        """(number of exits so far, the latest one): a loaded object can go
        live again, so an exit is news only if the count moved."""
        raw = bss.lookup((0).to_bytes(4, "little"))
        if raw is None:
            return 0, None
        rec = ctype.from_buffer_copy(raw[var.offset:var.offset + ctypes.sizeof(ctype)])
        if rec.nr_exits == 0:
            return 0, None
        return rec.nr_exits, ExitInfo(
            kind=rec.kind, exit_cpu=rec.exit_cpu, exit_code=rec.exit_code, flags=rec.flags,
            reason=bytes(rec.reason).split(b"\0")[0].decode(errors="replace"),
            msg=bytes(rec.msg).split(b"\0")[0].decode(errors="replace"),
            dump=bytes(getattr(rec, "dump", b"")).split(b"\0")[0].decode(errors="replace"),
            # objects built before the field existed (older registry blobs) lack it
            at_ns=int(getattr(rec, "at_ns", 0)))
    return read


def _write_topology(obj: BpfObject, policy: Policy) -> None:
    """Fill the policy's u32[NR] cpu -> LLC / node rodata arrays from sysfs.

    CPUs sysfs says nothing about get 0, i.e. all alike: a policy then sees
    one LLC / one node, which is the truth as far as anyone can tell."""
    if not policy.topology:
        return
    from ..telemetry.topology import CpuTopology

    topo = CpuTopology.read()
    for what, var in policy.topology.items():
        size = len(obj.get_rodata_raw(var))
        nr = size // 4
        if topo.cpus and max(topo.cpus) >= nr:
            raise SchedExtError(f"policy {policy.name} handles CPUs 0..{nr - 1}, this machine has CPU {max(topo.cpus)}")
        ids = topo.llc if what == "llc" else topo.node
        obj.set_rodata_raw(var, b"".join(int(ids.get(c, 0)).to_bytes(4, "little") for c in range(nr)))


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
        self._live: LiveObject | None = None
        self._exits_seen = 0    # exits recorded by earlier attachments of this object
        # Written into the status record; before_attach may fill it.
        self.record_extra: dict[str, Any] = {}

    # -- start -----------------------------------------------------------------------------

    def start(self, enable_timeout_s: float = 10.0) -> "Deployment":
        """prepare() then go_live(); on any error nothing stays loaded."""
        try:
            self.prepare()
            self.go_live(enable_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def prepare(self) -> "Deployment":
        """Load the policy (the kernel verifier runs here) without attaching
        it: a standby that go_live() puts on the CPUs in one attach. Needs no
        free sched_ext: the last known good policy is prepared while the
        candidate runs."""
        sched_ext.require_privileges()
        sched_ext.require()
        sched_ext.require_kfuncs(list(self.policy.requires.get("kfuncs", [])))
        _libbpf.require_struct_ops_link()
        try:
            self._live = prepare(self._spec(), configure=self._configure, before_attach=self._loaded)
        except BaseException:
            self.stats, self._read_exit = None, None    # prepare() closed the object: nothing to read
            raise
        self.obj, self.load_s = self._live.obj, self._live.load_s
        return self

    def go_live(self, enable_timeout_s: float = 10.0, free_timeout_s: float = 0.0) -> "Deployment":
        """Attach the prepared object and wait until the kernel says it is
        enabled. `free_timeout_s`: how long a scheduler still being disabled
        (just ejected) may take to go first. On failure the link is gone and
        the object stays loaded."""
        if self.obj is None:
            raise SchedExtError(f"{self.policy.name} is not prepared (or was stopped)")
        if self.link is not None:
            return self
        sched_ext.wait_free(free_timeout_s)
        self._exits_seen = self._read_exit()[0] if self._read_exit else 0
        self.final_exit = None
        attach(self._live, self._spec())
        self.link = self._live.links.pop(self.policy.struct_ops)
        try:
            t1 = time.monotonic()
            self._wait_enabled(enable_timeout_s)
            self.attach_s = self._live.attach_s + time.monotonic() - t1
            self._write_record()
        except BaseException:
            self.detach()
            raise
        return self

    def _spec(self) -> LoadSpec:
        return LoadSpec(self.policy.object_path, rodata=self.tunables, struct_ops=self.policy.struct_ops)

    def _configure(self, obj: BpfObject) -> None:
        """Between open and load: the topology arrays, then the caller's
        before_load (e.g. the verifier shortening the watchdog)."""
        _write_topology(obj, self.policy)
        if self._before_load is not None:
            self._before_load(obj)

    def _loaded(self, obj: BpfObject) -> None:
        self.stats = _StatsReader.for_policy(self.policy, obj)
        self._read_exit = _exit_reader(obj)
        if self._before_attach is not None:
            self._before_attach(obj)

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
            time.sleep(0.002)   # a rollback's time is measured up to here

    # -- while running ---------------------------------------------------------------------

    def exit_info(self) -> ExitInfo | None:
        """The kernel's exit record of the current attachment, if it ended."""
        if not self._read_exit:
            return None
        count, info = self._read_exit()
        return info if count > self._exits_seen else None

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

    def detach(self, disable_timeout_s: float = 10.0) -> ExitInfo | None:
        """Destroy the link and wait until the kernel has let go; the object
        stays loaded and can go live again (a hotplug restart, a standby
        kept warm). Safe to call more than once."""
        if self.link is not None:
            self.link.destroy()
            self.link = None
            deadline = time.monotonic() + disable_timeout_s
            while time.monotonic() < deadline:
                st = sched_ext.read_state()
                if st.state == "disabled" or st.ops != self.policy.ops_name:
                    break
                time.sleep(0.01)
            self._remove_record()
        if self._read_exit is not None:
            try:
                self.final_exit = self.exit_info() or self.final_exit
            except BpfError:
                pass
        return self.final_exit

    @property
    def live(self) -> bool:
        return self.link is not None

    def stop(self, disable_timeout_s: float = 10.0) -> ExitInfo | None:
        """Detach and release everything; safe to call more than once."""
        try:
            self.detach(disable_timeout_s)
        finally:
            self._read_exit = None
            self.stats = None
            if self.obj is not None:
                self.obj.close()
                self.obj = None
            self._live = None
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
