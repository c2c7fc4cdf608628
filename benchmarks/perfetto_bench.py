#!/usr/bin/env python3
"""`aios-lab export perfetto` before and after a change: export rate, bytes
per event and peak memory on one synthetic trace, the two exporters
interleaved in one run.

The baseline is the exporter module as it was at a git revision
(``--baseline-rev``, default: the commit before the protos/CompactSched
exporter), loaded from ``git show`` into a child process; the current one is
the working tree's. The trace: ``--events`` rows, 80 % switches and 20 %
wakeups over 8 CPUs and 400 tasks with distinct names, each CPU's switches a
consistent chain (prev = the previous switch's next) as the collector
records them, wakeups onto a target CPU; each table in time order, as the
collector writes it, so the current exporter takes its read-order path, and
a third arm ("current, sorted", reorder_rows=0) forces its external sort,
the path for input out of order. Each arm runs --repeat times
alternately in a fresh child; medians and min-max are printed, and the
ratios current/baseline. Peak memory is the child's own VmHWM.

Usage: .venv/bin/python benchmarks/perfetto_bench.py [--events 1e7] [--repeat 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

CPUS = 8
TASKS = 400
CHUNK = 1_000_000
REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "1329561"  # before the exporter wrote through Perfetto's protos


def make_trace(out: Path, events: int, seed: int = 0) -> Path:
    from aios_lab.telemetry.writer import TraceWriter

    rng = np.random.default_rng(seed)
    n_sw = int(events * 0.8)
    n_wk = events - n_sw
    pids = np.arange(1000, 1000 + TASKS, dtype=np.int32)
    names = np.array([f"task-{p}" for p in pids], dtype=object)
    step = 2_000  # ns between events of one stream
    md = {"kernel": {"release": "6.12.0"}, "host": {"machine": "x86_64", "cpus": CPUS},
          "start": {"monotonic_ns": 0, "wall": 1.7e9}}
    w = TraceWriter(out, md, flush_rows=CHUNK)
    last = np.zeros(CPUS, dtype=np.int64)  # index into pids of the task each CPU runs
    for lo in range(0, n_sw, CHUNK):
        n = min(CHUNK, n_sw - lo)
        cpu = rng.integers(0, CPUS, n).astype(np.int32)
        nxt = rng.integers(0, TASKS, n)
        prev = np.empty(n, dtype=np.int64)
        for c in range(CPUS):  # each CPU's chain: prev = the previous next on that CPU
            rows = np.flatnonzero(cpu == c)
            if len(rows):
                prev[rows[0]] = last[c]
                prev[rows[1:]] = nxt[rows[:-1]]
                last[c] = nxt[rows[-1]]
        w.append_frame("switches", pd.DataFrame({
            "ts_ns": (lo + np.arange(n, dtype=np.int64)) * step, "cpu": cpu,
            "prev_pid": pids[prev], "prev_tgid": pids[prev], "prev_comm": names[prev],
            "prev_prio": np.full(n, 120, np.int32), "prev_state": rng.choice([0, 1, 256], n),
            "next_pid": pids[nxt], "next_tgid": pids[nxt], "next_comm": names[nxt],
            "next_prio": np.full(n, 120, np.int32), "next_wait_ns": np.zeros(n, np.int64)}))
    for lo in range(0, n_wk, CHUNK):
        n = min(CHUNK, n_wk - lo)
        who = rng.integers(0, TASKS, n)
        w.append_frame("wakeups", pd.DataFrame({
            "ts_ns": (lo + np.arange(n, dtype=np.int64)) * step * 4 + 1, "pid": pids[who],
            "tgid": pids[who], "comm": names[who],
            "target_cpu": rng.integers(0, CPUS, n).astype(np.int32),
            "prev_cpu": rng.integers(0, CPUS, n).astype(np.int32),
            "waker_cpu": rng.integers(0, CPUS, n).astype(np.int32),
            "weight": np.full(n, 1024 << 10, np.int32)}))
    return w.close()


CHILD = """
import importlib.util, json, resource, sys, time
path, trace, out, kwargs = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("exporter_under_test", path)
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
encode = [0.0, 0.0]
depth = [0]
def timed(fn):  # the encoding and writing alone: the bundle writer's own time
    def wrapper(*a, **k):
        # write_batch calls flush: count the outermost call only (counting
        # both doubled the writer's time in the figures before 2026-12-03's
        # fourth session).
        depth[0] += 1
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            depth[0] -= 1
            if not depth[0]:
                encode[0] += time.perf_counter() - t
                encode[1] += time.process_time() - c
    return wrapper
# write_sorted (until 2026-12-04) and add (since): the read-order path's entry.
for name in ("write_batch", "write_sorted", "add", "flush"):
    if hasattr(mod._BundleWriter, name):
        setattr(mod._BundleWriter, name, timed(getattr(mod._BundleWriter, name)))
