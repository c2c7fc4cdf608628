"""Stage 2, kernel verifier: load the policy into a sched_ext kernel and
keep the verifier's own statistics for every program.

Each program is loaded with log_level BPF_LOG_STATS (4) into a buffer of our
own, so a successful load costs no instruction dump; the verifier's summary
lines ("processed N insns (limit 1000000) max_states_per_insn M total_states
T peak_states P ...", "verification time U usec") are parsed, and
bpf_prog_info adds what the kernel kept (verified_insns, JIT and xlated
sizes). When the load fails, the object is loaded once more the ordinary way
so that libbpf retries at log level 1 and the verifier says why.
"""
from __future__ import annotations

import ctypes
import re
import time
from typing import Any

from ...bpf import BpfObject, libbpf
from ...bpf.object import verifier_complaint
from ...errors import BpfLoadError
from ...sched.policy import Policy
from . import criteria
from .report import Check, StageReport

BPF_LOG_STATS = 4
LOG_BUF = 1 << 16
_PROCESSED = re.compile(r"processed (\d+) insns \(limit (\d+)\) max_states_per_insn (\d+) "
                        r"total_states (\d+) peak_states (\d+)")
_TIME = re.compile(r"verification time (\d+) usec")
_STACK = re.compile(r"stack depth ([\d+]+)")
_FAILED_PROG = re.compile(r"prog '([^']+)': (?:BPF program load failed|failed to load)")


def parse_stats(log: str) -> dict[str, Any]:
    """The verifier's summary lines as numbers (absent ones are left out)."""
    out: dict[str, Any] = {}
    m = _PROCESSED.search(log)
    if m:
        out.update(insns_processed=int(m.group(1)), insn_limit=int(m.group(2)),
                   max_states_per_insn=int(m.group(3)), total_states=int(m.group(4)), peak_states=int(m.group(5)))
    m = _TIME.search(log)
    if m:
        out["verification_time_us"] = int(m.group(1))
    m = _STACK.search(log)
    if m:
        out["stack_depth"] = [int(x) for x in m.group(1).split("+") if x]
    return out


def _open(policy: Policy, tunables: dict[str, Any]) -> BpfObject:
    from ...sched.deployment import _write_topology

    obj = BpfObject.open(policy.object_path)
    obj.set_rodata_many(tunables)
    _write_topology(obj, policy)
    return obj


def _rejection(policy: Policy, tunables: dict[str, Any], first: BpfLoadError) -> dict[str, Any]:
    """Why the load failed, from an ordinary second load (log level 1)."""
    with _open(policy, tunables) as obj:
        try:
            obj.load()
        except BpfLoadError as exc:
            failed = [m.group(1) for ln in exc.log for m in [_FAILED_PROG.search(ln)] if m]
            complaint = verifier_complaint(exc.log)
            prog = failed[0] if failed else None
            return {"errno": exc.errno, "program": prog, "complaint": complaint,
                    "error": f"prog '{prog}': {complaint}" if complaint else exc.one_line(),
                    "log_tail": [ln for ln in exc.log if ln.strip()][-40:]}
    return {"errno": first.errno, "error": first.one_line(), "program": None,
            "log_tail": first.log[-40:], "note": "the second load succeeded: the first failure did not repeat"}


def _growth_check(programs: dict[str, dict], parent: dict[str, Any]) -> Check:
    crit = (f"no program's processed instructions grow beyond x{criteria.MAX_INSN_GROWTH} of the parent "
            f"report's (and by more than {criteria.INSN_GROWTH_SLACK})")
    prev = {n: p.get("insns_processed") for n, p in parent.items() if isinstance(p, dict)}
    grown = []
    for name, p in programs.items():
        old, new = prev.get(name), p.get("insns_processed")
        if old is None or new is None:
            continue
        if new > old * criteria.MAX_INSN_GROWTH and new - old > criteria.INSN_GROWTH_SLACK:
            grown.append(f"{name} {old} -> {new} insns")
    ev = {"parent": {n: prev.get(n) for n in programs}, "now": {n: p.get("insns_processed") for n, p in programs.items()}}
    return Check("insns_vs_parent", not grown, crit, ev,
                 ("verifier work regressed against the parent: " + ", ".join(grown)) if grown else "")


def run(policy: Policy, tunables: dict[str, Any], parent: dict[str, Any] | None = None) -> StageReport:
    t0 = time.monotonic()
    crit_load = "the kernel verifier accepts every program of the object"
    limit = int(criteria.MAX_INSN_FRACTION * criteria.INSN_LIMIT)
    crit_insns = (f"no program needs more than {criteria.MAX_INSN_FRACTION:.0%} of the verifier's "
                  f"{criteria.INSN_LIMIT:,}-instruction limit ({limit:,} processed)")
    obj = _open(policy, tunables)
    bufs: dict[str, ctypes.Array] = {}
    try:
        for prog in obj.programs():
            if not libbpf.func("bpf_program__autoload")(prog.ptr):
                continue
            buf = bufs[prog.name] = ctypes.create_string_buffer(LOG_BUF)
            libbpf.func("bpf_program__set_log_buf")(prog.ptr, ctypes.addressof(buf), LOG_BUF)
            libbpf.func("bpf_program__set_log_level")(prog.ptr, BPF_LOG_STATS)
        t_load = time.monotonic()
        try:
            obj.load()
        except BpfLoadError as exc:
            load_s = time.monotonic() - t_load
            obj.close()
            ev = _rejection(policy, tunables, exc)
            ev["load_s"] = round(load_s, 3)
            reason = "the kernel verifier rejected the object: " + ev["error"]
            return StageReport.from_checks("verifier", [Check("load", False, crit_load, ev, reason)],
                                           time.monotonic() - t0)
        load_s = time.monotonic() - t_load
        programs: dict[str, dict[str, Any]] = {}
        for prog in obj.programs():
            if prog.name not in bufs or prog.fd < 0:
                continue
            info = prog.run_stats()
            stats = parse_stats(bufs[prog.name].value.decode(errors="replace"))
            programs[prog.name] = {"section": prog.section, **stats, "verified_insns": info["verified_insns"],
                                   "jited_bytes": info["jited_prog_len"], "xlated_bytes": info["xlated_prog_len"]}
    finally:
        obj.close()
    checks = [Check("load", True, crit_load, {"load_s": round(load_s, 3), "programs": programs})]
    worst = max(programs.items(), key=lambda kv: kv[1].get("insns_processed", kv[1]["verified_insns"]),
                default=(None, {}))
    worst_n = worst[1].get("insns_processed", worst[1].get("verified_insns", 0)) if worst[0] else 0
    checks.append(Check("insn_budget", worst_n <= limit, crit_insns,
                        {"limit": limit, "worst_program": worst[0], "worst_insns": worst_n},
                        "" if worst_n <= limit else
                        f"program {worst[0]} needs {worst_n:,} processed instructions, over {limit:,}"))
    if parent:
        checks.append(_growth_check(programs, parent))
    return StageReport.from_checks("verifier", checks, time.monotonic() - t0)
