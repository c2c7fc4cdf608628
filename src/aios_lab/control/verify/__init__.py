"""`aios-lab verify`: a staged verifier with written pass criteria.

static (host) -> kernel verifier -> liveness -> performance (the last
three need a sched_ext kernel). The criteria are in `criteria` and docs/verifier.md; every stage
records its evidence in a `VerifyReport`. Kernel stages run in this process
on a host with sched_ext, otherwise in one boot of the pinned VM for all the
cases of a call.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...sched import sched_ext
from ...errors import InputError, VmError
from ...sched.policy import get
from . import static, target as target_mod
from .kernel_stages import parse_output, run_case
from .report import KERNEL_STAGES, STAGES, StageReport, VerifyReport, sha256_file

__all__ = ["Case", "verify", "verify_many", "VerifyReport", "STAGES"]

GUEST_BOOT_S = 180      # boot and the guest's Python, generously (TCG on a busy host: 53 s seen)
GUEST_CASE_S = 150      # one case's verifier and liveness stages (fifo: 75 s on a host at load 11)
GUEST_PERF_RUN_S = 20   # one performance run of one arm, its attach included, generously
GUEST_PERF_S = 60       # the performance stage's placement control and workload preparation


@dataclass
class Case:
    policy: str
    overrides: dict[str, Any] = field(default_factory=dict)
    stages: tuple[str, ...] = STAGES
    parent: dict[str, Any] | None = None     # a parent report's verifier programs (insns per program)
    # The performance stage: the deployed policy to compare against as well as
    # EEVDF ({"policy": name, "tunables": {...}}; a registry entry adds
    # "entry" and "folder", where control.stored.materialize wrote it), the
    # workload, runs per arm.
    deployed: dict[str, Any] | None = None
    workload: str | None = None
    runs: int | None = None


def check_stages(stages: tuple[str, ...]) -> None:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError(f"unknown verifier stage(s) {', '.join(unknown)}",
                         hint=f"stages are {', '.join(STAGES)}")


def _check_perf(c: Case) -> None:
    from . import criteria
    from ... import workloads

    if c.runs is not None and c.runs < criteria.PERF_MIN_RUNS:
        raise InputError(f"{c.runs} performance runs per arm is too few",
                         hint=f"give at least {criteria.PERF_MIN_RUNS}")
    if "performance" in c.stages:
        name = c.workload or criteria.PERF_WORKLOAD
        if name not in workloads.discover():  # before a boot, as bad input
            raise InputError(f"no workload named {name!r} for the performance stage",
                             hint=f"known: {', '.join(sorted(workloads.discover()))} (workloads/NAME.toml)")
        if c.deployed is not None:
            from ..stored import deployed_policy

            deployed_policy(c.deployed).resolve_tunables(c.deployed.get("tunables") or {})


def _guest_timeout(specs: list[dict]) -> float:
    from . import criteria

    total = GUEST_BOOT_S
    for s in specs:
        total += GUEST_CASE_S
        if "performance" in s["stages"]:
            arms = 3 if s.get("deployed") else 2
            total += GUEST_PERF_S + GUEST_PERF_RUN_S * arms * (s.get("runs") or criteria.PERF_RUNS)
    return total


def _in_process() -> bool:
    return sched_ext.available() and os.geteuid() == 0


def _kernel_in_vm(cases: list[dict], cpus: int, log: Callable[[str], None], realtime: bool | None) -> list[dict]:
    import json

    from ...vm import runner
    from ...vm.topology import Topology

    env = {k: os.environ[k] for k in ("AIOS_LAB_POLICY_PATH",) if k in os.environ}
    cmd = [sys.executable, "-m", "aios_lab.control.verify.kernel_stages", json.dumps(cases)]
    # A deployed arm written out of the registry may lie under /tmp, which the
    # guest overlays with its own tmpfs: share its folder explicitly.
    arms = sorted({Path(c["deployed"]["folder"]) for c in cases if (c.get("deployed") or {}).get("folder")})
    res = runner.run(cmd, topology=Topology(cpus=cpus), env=env, log=log, timeout_s=_guest_timeout(cases),
                     realtime=realtime, rwdirs=arms)
    got = parse_output(res.output)
    if res.returncode != 0 or len(got) != len(cases):
        raise VmError(f"the guest's verifier run ended with exit {res.returncode} after {len(got)} of "
                      f"{len(cases)} case(s); last output: {res.output.strip()[-400:]}")
    vm = {"accel": res.accel, "tcg": res.tcg, "qemu": res.qemu.get("version"), "boot_wall_s": round(res.wall_s, 2),
          "boot_to_command_s": res.boot_to_command_s, "console": res.report.summary(),
          "console_sched_ext": res.report.sched_ext[-40:]}
    for g in got:
        g["platform"]["boot"] = vm
    return got


def verify_many(cases: list[Case], *, cpus: int = 2, log: Callable[[str], None] | None = None,
                realtime: bool | None = None) -> list[VerifyReport]:
    """Verify every case; the kernel stages of all cases share one boot.
    ``realtime`` runs QEMU under SCHED_RR (vm.runner; None: AIOS_LAB_VM_RT):
    on a busy host with few cores, the only way the performance stage's
    placement control clears its threshold (benchmarks/RESULTS.md, issue 16)."""
    log = log or (lambda m: None)
    for c in cases:
        check_stages(tuple(c.stages))
        _check_perf(c)
    tgt = target_mod.resolve(log)
    reports: list[VerifyReport] = []
    pending: list[tuple[VerifyReport, dict]] = []
    for c in cases:
        pol = get(c.policy)
        rep = VerifyReport(policy=pol.name, tunables={}, artifacts={}, target=tgt.describe())
        values = pol.resolve_tunables({}) if "static" not in c.stages else None
        if "static" in c.stages:
            st, values = static.run(pol, c.overrides, tgt)
            rep.stages.append(st)
        elif c.overrides:
            values = pol.resolve_tunables(c.overrides)
        rep.tunables = values
        rep.artifacts = {"source": sha256_file(pol.source_path), "manifest": sha256_file(pol.folder / "manifest.toml"),
                         "object": sha256_file(pol.object_path) if pol.object_path.exists() else ""}
        kernel = [s for s in KERNEL_STAGES if s in c.stages]
        if kernel and rep.stages and not rep.stages[-1].passed:
            rep.stages += [StageReport(s, False, 0.0, [], skipped="static failed") for s in kernel]
        elif kernel:
            pending.append((rep, {"policy": pol.name, "tunables": values, "stages": kernel, "parent": c.parent,
                                  "deployed": c.deployed, "workload": c.workload, "runs": c.runs}))
        reports.append(rep)
    if pending:
        specs = [p[1] for p in pending]
        if _in_process():
            got = [{"stages": run_case(s), "platform": {"kernel": os.uname().release, "where": "host"}}
                   for s in specs]
        else:
            got = _kernel_in_vm(specs, cpus, log, realtime)
        for (rep, _spec), g in zip(pending, got):
            rep.stages += [s if isinstance(s, StageReport) else StageReport.from_dict(s) for s in g["stages"]]
            rep.target["platform"] = g["platform"]
    return reports


def verify(policy: str, overrides: dict[str, Any] | None = None, stages: tuple[str, ...] = STAGES,
           parent: dict[str, Any] | None = None, cpus: int = 2,
           log: Callable[[str], None] | None = None, deployed: dict[str, Any] | None = None,
           workload: str | None = None, runs: int | None = None, realtime: bool | None = None) -> VerifyReport:
    return verify_many([Case(policy, dict(overrides or {}), tuple(stages), parent, deployed, workload, runs)],
                       cpus=cpus, log=log, realtime=realtime)[0]


def parent_programs(report: dict) -> dict[str, Any]:
    """The per-program verifier statistics of a saved report (for --parent)."""
    for st in report.get("stages", []):
        if st.get("stage") == "verifier":
            for c in st.get("checks", []):
                if c.get("name") == "load" and c.get("passed"):
                    return c["evidence"]["programs"]
    raise InputError("the parent report has no passing kernel-verifier stage to compare against",
                     hint="give a report written by `aios-lab verify --out` that passed the verifier stage")


