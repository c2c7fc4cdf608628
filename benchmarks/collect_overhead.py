#!/usr/bin/env python3
"""Overhead of `aios-lab collect` vs no tracing vs `perf sched record`.

Runs a scheduler-heavy workload (rt-tests hackbench) N times each way,
interleaved, and compares hackbench's own reported time (so the tools'
start-up is not counted, only what they cost the workload while it runs).
Then measures how many events per second the collector recorded with zero
loss, and how fast Python drains the ring buffers (events per CPU-second of
the draining process).

Usage (root): .venv/bin/python benchmarks/collect_overhead.py [--runs 7] [--groups 8] [--loops 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME_RE = re.compile(r"^Time:\s*([0-9.]+)", re.M)


def hackbench_cmd(groups: int, loops: int) -> list[str]:
    return ["hackbench", "-p", "-g", str(groups), "-f", "20", "-l", str(loops)]


def run_timed(prefix: list[str], hb: list[str]) -> float:
    out = subprocess.run(prefix + hb, capture_output=True, text=True, check=True).stdout
    m = TIME_RE.search(out)
    if not m:
        raise RuntimeError(f"no 'Time:' in hackbench output: {out[-300:]}")
    return float(m.group(1))


def dropped(lost: dict) -> int:
    """Records dropped (full ring or task map); unpaired_switch is not a drop."""
    return sum(v for k, v in lost.items() if k != "unpaired_switch")


def drain_rate(hb: list[str], wakeup_sample: int = 1) -> dict:
    """Events/s recorded and Python's drain rate, with wakeup events on."""
    from aios_lab.telemetry.bpf_collector import BpfCollector

    with BpfCollector(wakeup_events=True, wakeup_sample=wakeup_sample) as col:
        col.start()
        proc = subprocess.Popen(hb, stdout=subprocess.DEVNULL)
        t0, cpu0, n = time.monotonic(), time.process_time(), 0
        while proc.poll() is None:
            col.poll(50)
            n += sum(len(v) for v in col.take_event_frames().values() if v is not None)
        col.poll(0)
        n += sum(len(v) for v in col.take_event_frames().values() if v is not None)
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        lost = col.lost()
    return {"command": hb, "wakeup_sample": wakeup_sample, "events": n, "wall_s": round(wall, 3), "events_per_s": round(n / wall), "drain_cpu_s": round(cpu, 3),
            "drain_events_per_cpu_s": round(n / cpu) if cpu else None, "lost": lost}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--loops", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("results/collect_overhead.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (BPF and perf sched record)", file=sys.stderr)
        return 1
    for tool in ("hackbench", "perf"):
        if not shutil.which(tool):
            print(f"{tool} not found: apt-get install rt-tests linux-perf", file=sys.stderr)
            return 1
    from aios_lab.bpf import ensure_tracefs

    ensure_tracefs()
    hb = hackbench_cmd(args.groups, args.loops)
    tmp = Path(tempfile.mkdtemp(prefix="aios-overhead-"))
    aios = [sys.executable, "-m", "aios_lab.cli", "collect", "--interval", "1"]
    # The first three are the variants measured before the switch stream
    # existed (so --no-switches); the last is collect's default now.
    variants = {"aios-collect": ["--no-switches"],
                "aios-collect-s8": ["--wakeup-sample", "8", "--no-switches"],
                "aios-collect-nowake": ["--no-wakeups", "--no-switches"],
                "aios-collect-switches": []}
    times: dict[str, list[float]] = {"baseline": [], **{k: [] for k in variants}, "perf-sched": []}
    collect_lost: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(args.runs):
        times["baseline"].append(run_timed([], hb))
        for name, extra in variants.items():
            trace = tmp / f"trace-{name}-{r}"
            times[name].append(run_timed(aios + extra + ["--out", str(trace), "--"], hb))
            meta = json.loads((trace / "metadata.json").read_text())
            collect_lost[name].append(meta.get("lost", {}))
            shutil.rmtree(trace, ignore_errors=True)
        times["perf-sched"].append(run_timed(["perf", "sched", "record", "-q", "-o", str(tmp / "perf.data"), "--"], hb))
        (tmp / "perf.data").unlink(missing_ok=True)
        print(f"run {r + 1}/{args.runs}: " + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["baseline"]
    over = {k: (med[k] - base) / base for k in times if k != "baseline"}
    print(f"\nhackbench {' '.join(hb[1:])}, {args.runs} interleaved runs, medians "
          "(aios-collect: --no-switches; -s8: also --wakeup-sample 8; -nowake: --no-wakeups "
          "--no-switches; -switches: the default, every switch and wakeup recorded):")
    for k, v in times.items():
        print(f"  {k:20} {med[k]:.3f}s [{min(v):.3f}-{max(v):.3f}]  ratio {med[k] / base:.3f}")
    for k in variants:
        ratio = f", {over[k] / over['perf-sched']:.2f} of perf sched's" if over["perf-sched"] > 0 else ""
        print(f"  overhead {k}: {over[k] * 100:+.1f}%{ratio}; events lost per run: "
              f"{[dropped(d) for d in collect_lost[k]]}")
    print(f"  overhead perf-sched: {over['perf-sched'] * 100:+.1f}%")
    # Zero-loss rate: the same collector at rising load, all wakeups recorded,
    # then the heaviest load with wakeup sampling.
    drains = []
    for groups, sample in [(1, 1), (2, 1), (4, 1), (args.groups, 1), (args.groups, 8)]:
        d = drain_rate(hackbench_cmd(groups, args.loops), wakeup_sample=sample)
        drains.append(d)
        print(f"  collector, hackbench -g {groups}, wakeup sample 1/{sample}: {d['events']} events in "
              f"{d['wall_s']}s = {d['events_per_s']}/s, lost {dropped(d['lost'])} {d['lost']}; "
              f"Python drained {d['drain_events_per_cpu_s']} events per CPU-second", flush=True)
    drain = drains
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": hb, "times": times, "medians": med, "overhead": over,
                                    "collect_lost": collect_lost, "drain": drain, "nproc": os.cpu_count(), "kernel": os.uname().release}, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
