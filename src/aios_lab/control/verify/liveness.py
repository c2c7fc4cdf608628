"""Stage 3, liveness: attach the policy under a stress mix and a CPU hotplug
cycle, with a short watchdog, and judge it only by what the kernel says.

The watchdog is shortened through the struct_ops map's own timeout_ms before
load (a policy that sets a shorter one keeps it). A policy without
ops.cpu_online/cpu_offline is disabled by the kernel on hotplug with a
restart code (SCX_ECODE_ACT_RESTART, kind < 1024); like `deploy`, the stage
attaches it again and counts it. Anything else that ends the policy fails.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import time
from typing import Any

from ...sched import sched_ext
from ...bpf import BpfObject, libbpf
from ...sched.deployment import Deployment
from ...errors import AiosError, SchedulerEjected
from ...sched.policy import Policy
from ..canary import read_events
from . import criteria
from .report import Check, StageReport
from .stress import StressMix, hotplug_cpu, set_online

POLL_S = 0.1
# The verifier's own priority while it watches: with the stress mix running
# on the CPUs left after one went offline, re-attaching at nice 0 took
# 37-41 s under TCG (measured). Not higher: at nice -15 (weight 29154) it
# starved khugepaged (nice 19, weight 15) under EEVDF into an RCU stall
# report on a loaded host.
WATCHER_NICE = -5


def _dmesg() -> list[str]:
    proc = subprocess.run(["dmesg"], capture_output=True, text=True)
    return proc.stdout.splitlines()


class _Watchdog:
    """before_load hook: the struct_ops map's timeout_ms, shortened."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.compiled_ms: int | None = None
        self.used_ms: int | None = None

    def __call__(self, obj: BpfObject) -> None:
        member = obj.btf.struct("sched_ext_ops").member("timeout_ms")
        m = libbpf.func("bpf_object__find_map_by_name")(obj.ptr, self.policy.struct_ops.encode())
        size = ctypes.c_size_t()
        data = libbpf.func("bpf_map__initial_value")(m, ctypes.byref(size)) if m else None
        if not data or member.offset + 4 > size.value:
            return  # this libbpf cannot show the struct_ops data: the policy's own timeout stays
        cur = ctypes.c_uint32.from_address(data + member.offset)
        self.compiled_ms = int(cur.value)
        if not 0 < self.compiled_ms <= criteria.WATCHDOG_MS:
            cur.value = criteria.WATCHDOG_MS
        self.used_ms = int(cur.value)


