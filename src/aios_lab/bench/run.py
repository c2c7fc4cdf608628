"""Scheduler comparison experiments: the guest side and the host-side demo."""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from . import policy as pol
from . import paths, sched_ext, upstream, workloads
from .atomic import write_json_atomic
from .controller import Deployment
from .counters import SchedCounters
from .errors import AiosError

if TYPE_CHECKING:
    from .mllb.model import ModelFile

BASELINE = "eevdf"  # the kernel's own fair class: no sched_ext policy attached


def _run_traced(wl: workloads.Workload, trace: Path) -> float:
    """Run the workload under `aios-lab collect`; its makespan comes from the trace."""
    from .telemetry.collect import CollectOptions, collect
    from .telemetry.trace import Trace

    wl.check()
    # Every switch (no stream budget): the placement metrics are computed
    # from the whole switch stream, which a sampled one would misstate.
    path = collect(CollectOptions(out=trace, command=["sh", "-c", f"{wl.shell} >/dev/null"], interval_ms=500,
                                  wakeup_events=False, stream_budget=None), echo=lambda m: None)
    meta = Trace.open(path).metadata
    if meta.get("workload_exit_code") != 0:
        raise workloads.WorkloadError(f"workload {wl.name} failed with exit {meta.get('workload_exit_code')}")
    return float(meta["workload_elapsed_s"])


@dataclass(frozen=True)
class SchedSpec:
    """One scheduler of a comparison: `eevdf` (no policy), a policy name,
    `<learning policy>-collect` / `-model` / `-stay` (the never-migrate
    control: model mode with a one-leaf model that always says stay), or one
    of the kernel's example schedulers (`scx_simple`, ...; see aios_lab.upstream)."""
    label: str
    policy: str | None
    mode: str | None = None
    upstream: bool = False

    @classmethod
    def parse(cls, label: str) -> "SchedSpec":
        if label == BASELINE:
            return cls(label, None)
        if upstream.is_upstream(label):
            return cls(label, None, upstream=True)
        for mode in LEARNING_MODES:
            if label.endswith(f"-{mode}"):
                name = label[: -len(mode) - 1]
                if not _has_modes(name):
                    raise AiosError(f"{label}: policy {name} has no {mode} mode (only decision-tree policies do)")
                return cls(label, name, mode)
        if _has_modes(label):
            return cls(label, label, "collect")
        return cls(label, label)


LEARNING_MODES = ("collect", "model", "stay")


def _has_modes(name: str) -> bool:
    """Collect/model modes belong to decision-tree policies (mllb); a
    frequency-table policy (freq) runs here as a plain one, with no table."""
    model = pol.get(name).model
    return model is not None and model.kind == "tree"


# The ops a learning policy decides in; their BPF run time per call is the
# cost of a decision (plus the scheduling around it, the same in both modes).
DECISION_OPS = ("select_cpu", "dispatch")


def _start(spec: SchedSpec, model: "ModelFile | None"):
    """Attach the scheduler of `spec`; returns (deployment, learning run or None)."""
    if spec.upstream:
        binary = upstream.built().get(spec.label)
        if binary is None:
            raise AiosError(f"{spec.label} is not built",
                            hint="aios-lab build --upstream (the kernel's tools/sched_ext, cached)")
        return upstream.UpstreamRun(spec.label, binary).start(), None
    if spec.policy is None:
        return None, None
    if spec.mode is None:
        return Deployment(pol.get(spec.policy)).start(), None
    from .mllb.session import LearningRun

    mode, source = spec.mode, "experiment" if model else ""
    if mode == "stay":  # model mode with a one-leaf model that never migrates
        from .mllb.model import STAY, constant_model

        mode, model, source = "model", constant_model(STAY), "never-migrate control"
    if mode == "model" and model is None:
        raise AiosError(f"{spec.label} needs a model", hint="train one first (bench trains one unless --model)")
    run = LearningRun(policy=pol.get(spec.policy), mode=mode, model=model, model_source=source)
    run.start()
    return run.dep, run


