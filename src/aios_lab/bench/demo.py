"""The host side of `make demo`: build, boot the VM, run the comparison in it, report.

The guest runs `bench-schedulers` (bench/run.py); this side provisions and
builds, picks a topology the host can honour, boots the pinned kernel, and
prints the traces' metrics, the summary and the HTML comparison report.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Callable

from .. import paths
from ..atomic import write_json_atomic
from ..errors import AiosError
from .spec import BASELINE
from .summary import format_summary


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
             echo: Callable[[str], None] = lambda m: None, policies: list[str] | None = None,
             nice: int | None = None, realtime: bool | None = None, stream: IO[str] | None = None) -> dict:
    """Host side of `make demo`: build, boot the VM, and in it: run the
    workload under mllb's collect mode, train a model on the logged
    decisions, then compare EEVDF, fifo, mllb-collect and mllb-model.
    The guest's own output goes to ``stream`` (None: dropped)."""
    policies = policies or DEMO_POLICIES
    from .. import build
    from ..bpf_provision import provision
    from ..vm import runner
    from ..vm.kernel import ensure_kernel
    from ..vm.topology import Topology

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
    res = runner.run(cmd, topology=topo, rwdirs=[out_dir], stream=stream, timeout_s=5400, log=echo, nice=nice,
                     realtime=realtime)
    if res.returncode != 0:
        raise AiosError(f"the experiment failed in the guest (exit {res.returncode})")
    result = json.loads(guest_json.read_text())
    guest_json.unlink()
    result["vm"] = res.describe()
    final = out_dir / f"demo-{stamp}.json"
    write_json_atomic(final, result)
    from ..analysis.metrics import trace_metrics
    from ..analysis.report import format_metrics

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


def write_comparison_report(result: dict, out: Path, echo: Callable[[str], None] = lambda m: None) -> Path:
    """The compare report of an experiment's traced runs, one group per
    scheduler, the baseline (EEVDF) first: what `make demo` ends with."""
    from ..analysis.compare import compare_traces, format_comparison, write_comparison

    runs = [r for r in result["runs"] if r.get("trace")]
    if len({r["scheduler"] for r in runs}) < 2:
        raise AiosError("the experiment has fewer than two traced schedulers to compare")
    base = BASELINE if any(r["scheduler"] == BASELINE for r in runs) else None
    cmp, metrics = compare_traces([r["trace"] for r in runs], [r["scheduler"] for r in runs], base)
    echo("\n" + format_comparison(cmp))
    return write_comparison(cmp, metrics, out)