class _Run:
    """One liveness run: attachments, ejections, event samples."""

    def __init__(self, policy: Policy, tunables: dict[str, Any]) -> None:
        self.policy, self.tunables = policy, tunables
        self.watchdog = _Watchdog(policy)
        self.dep: Deployment | None = None
        self.attaches = 0
        self.restarts: list[dict] = []
        self.fatal: dict | None = None
        self.events_by_attach: list[tuple[dict[str, int] | None, dict[str, int]]] = []
        self.attach_s: list[float] = []
        self.seq: list[int | None] = []
        self.phase = "attach"

    def attach(self) -> None:
        self.dep = Deployment(self.policy, self.tunables, before_load=self.watchdog)
        before = sched_ext.read_state().enable_seq
        self.dep.start()
        self.attaches += 1
        self.attach_s.append(round(self.dep.attach_s or 0.0, 3))
        self.seq.append((sched_ext.read_state().enable_seq or 0) - (before or 0))
        self.events_by_attach.append((None, {}))

    def poll(self, seconds: float, stress: StressMix | None) -> bool:
        """Watch for `seconds`; False once the policy is gone for good."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self.check():
                return False
            if stress is not None:
                stress.step()
            time.sleep(POLL_S)
        return self.check()

    def check(self) -> bool:
        try:
            self.dep.check()
        except SchedulerEjected as exc:
            info = exc.exit_info
            self.dep.stop()
            if info is not None and info.should_restart:
                self.restarts.append(info.describe())
                self.attach()
                return True
            self.fatal = dict(info.describe() if info else {"kind": None, "reason": str(exc)}, phase=self.phase)
            return False
        ev = read_events()
        # Only a sample taken while the policy was still enabled counts: the
        # kernel enters bypass mode as it starts disabling (state "disabling").
        if ev is not None and sched_ext.read_state().state == "enabled":
            first, _last = self.events_by_attach[-1]
            self.events_by_attach[-1] = (first or ev, ev)
        return True

    def event_deltas(self) -> list[dict[str, int]]:
        """Per attachment, what each counter did while the policy ran (the
        first sample is taken once it is enabled: enabling itself passes
        through bypass mode and counts it)."""
        return [{k: v - first.get(k, 0) for k, v in last.items()} if first else {}
                for first, last in self.events_by_attach]


def run(policy: Policy, tunables: dict[str, Any]) -> StageReport:
    t0 = time.monotonic()
    sched_ext.require_free()
    dmesg_before = len(_dmesg())
    seq0 = sched_ext.read_state().enable_seq
    r = _Run(policy, tunables)
    stress = StressMix()
    cpu = hotplug_cpu()
    hotplug: dict[str, Any] = {"cpu": cpu}
    final_exit = None
    state_before_detach: dict[str, Any] = {"state": None}
    old_nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        stress.start()
        os.setpriority(os.PRIO_PROCESS, 0, WATCHER_NICE)
        r.attach()
        r.phase = "stress"
        alive = r.poll(criteria.STRESS_S, stress)
        if alive and cpu is not None:
            r.phase = "cpu hotplug"
            t_h = time.monotonic()
            set_online(cpu, False)
            alive = r.poll(1.0, None)
            set_online(cpu, True)
            hotplug["offline_online_s"] = round(time.monotonic() - t_h, 3)
            alive = alive and r.poll(1.0, None)
        if alive:
            r.phase = "settle"
            r.poll(criteria.SETTLE_S, stress)
        state_before_detach = sched_ext.read_state().describe()
    except SchedulerEjected as exc:  # ejected while attaching
        info = exc.exit_info
        r.fatal = dict(info.describe() if info else {"kind": None, "reason": exc.one_line()}, phase=r.phase)
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, old_nice)
        stress.stop()
        if cpu is not None:
            try:
                set_online(cpu, True)
            except OSError:
                pass
        if r.dep is not None:
            try:
                final_exit = r.dep.stop()
            except AiosError:
                final_exit = None
    state_after = sched_ext.read_state()
    seq1 = state_after.enable_seq
    new_dmesg = _dmesg()[dmesg_before:]
    scx_lines = [ln for ln in new_dmesg if "sched_ext" in ln]
    bad_lines = [ln for ln in scx_lines if any(w.lower() in ln.lower() for w in criteria.DMESG_ERROR_WORDS)]
    events_total: dict[str, int] = {}
    deltas = r.event_deltas()
    for ev in deltas:
        for k, v in ev.items():
            events_total[k] = events_total.get(k, 0) + v
    over = {k: v for k, v in events_total.items() if v > criteria.EVENT_LIMITS.get(k, float("inf"))}

    checks = []
    fatal = r.fatal
    checks.append(Check(
        "stays_enabled", fatal is None and state_before_detach["state"] == "enabled",
        "sched_ext stays enabled with the policy through the stress mix and the hotplug cycle; only a "
        "restart the kernel asks for (kind < 1024 with SCX_ECODE_ACT_RESTART) is followed by attaching again",
        {"attaches": r.attaches, "restarts": r.restarts, "ejection": fatal, "watchdog_ms": r.watchdog.used_ms,
         "compiled_timeout_ms": r.watchdog.compiled_ms, "state_before_detach": state_before_detach,
         "hotplug": hotplug, "stress": stress.describe(), "attach_s": r.attach_s},
        "" if fatal is None else
        f"the kernel ejected the policy during {fatal['phase']}: {fatal.get('reason') or fatal.get('kind_name')} "
        f"(kind {fatal.get('kind')})" + (f": {fatal.get('msg')}" if fatal.get("msg") else "")))
    kinds = [x["kind"] for x in r.restarts] + ([fatal["kind"]] if fatal and fatal.get("kind") is not None else [])
    checks.append(Check("no_error_exit", not any(k >= sched_ext.ERROR_KIND_MIN for k in kinds),
                        f"no exit of kind >= {sched_ext.ERROR_KIND_MIN} (an error exit)", {"exit_kinds": kinds},
                        "" if not any(k >= sched_ext.ERROR_KIND_MIN for k in kinds) else
                        f"error exit kind {max(kinds)} ({sched_ext.EXIT_KINDS.get(max(kinds), '?')})"))
    seq_ok = seq0 is not None and seq1 is not None and seq1 - seq0 == r.attaches and all(s == 1 for s in r.seq)
    checks.append(Check("enable_seq", seq_ok, "enable_seq rises by exactly one per attachment",
                        {"before": seq0, "after": seq1, "attaches": r.attaches, "per_attach": r.seq},
                        "" if seq_ok else f"enable_seq went {seq0} -> {seq1} over {r.attaches} attachment(s)"))
    checks.append(Check("events", not over,
                        "sched_ext's event counters, summed over the attachments, stay within "
                        + ", ".join(f"{k} <= {v}" for k, v in criteria.EVENT_LIMITS.items()),
                        {"total": events_total, "per_attach": deltas, "limits": criteria.EVENT_LIMITS},
                        "" if not over else "event counters over their limits: "
                        + ", ".join(f"{k}={v}" for k, v in over.items())))
    checks.append(Check("dmesg", not bad_lines,
                        "no kernel log line about sched_ext mentions " + "/".join(criteria.DMESG_ERROR_WORDS),
                        {"sched_ext_lines": scx_lines[-30:]},
                        "" if not bad_lines else f"kernel log: {bad_lines[0].strip()}"))
    detached = state_after.state == "disabled" and (final_exit is None or final_exit.kind == 64 or fatal)
    checks.append(Check("detach", bool(detached), "detaching returns sched_ext to disabled",
                        {"state": state_after.describe(),
                         "final_exit": final_exit.describe() if final_exit else None},
                        "" if detached else f"after detaching sched_ext is {state_after.state}"))
    return StageReport.from_checks("liveness", checks, time.monotonic() - t0)