def _prog_stats(dep: Deployment | None) -> dict[str, dict[str, int]]:
    if dep is None or dep.obj is None:
        return {}
    return {p.name: p.run_stats() for p in dep.obj.programs() if p.name.endswith(DECISION_OPS)}


def _one_run(spec: SchedSpec, wl: workloads.Workload, counters: SchedCounters, trace: Path | None = None,
             model: "ModelFile | None" = None) -> dict:
    dep, learning = _start(spec, model)
    try:
        before, progs0 = counters.read(), _prog_stats(dep)
        makespan = _run_traced(wl, trace) if trace is not None else wl.run()
        after, progs1 = counters.read(), _prog_stats(dep)
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
        from .analysis.work_conservation import trace_placement

        placement = trace_placement(trace, wl.latency_comm)
    return {"scheduler": spec.label, "makespan_s": round(makespan, 4), **delta, **placement,
            "policy_stats": policy_stats, "bpf_cost": cost,
            "trace": str(trace) if trace is not None else None,
            "load_s": round(dep.load_s, 4) if dep and dep.load_s else None,
            "attach_s": round(dep.attach_s, 4) if dep and dep.attach_s else None}


def train_model(policy_name: str, wl: workloads.Workload, runs: int, out: Path,
                echo: Callable[[str], None] = print,
                migration_cost_ns: int | None = None) -> tuple["ModelFile", dict]:
    """Train the policy's model on `runs` runs of `wl`, save it to `out`.
    `migration_cost_ns` is the labelling rule's cost (None: its default).

    The first run is in collect mode (the heuristic decides). Each later run
    deploys the model trained so far and logs *its* decisions, and the next
    model is trained on every run's decisions (data aggregation, as in
    DAgger): a model trained only on the heuristic's decisions meets states
    in deployment that the heuristic never led to, and the counterfactual
    labels make the model's own decisions usable as training data."""
    from .mllb.model import save_model
    from .mllb.session import LearningRun
    from .mllb.train import label_rule, train

    import pandas as pd

    rule = label_rule() if migration_cost_ns is None else label_rule(migration_cost_ns=migration_cost_ns)
    frames, mf, report = [], None, None
    for r in range(runs):
        mode = "collect" if mf is None else "model"
        with LearningRun(policy=pol.get(policy_name), mode=mode, model=mf,
                         model_source=f"training round {r}") as run:
            wl.run()
            run.poll()
            stats = run.dep.read_stats()
            frames.append(run.window().assign(trace=f"{mode}-{r + 1}"))
        echo(f"training run {r + 1}/{runs} ({mode} mode): {len(frames[-1])} decisions logged, "
             f"{stats.get('MIGRATIONS', 0)} migrations")
        mf, report = train(pd.concat(frames, ignore_index=True), rule=rule)
        if r + 1 < runs:
            echo(f"  model {r + 1}: held-out accuracy {report.accuracy:.3f}")
    assert mf is not None and report is not None
    save_model(out, mf)
    for line in report.lines():
        echo(f"  {line}")
    echo(f"model written to {out}")
    return mf, report.to_dict()


