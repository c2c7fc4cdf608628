#!/usr/bin/env python3
"""Where the telemetry's BPF time goes, per program, for each way of timing waits.

Loads the collector (wakeup and switch streams on, budget 2000/s, as in the
default `collect` plus the switch stream) under hackbench -p -g 8 -f 20
-l 2000 with kernel.bpf_stats_enabled, interleaved over rounds, in arms:

    hook       waits timed from the sched_wakeup tracepoints (kernels
               without sched_info): tel_wakeup touches every woken task's
               entry
    kernel     waits read from the kernel's sched_info at the switch-in
               (the default where the kernel has it): tel_wakeup only
               samples the stream
    empty      tel_wakeup built to return at once (the source edited in a
               scratch copy, never in the tree): the floor, the tracepoint's
               BPF trampoline and bpf_stats' own clock reads

and prints ns per run of tel_switch and tel_wakeup (medians over rounds)
and all programs' BPF time per hackbench run and per switch.

Usage (root): .venv/bin/python benchmarks/telemetry_bpf_cost.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "bpf" / "telemetry.bpf.c"

# variant -> [(text in the source, its replacement)]
VARIANTS: dict[str, list[tuple[str, str]]] = {
    "empty": [("\treturn on_wake(p, 0);", "\treturn 0;")],
}
# arm -> (object variant, kernel_waits)
ARMS = {"hook": ("shipped", False), "kernel": ("shipped", True), "empty": ("empty", True)}
PROGS = ("tel_switch", "tel_wakeup", "tel_wakeup_new", "tel_migrate", "tel_exit", "tel_free")


def build_variants(tmp: Path) -> dict[str, Path]:
    from aios_lab import build

    text = SRC.read_text()
    out = {}
    for name, edits in VARIANTS.items():
        src = text
        for old, new in edits:
            if old not in src:
                raise SystemExit(f"variant {name}: the source no longer has {old.strip()[:40]!r}; update this script")
            src = src.replace(old, new, 1)
        path = SRC.parent / f".cost-{name}.bpf.c"   # beside the original: its includes resolve
        try:
            path.write_text(src)
            build.compile_bpf(path, tmp / f"{name}.bpf.o")
        finally:
            path.unlink(missing_ok=True)
            path.with_suffix(".d").unlink(missing_ok=True)
        out[name] = tmp / f"{name}.bpf.o"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from aios_lab.bpf.object import BpfStats
    from aios_lab.telemetry.bpf_collector import BpfCollector, object_path

    tmp = Path(tempfile.mkdtemp(prefix="aios-bpfcost-"))
    shipped = tmp / "shipped.bpf.o"
    shutil.copy(object_path(), shipped)
    objs = {"shipped": shipped, **build_variants(tmp)}
    per_run: dict[str, dict[str, list[float]]] = {
        a: {"tel_switch": [], "tel_wakeup": [], "total_ms": [], "switches": [], "wakeups": []} for a in ARMS}
    try:
        with BpfStats():
            for r in range(args.rounds):
                for arm, (variant, kernel_waits) in ARMS.items():
                    shutil.copy(objs[variant], object_path())
                    with BpfCollector(wakeup_events=True, switch_events=True, stream_budget=2000,
                                      kernel_waits=kernel_waits) as col:
                        col.start()
                        hb = subprocess.Popen(["hackbench", "-p", "-g", "8", "-f", "20", "-l", "2000"],
                                              stdout=subprocess.DEVNULL)
                        while hb.poll() is None:
                            col.poll(100)
                        stats = {p: col._live().program(p).run_stats() for p in PROGS}
                    for p in ("tel_switch", "tel_wakeup"):
                        per_run[arm][p].append(stats[p]["run_time_ns"] / max(1, stats[p]["run_cnt"]))
                    per_run[arm]["total_ms"].append(sum(st["run_time_ns"] for st in stats.values()) / 1e6)
                    per_run[arm]["switches"].append(stats["tel_switch"]["run_cnt"])
                    per_run[arm]["wakeups"].append(stats["tel_wakeup"]["run_cnt"])
                print(f"round {r + 1}: " + "  ".join(
                    f"{a} switch {v['tel_switch'][-1]:.0f} wakeup {v['tel_wakeup'][-1]:.0f} "
                    f"total {v['total_ms'][-1]:.1f} ms" for a, v in per_run.items()), flush=True)
    finally:
        shutil.copy(shipped, object_path())
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nns per run and BPF ms per hackbench run (medians over rounds; hackbench -p -g 8 -f 20 -l 2000):")
    print(f"  {'arm':8} {'tel_switch':>10} {'tel_wakeup':>10} {'all programs':>13} {'switches':>9} {'wakeups':>9}"
          f" {'ns per switch':>14}")
    for a, v in per_run.items():
        med = {k: statistics.median(x) for k, x in v.items()}
        # All programs' time per switch, each run's own ratio: hackbench's
        # event counts vary from run to run, the cost per event much less.
        per_switch = statistics.median(t * 1e6 / max(1, n) for t, n in zip(v["total_ms"], v["switches"]))
        print(f"  {a:8} {med['tel_switch']:10.0f} {med['tel_wakeup']:10.0f} {med['total_ms']:10.1f} ms"
              f" {med['switches']:9.0f} {med['wakeups']:9.0f} {per_switch:14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
