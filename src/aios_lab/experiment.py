"""Scheduler comparison experiments: the guest side and the host-side demo."""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from . import policy as pol
from . import sched_ext, workloads
from .controller import Deployment
from .counters import SchedCounters
from .errors import AiosError

BASELINE = "eevdf"  # the kernel's own fair class: no sched_ext policy attached


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _run_traced(wl: workloads.Workload, trace: Path) -> float:
    """Run the workload under `aios-lab collect`; its makespan comes from the trace."""
    from .telemetry.collect import CollectOptions, collect
    from .telemetry.trace import Trace

    wl.check()
    path = collect(CollectOptions(out=trace, command=["sh", "-c", f"{wl.command} >/dev/null"], interval_ms=500,
                                  wakeup_events=False), echo=lambda m: None)
    meta = Trace.open(path).metadata
    if meta.get("workload_exit_code") != 0:
        raise workloads.WorkloadError(f"workload {wl.name} failed with exit {meta.get('workload_exit_code')}")
    return float(meta["workload_elapsed_s"])


def _one_run(scheduler: str, wl: workloads.Workload, counters: SchedCounters, trace: Path | None = None) -> dict:
    dep = None
    if scheduler != BASELINE:
        dep = Deployment(pol.get(scheduler)).start()
    try:
        before = counters.read()
        makespan = _run_traced(wl, trace) if trace is not None else wl.run()
        after = counters.read()
        if dep is not None:
            dep.check()  # an ejection mid-run would make the numbers meaningless
    finally:
        if dep is not None:
            dep.stop()
    delta = {k: after[k] - before[k] for k in after}
    return {"scheduler": scheduler, "makespan_s": round(makespan, 4), **{f"{k}": v for k, v in delta.items()},
            "trace": str(trace) if trace is not None else None,
            "load_s": round(dep.load_s, 4) if dep and dep.load_s else None,
            "attach_s": round(dep.attach_s, 4) if dep and dep.attach_s else None}


def bench_schedulers(workload: str, policies: list[str], repeat: int,
                     echo: Callable[[str], None] = print, trace_dir: Path | None = None) -> dict:
    """Run ``workload`` under each scheduler, interleaved, ``repeat`` times."""
    wl = workloads.get(workload)
    wl.check()
    if any(p != BASELINE for p in policies):
        sched_ext.require()
        sched_ext.require_free()
    runs: list[dict] = []
    with SchedCounters() as counters:
        for r in range(repeat):
            for sched in policies:
                trace = trace_dir / f"{wl.name}-{sched}-{r + 1}" if trace_dir is not None else None
                res = _one_run(sched, wl, counters, trace)
                res["repeat"] = r
                runs.append(res)
                echo(f"run {r + 1}/{repeat} {sched:8} makespan {res['makespan_s']:.2f}s "
                     f"migrations {res['migrate']} switches {res['switch']}")
    summary = summarise(runs, policies)
    return {"workload": {"name": wl.name, "summary": wl.summary, "command": wl.command},
            "kernel": os.uname().release, "cpus": os.cpu_count(), "repeat": repeat,
            "runs": runs, "summary": summary, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def summarise(runs: list[dict], policies: list[str]) -> dict:
    out: dict[str, dict] = {}
    for sched in policies:
        ms = [r["makespan_s"] for r in runs if r["scheduler"] == sched]
        mig = [r["migrate"] for r in runs if r["scheduler"] == sched]
        if not ms:
            continue
        out[sched] = {"makespan_median_s": statistics.median(ms), "makespan_min_s": min(ms),
                      "makespan_max_s": max(ms), "migrations_median": statistics.median(mig), "n": len(ms)}
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
    if vm:
        topo = vm["topology"]
        where += f", QEMU {vm['accel']} ({topo['sockets']} sockets, {topo['numa_nodes']} NUMA nodes)"
    lines.append(f"{where}, {result['repeat']} interleaved runs each")
    lines.append(f"{'scheduler':10} {'makespan median [min-max]':>28} {'migrations':>11} {'vs eevdf':>9}")
    for sched, s in result["summary"].items():
        ratio = s.get("makespan_ratio_vs_eevdf")
        lines.append(f"{sched:10} {s['makespan_median_s']:>12.2f}s [{s['makespan_min_s']:.2f}-{s['makespan_max_s']:.2f}]"
                     f"{s['migrations_median']:>12.0f} {('x%.2f' % ratio) if ratio else '-':>9}")
    return "\n".join(lines)


def run_demo(cpus: int, numa: int, workload: str, repeat: int, out_dir: Path,
             echo: Callable[[str], None] = print) -> dict:
    """Host side of `make demo`: build, boot the VM, compare EEVDF and fifo."""
    from . import build, paths
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
    cmd = [sys.executable, "-m", "aios_lab.cli", "bench-schedulers", "--workload", workload,
           "--policies", f"{BASELINE},fifo", "--repeat", str(repeat), "--json-out", str(guest_json),
           "--trace-dir", str(traces)]
    topo = Topology(cpus=cpus, numa_nodes=numa, memory_mb=2048)
    echo(f"booting {kernel.release} with {cpus} vCPUs / {numa} NUMA nodes; running {workload} "
         f"under eevdf and fifo, {repeat}x each")
    res = runner.run(cmd, topology=topo, rwdirs=[out_dir], stream=sys.stdout, timeout_s=3600)
    if res.returncode != 0:
        raise AiosError(f"the experiment failed in the guest (exit {res.returncode})")
    result = json.loads(guest_json.read_text())
    guest_json.unlink()
    result["vm"] = res.describe()
    final = out_dir / f"demo-{stamp}.json"
    write_json_atomic(final, result)
    from .telemetry.analyze import format_summary as trace_summary, summarize
    from .telemetry.trace import Trace

    for sched in (BASELINE, "fifo"):
        last = [r for r in result["runs"] if r["scheduler"] == sched][-1]
        echo(f"\n--- trace of the last {sched} run: {last['trace']}")
        echo(trace_summary(summarize(Trace.open(Path(last["trace"])))))
    echo("")
    echo(format_summary(result, result["vm"]))
    echo(f"\nfull result: {final}\ntraces: {traces}")
    return result