def bench_schedulers(workload: str, policies: list[str], repeat: int,
                     echo: Callable[[str], None] = print, trace_dir: Path | None = None,
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
    here first from `train_runs` runs (see train_model; saved to
    `model_out`). BPF run-time statistics are on for every run of every
    scheduler alike, so their cost does not favour one."""
    from .bpf.object import BpfStats

    wl = workloads.get(workload)
    wl.check()
    wl.run_prepare()
    specs = [SchedSpec.parse(p) for p in policies]
    if any(s.policy or s.upstream for s in specs):
        sched_ext.require()
        sched_ext.require_free()
    ctl = None
    if control:
        from .bench.control import DEFAULT_LOOPS, DEFAULT_REPEAT, run_control

        ctl = run_control(control_loops or DEFAULT_LOOPS, control_repeat or DEFAULT_REPEAT, echo)
        echo(ctl.line())
        ctl = ctl.to_dict()
    model, training = None, None
    learners = {s.policy for s in specs if s.mode == "model"}
    if len(learners) > 1:
        raise AiosError("one learning policy per comparison")
    if learners:
        from .mllb.model import load_model

        if model_path is not None:
            model = load_model(model_path)
        else:
            out = model_out or (trace_dir or paths.results_dir()) / f"{next(iter(learners))}-{wl.name}.model"
            model, training = train_model(next(iter(learners)), wl, train_runs, out, echo,
                                          migration_cost_ns)
            model_path = out
    runs: list[dict] = []
    with SchedCounters() as counters, BpfStats():
        for r in range(repeat):
            for spec in specs:
                trace = trace_dir / f"{wl.name}-{spec.label}-{r + 1}" if trace_dir is not None else None
                res = _one_run(spec, wl, counters, trace, model)
                res["repeat"] = r
                runs.append(res)
                cost = "  ".join(f"{k.split('_', 1)[-1]} {v['ns_per_call']:.0f}ns" for k, v in res["bpf_cost"].items())
                wc = f" wc-loss {res['wc_loss_s']:.2f}s" if res.get("wc_loss_s") is not None else ""
                echo(f"run {r + 1}/{repeat} {spec.label:13} makespan {res['makespan_s']:.2f}s "
                     f"migrations {res['migrate']} switches {res['switch']}{wc}" + (f"  bpf {cost}" if cost else ""))
    from .bench.verdict import judge

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
    from .vm.guest_platform import current

    got = current()
    return {"vm": True, **got} if got else {"vm": False}


def summarise(runs: list[dict], policies: list[str]) -> dict:
    out: dict[str, dict] = {}
    for sched in policies:
        ms = [r["makespan_s"] for r in runs if r["scheduler"] == sched]
        mig = [r["migrate"] for r in runs if r["scheduler"] == sched]
        if not ms:
            continue
        out[sched] = {"makespan_median_s": statistics.median(ms), "makespan_min_s": min(ms),
                      "makespan_max_s": max(ms), "migrations_median": statistics.median(mig),
                      "migrations_min": min(mig), "migrations_max": max(mig), "n": len(ms)}
        for key in ("wc_loss_s", "wc_fraction", "wait_p50_ns", "wait_p99_ns", "latency_p50_ns", "latency_p99_ns"):
            vals = [r[key] for r in runs if r["scheduler"] == sched and r.get(key) is not None]
            if vals:
                out[sched][f"{key}_median"] = statistics.median(vals)
        cost: dict[str, list[float]] = {}
        for r in runs:
            if r["scheduler"] == sched:
                for prog, c in (r.get("bpf_cost") or {}).items():
                    cost.setdefault(prog, []).append(c["ns_per_call"])
        if cost:
            out[sched]["bpf_ns_per_call_median"] = {k: statistics.median(v) for k, v in cost.items()}
    base = out.get(BASELINE)
    for sched, s in out.items():
        if base:
            s["makespan_ratio_vs_eevdf"] = round(s["makespan_median_s"] / base["makespan_median_s"], 3)
            s["migrations_ratio_vs_eevdf"] = (round(s["migrations_median"] / base["migrations_median"], 3)
                                              if base["migrations_median"] else None)
    return out


def format_summary(result: dict, vm: dict | None = None) -> str:
    lines = []
    head = f"workload {result['workload']['name']} ({result['workload']['summary']})"
    lines.append(head)
    where = f"kernel {result['kernel']}, {result['cpus']} CPUs"
    # The guest's own record (it has the host priority too) before the runner's.
    plat = result.get("platform") if (result.get("platform") or {}).get("vm") else (vm or {})
    if plat.get("topology"):
        topo = plat["topology"]
        from .vm.guest_platform import describe

        flat = dict(plat, qemu=plat["qemu"]["version"] if isinstance(plat.get("qemu"), dict) else plat.get("qemu"))
        where += f", {describe(flat)} ({topo['sockets']} sockets, {topo['numa_nodes']} NUMA nodes)"
    lines.append(f"{where}, {result['repeat']} interleaved runs each")
    if result.get("control"):
        from .bench.control import ControlResult

        lines.append(ControlResult.from_dict(result["control"]).line())
    lines.append(f"{'scheduler':13} {'makespan median [min-max]':>28} {'vs eevdf':>9} "
                 f"{'migrations median [min-max]':>30} {'vs eevdf':>9}")
    for sched, s in result["summary"].items():
        ratio, mratio = s.get("makespan_ratio_vs_eevdf"), s.get("migrations_ratio_vs_eevdf")
        lines.append(f"{sched:13} {s['makespan_median_s']:>12.2f}s [{s['makespan_min_s']:.2f}-{s['makespan_max_s']:.2f}]"
                     f" {('x%.2f' % ratio) if ratio else '-':>9} {s['migrations_median']:>14.0f}"
                     f" [{s.get('migrations_min', 0):.0f}-{s.get('migrations_max', 0):.0f}]"
                     f" {('x%.2f' % mratio) if mratio is not None else '-':>9}")
    costs = {k: v["bpf_ns_per_call_median"] for k, v in result["summary"].items() if v.get("bpf_ns_per_call_median")}
    if costs:
        lines.append("BPF run time per call (median over runs; kernel.bpf_stats_enabled):")
        for sched, c in costs.items():
            lines.append(f"  {sched:13} " + "  ".join(f"{k}: {v:.0f} ns" for k, v in sorted(c.items())))
        learn = [k for k in costs if k.endswith("-model")]
        for m in learn:
            base = m[: -len("model")] + "collect"
            if base in costs:
                ratios = [f"{k}: x{costs[m][k] / costs[base][k]:.2f}" for k in sorted(costs[m])
                          if k in costs[base] and costs[base][k]]
                lines.append(f"  {m} vs {base}: " + "  ".join(ratios))
    placement = {k: v for k, v in result["summary"].items() if v.get("wc_loss_s_median") is not None}
    if placement:
        lines.append("placement (median over runs, from the guest's own switches): "
                     "work-conservation loss = CPU time idle while work waited")
        for sched, s in placement.items():
            p50, p99 = s.get("wait_p50_ns_median"), s.get("wait_p99_ns_median")
            lat = ""
            if s.get("latency_p99_ns_median") is not None:
                lat = (f"  latency-task wait p50 {s['latency_p50_ns_median'] / 1e6:7.3f} ms  "
                       f"p99 {s['latency_p99_ns_median'] / 1e6:8.3f} ms")
            lines.append(f"  {sched:13} wc-loss {s['wc_loss_s_median']:8.2f}s  wait p50 "
                         f"{(p50 or 0) / 1e6:7.3f} ms  p99 {(p99 or 0) / 1e6:8.3f} ms{lat}")
    base = result["summary"].get(BASELINE, {})
    if base.get("wc_fraction_median") is not None:
        # Placement can only recover CPU time that sat idle while work waited:
        # a scheduler doing the same work is at best this much faster.
        lines.append(f"headroom: {BASELINE} left {100 * base['wc_fraction_median']:.1f} % of CPU time idle while "
                     f"work waited; better placement alone can shorten its makespan by at most about that much")
    if result.get("verdicts"):
        from .bench.verdict import format_verdicts

        lines.append("verdicts (median ratios; two-sided Mann-Whitney U over the interleaved runs):")
        lines += format_verdicts(result["verdicts"], result.get("control"))
    elif result.get("control") is None and any(k.endswith("-model") for k in result["summary"]):
        from .bench.control import not_judged_banner

        lines.append(not_judged_banner(None))
    return "\n".join(lines)


def demo_topology(cpus: int | None = None, numa: int | None = None) -> tuple[int, int]:
    """4 vCPUs over 2 NUMA nodes where the host has the cores for them.

    A guest with more vCPUs than its host has cores cannot reward spreading
    work over all of them (measured on a 2-core host: 4 vCPUs, the
    never-migrate control was the fastest scheduler, x0.82 of EEVDF), so
    the default never exceeds the host's CPU count."""
    if cpus is None:
        cpus = min(4, os.cpu_count() or 1)
    if numa is None:
        numa = 2 if cpus >= 4 and cpus % 2 == 0 else 1
    return cpus, numa


DEMO_POLICIES = [BASELINE, "fifo", "mllb-collect", "mllb-model", "mllb-stay"]


def run_demo(cpus: int, numa: int, workload: str, repeat: int, out_dir: Path,
             echo: Callable[[str], None] = print, policies: list[str] | None = None,
             nice: int | None = None, realtime: bool | None = None) -> dict:
    """Host side of `make demo`: build, boot the VM, and in it: run the
    workload under mllb's collect mode, train a model on the logged
    decisions, then compare EEVDF, fifo, mllb-collect and mllb-model."""
    policies = policies or DEMO_POLICIES
    from . import build
    from .bpf_provision import provision
    from .vm import runner
    from .vm.kernel import ensure_kernel
    from .vm.topology import Topology

    provision(log=echo)
    kernel = ensure_kernel(log=echo)
    build.generate_vmlinux_h(kernel.vmlinuz, paths.build_dir() / "vmlinux.h", kernel.release)
    build.build_all()
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    guest_json = out_dir / f".demo-{stamp}.guest.json"
    traces = out_dir / f"demo-{stamp}-traces"
    model = out_dir / f"demo-{stamp}-mllb.model"
    cmd = [sys.executable, "-m", "aios_lab.cli", "bench-schedulers", "--workload", workload,
           "--policies", ",".join(policies), "--repeat", str(repeat), "--json-out", str(guest_json),
           "--trace-dir", str(traces), "--model-out", str(model)]
    topo = Topology(cpus=cpus, numa_nodes=numa, memory_mb=2048)
    echo(f"booting {kernel.release} with {cpus} vCPUs / {numa} NUMA nodes; running {workload} "
         f"under {', '.join(policies)}, {repeat}x each"
         + (" (after training: a run of mllb-collect, then one under the first model)" if any(p.endswith("-model") for p in policies) else ""))
    res = runner.run(cmd, topology=topo, rwdirs=[out_dir], stream=sys.stdout, timeout_s=5400, log=echo, nice=nice,
                     realtime=realtime)
    if res.returncode != 0:
        raise AiosError(f"the experiment failed in the guest (exit {res.returncode})")
    result = json.loads(guest_json.read_text())
    guest_json.unlink()
    result["vm"] = res.describe()
    final = out_dir / f"demo-{stamp}.json"
    write_json_atomic(final, result)
    from .analysis.metrics import trace_metrics
    from .analysis.report import format_metrics

    for sched in policies:
        last = [r for r in result["runs"] if r["scheduler"] == sched][-1]
        echo(f"\n--- trace of the last {sched} run: {last['trace']}")
        echo(format_metrics(trace_metrics(last["trace"])))
    echo("")
    echo(format_summary(result, result["vm"]))
    report = write_comparison_report(result, out_dir / f"demo-{stamp}-report.html", echo)
    result["report"] = str(report)
    echo(f"\nfull result: {final}\ntraces: {traces}" + (f"\nmodel: {result['model']}" if result.get("model") else ""))
    echo(f"comparison report: {report}")
    return result


def write_comparison_report(result: dict, out: Path, echo: Callable[[str], None] = print) -> Path:
    """The compare report of an experiment's traced runs, one group per
    scheduler, the baseline (EEVDF) first: what `make demo` ends with."""
    from .analysis.compare import compare_traces, format_comparison, write_comparison

    runs = [r for r in result["runs"] if r.get("trace")]
    if len({r["scheduler"] for r in runs}) < 2:
        raise AiosError("the experiment has fewer than two traced schedulers to compare")
    base = BASELINE if any(r["scheduler"] == BASELINE for r in runs) else None
    cmp, metrics = compare_traces([r["trace"] for r in runs], [r["scheduler"] for r in runs], base)
    echo("\n" + format_comparison(cmp))
    return write_comparison(cmp, metrics, out)
