"""A benchmark's guest side: each scheduler of a comparison run on one workload.

`bench_schedulers` runs the placement control first (bench/control.py),
trains the learning policy's model when a `<policy>-model` run needs one
(mllb/dagger.py), then runs the workload under every scheduler in turn,
interleaved, and ends with the summary (bench/summary.py) and the verdicts
(bench/verdict.py). One run (`_one_run`) attaches the scheduler of a spec
(bench/spec.py), counts migrations and switches, the BPF cost of each
decision and, when traced, the placement metrics from the trace.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .. import paths, workloads
from ..sched import sched_ext
from ..sched.deployment import Deployment
from ..counters import SchedCounters
from ..errors import AiosError
from .spec import BASELINE, SchedSpec
from .summary import summarise

if TYPE_CHECKING:
    from ..mllb.model import ModelFile


def _run_traced(wl: workloads.Workload, trace: Path) -> float:
    """Run the workload under `aios-lab collect`; its makespan comes from the trace."""
    from ..telemetry.collect import CollectOptions, collect
    from ..telemetry.trace import Trace

    wl.check()
    # Every switch (no stream budget): the placement metrics are computed
    # from the whole switch stream, which a sampled one would misstate.
    path = collect(CollectOptions(out=trace, command=["sh", "-c", f"{wl.shell} >/dev/null"], interval_ms=500,
                                  wakeup_events=False, stream_budget=None), echo=lambda m: None)
    meta = Trace.open(path).metadata
    if meta.get("workload_exit_code") != 0:
        raise workloads.WorkloadError(f"workload {wl.name} failed with exit {meta.get('workload_exit_code')}")
    return float(meta["workload_elapsed_s"])


# The ops a learning policy decides in; their BPF run time per call is the
# cost of a decision (plus the scheduling around it, the same in both modes).
DECISION_OPS = ("select_cpu", "dispatch")


def _prog_stats(dep: Deployment | None) -> dict[str, dict[str, int]]:
    if dep is None or dep.obj is None:
        return {}
    return {p.name: p.run_stats() for p in dep.obj.programs() if p.name.endswith(DECISION_OPS)}


def _read_wait():
    """/proc/schedstat's run-queue wait, or None on a kernel without
    CONFIG_SCHED_INFO (then the run has no run-queue wait, and the verifier's
    performance stage, which judges it, has too few values to call it worse)."""
    from ..control.canary import read_wait

    try:
        return read_wait()
    except OSError:
        return None


def _one_run(spec: SchedSpec, wl: workloads.Workload, counters: SchedCounters, trace: Path | None = None,
             model: "ModelFile | None" = None) -> dict:
    dep, learning = spec.start(model)
    try:
        before, progs0, wait0 = counters.read(), _prog_stats(dep), _read_wait()
        makespan = _run_traced(wl, trace) if trace is not None else wl.run()
        after, progs1, wait1 = counters.read(), _prog_stats(dep), _read_wait()
        if dep is not None:
            dep.check()  # an ejection mid-run would make the numbers meaningless
        policy_stats = dep.read_stats() if dep is not None else {}
        if learning is not None:
            learning.poll()
    finally:
        if learning is not None:
            learning.stop()
        elif dep is not None:
            dep.stop()
    delta = {k: after[k] - before[k] for k in after}
    cost = {}
    for name, st in progs1.items():
        runs = st["run_cnt"] - progs0[name]["run_cnt"]
        if runs > 0:
            cost[name] = {"calls": runs, "ns_per_call": round((st["run_time_ns"] - progs0[name]["run_time_ns"]) / runs, 1)}
    placement = {}
    if trace is not None:
        from ..analysis.work_conservation import trace_placement

        placement = trace_placement(trace, wl.latency_comm)
    # Run-queue wait (runnable, not running) of every task, from the kernel's
    # sched_info (control.canary): the total, and per timeslice that followed.
    waited = wait1 is not None and wait0 is not None
    per_slice = wait1.mean_wait_since(wait0) if waited else None
    return {"scheduler": spec.label, "makespan_s": round(makespan, 4), **delta, **placement,
            "runq_wait_s": round((wait1.run_delay_ns - wait0.run_delay_ns) / 1e9, 6) if waited else None,
            "runq_wait_per_slice_us": None if per_slice is None else round(per_slice / 1e3, 3),
            "policy_stats": policy_stats, "bpf_cost": cost,
            "trace": str(trace) if trace is not None else None,
            "load_s": round(dep.load_s, 4) if dep and dep.load_s else None,
            "attach_s": round(dep.attach_s, 4) if dep and dep.attach_s else None}


def run_interleaved(specs: list[SchedSpec], wl: workloads.Workload, repeat: int,
                    echo: Callable[[str], None] = lambda m: None, trace_dir: Path | None = None,
                    model: "ModelFile | None" = None, rotate: bool = False) -> list[dict]:
    """``repeat`` rounds of one run per scheduler. With ``rotate`` each
    round starts one scheduler later (A B C, B C A, ...), so that a drift
    of the machine (another tenant's load) does not always hit the same one."""
    from ..bpf.object import BpfStats

    runs: list[dict] = []
    with SchedCounters() as counters, BpfStats():
        for r in range(repeat):
            shift = r % len(specs) if rotate else 0
            for spec in specs[shift:] + specs[:shift]:
                trace = trace_dir / f"{wl.name}-{spec.label}-{r + 1}" if trace_dir is not None else None
                res = _one_run(spec, wl, counters, trace, model)
                res["repeat"] = r
                runs.append(res)
                cost = "  ".join(f"{k.split('_', 1)[-1]} {v['ns_per_call']:.0f}ns" for k, v in res["bpf_cost"].items())
                wc = f" wc-loss {res['wc_loss_s']:.2f}s" if res.get("wc_loss_s") is not None else ""
                echo(f"run {r + 1}/{repeat} {spec.label:13} makespan {res['makespan_s']:.2f}s "
                     f"migrations {res['migrate']} switches {res['switch']}{wc}" + (f"  bpf {cost}" if cost else ""))
    return runs


def bench_schedulers(workload: str, policies: list[str], repeat: int,
                     echo: Callable[[str], None] = lambda m: None, trace_dir: Path | None = None,
                     model_path: Path | None = None, model_out: Path | None = None,
                     train_runs: int = 2, migration_cost_ns: int | None = None,
                     control: bool = True, control_loops: int | None = None,
                     control_repeat: int | None = None) -> dict:
    """Run ``workload`` under each scheduler, interleaved, ``repeat`` times.

    First, under the kernel's own scheduler, the placement control
    (bench.control) measures whether this platform can reward a good
    placement at all; without it (``control=False``) no load-balancing
    verdict is judged.

    A `<policy>-model` scheduler uses `model_path`, or else a model trained
    here first from `train_runs` runs (see mllb.dagger; saved to
    `model_out`). BPF run-time statistics are on for every run of every
    scheduler alike, so their cost does not favour one."""
    wl = workloads.get(workload)
    wl.check()
    wl.run_prepare()
    specs = [SchedSpec.parse(p) for p in policies]
    if any(s.needs_sched_ext for s in specs):
        sched_ext.require()
        sched_ext.require_free()
    ctl = None
    if control:
        from .control import DEFAULT_LOOPS, DEFAULT_REPEAT, run_control

        ctl = run_control(control_loops or DEFAULT_LOOPS, control_repeat or DEFAULT_REPEAT, echo)
        echo(ctl.line())
        ctl = ctl.to_dict()
    model, training = None, None
    learners = {s.policy for s in specs if s.needs_model}
    if len(learners) > 1:
        raise AiosError("one learning policy per comparison")
    if learners:
        from ..mllb.model import load_model

        if model_path is not None:
            model = load_model(model_path)
        else:
            from ..mllb.dagger import train_model

            out = model_out or (trace_dir or paths.results_dir()) / f"{next(iter(learners))}-{wl.name}.model"
            model, training = train_model(next(iter(learners)), wl, train_runs, out, echo,
                                          migration_cost_ns)
            model_path = out
    runs = run_interleaved(specs, wl, repeat, echo, trace_dir, model)
    from .verdict import judge

    labels = [s.label for s in specs]
    summary = summarise(runs, labels)
    return {"workload": {"name": wl.name, "summary": wl.summary, "command": wl.command},
            "kernel": os.uname().release, "cpus": os.cpu_count(), "repeat": repeat,
            "platform": _platform(), "control": ctl,
            "verdicts": judge(runs, labels, BASELINE, ctl) if BASELINE in labels else None,
            "model": str(model_path) if model_path else None, "training": training,
            "runs": runs, "summary": summary, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _platform() -> dict:
    """Where this ran: the VM's QEMU, TCG mode and topology (from the runner), or the host."""
    from ..vm.guest_platform import current

    got = current()
    return {"vm": True, **got} if got else {"vm": False}