r0 = resource.getrusage(resource.RUSAGE_SELF)
t, c = time.perf_counter(), time.process_time()
stats = mod.export_perfetto(trace, out, **json.loads(kwargs))
wall, cpu = time.perf_counter() - t, time.process_time() - c
r1 = resource.getrusage(resource.RUSAGE_SELF)
def peak_mib():
    # VmHWM: this process image's own peak. ru_maxrss is not: Linux carries
    # it over exec from the forking parent, which holds the generated trace
    # (before 2026-12-04 every arm showed the parent's ~400 MiB).
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"s": wall, "cpu_s": cpu, "encode_s": encode[0], "encode_cpu_s": encode[1],
                  "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
                  "events": stats.events, "bytes": stats.bytes,
                  "order": getattr(stats, "order", "external sort"),
                  "rss_mib": peak_mib()}))
"""


def run_arm(module: Path, kwargs: dict, trace: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(module), str(trace), str(out),
                           json.dumps(kwargs)],
                          capture_output=True, text=True, check=True)
    out.unlink()
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=float, default=1e7)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline-rev", default=DEFAULT_BASELINE)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="perfetto-bench-") as tmp:
        tmp = Path(tmp)
        base = tmp / "baseline_perfetto.py"
        base.write_text(subprocess.run(
            ["git", "-C", str(REPO), "show", f"{args.baseline_rev}:src/aios_lab/analysis/perfetto.py"],
            capture_output=True, text=True, check=True).stdout)
        current = REPO / "src/aios_lab/analysis/perfetto.py"
        # The synthetic trace is in time order, as the collector writes it,
        # so "current" takes the read-order path; "current, sorted" forces
        # the external sort (the fallback for input out of order).
        arms = {"baseline (" + args.baseline_rev + ")": (base, {}),
                "current": (current, {}),
                "current, sorted": (current, {"reorder_rows": 0})}
        trace = make_trace(tmp / "trace", int(args.events))
        print(f"trace: {int(args.events):,} events ({CPUS} CPUs, {TASKS} tasks)", flush=True)
        results: dict[str, list[dict]] = {k: [] for k in arms}
        for i in range(args.repeat):
            for name, (module, kwargs) in arms.items():
                r = run_arm(module, kwargs, trace, tmp / "out.pftrace")
                results[name].append(r)
                print(f"  run {i + 1} {name}: {r['s']:.2f} s, CPU {r['cpu_s']:.2f} s "
                      f"(user {r['user_s']:.2f}, system {r['sys_s']:.2f}) "
                      f"(encoding {r['encode_s']:.2f} s, CPU {r['encode_cpu_s']:.2f} s), "
                      f"{r['bytes']:,} bytes, {r['order']}, "
                      f"{r['rss_mib']:.0f} MiB", flush=True)
        print(f"{'exporter':<22} {'time median [min-max]':>24} {'M events/s':>10} "
              f"{'encoding M ev/s':>15} {'bytes/event':>11} {'peak RSS':>9}")
        summary = {}
        for name, rs in results.items():
            t = [r["s"] for r in rs]
            med = statistics.median(t)
            ev, nbytes = rs[0]["events"], rs[0]["bytes"]
            rss = statistics.median(r["rss_mib"] for r in rs)
            enc = statistics.median(r["encode_s"] for r in rs)
            summary[name] = (med, enc, nbytes / ev, rss)
            print(f"{name:<22} {med:>9.2f} s [{min(t):.2f}-{max(t):.2f}] {ev / med / 1e6:>10.2f} "
                  f"{ev / enc / 1e6:>15.2f} {nbytes / ev:>11.2f} {rss:>6.0f} MiB")
        (b_t, b_e, b_b, b_r), *others = summary.values()
        for name, (c_t, c_e, c_b, c_r) in list(summary.items())[1:]:
            print(f"{name} / baseline: rate x{b_t / c_t:.2f}, encoding rate x{b_e / c_e:.2f}, "
                  f"bytes/event x{c_b / b_b:.2f}, peak RSS x{c_r / b_r:.2f}")
        # CPU seconds (user + system, all threads) depend far less on what
        # else the machine runs than wall time does: on a shared host, read these.
        # User time apart: on this VM the system time (page faults, mostly)
        # swings by 2x between identical runs with what the host is doing.
        cpu = {name: tuple(statistics.median(r[k] for r in rs)
                           for k in ("cpu_s", "encode_cpu_s", "user_s", "sys_s"))
               for name, rs in results.items()}
        (b_cpu, b_ecpu, b_user, _), *others = cpu.values()
        ev = next(iter(results.values()))[0]["events"]
        for name, (tot, enc, user, system) in cpu.items():
            print(f"{name:<22} CPU {tot:.2f} s ({ev / tot / 1e6:.2f} M events per CPU-second; "
                  f"user {user:.2f} s, {ev / user / 1e6:.2f} M/user-s; system {system:.2f} s), "
                  f"encoding CPU {enc:.2f} s ({ev / enc / 1e6:.2f} M/CPU-s)")
        for name, (c_cpu, c_ecpu, c_user, _) in list(cpu.items())[1:]:
            print(f"{name} / baseline CPU: total x{b_cpu / c_cpu:.2f} faster, user x{b_user / c_user:.2f}, "
                  f"encoding x{b_ecpu / c_ecpu:.2f} faster")


if __name__ == "__main__":
    main()
