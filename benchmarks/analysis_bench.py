#!/usr/bin/env python3
"""How `aios-lab analyze` scales: time and peak memory for traces of 10^5,
10^6 and 10^7 events, against a plain pandas load of the same trace.

For each size this writes a synthetic trace (deterministic; events are
80 % switches, 15 % wakeups, 5 % migrations over 8 CPUs, plus 100 ms
task/CPU intervals), then in fresh child processes, one measurement each:
- baseline: `pandas.read_parquet` of every table file (just loading it);
- analyze: `trace_metrics` (duckdb SQL over the files: every metric of the
  report), with its default 1GB duckdb memory limit and with 256MB (duckdb
  spills to disk past it: the memory bound is a setting, not luck);
- report: `trace_metrics` + the HTML report with its figures;
- export perfetto: the .pftrace of the same trace (switches and wakeups).
Peak memory is the child's ru_maxrss. Each measurement runs --repeat times
in alternation; the median is printed, with the ratio to the pandas load.

Usage: .venv/bin/python benchmarks/analysis_bench.py [--sizes 1e5,1e6,1e7] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CPUS = 8
INTERVAL_NS = 100_000_000
EVENT_RATE = 200_000          # events per second of trace time: sets its duration


def make_trace(out: Path, events: int, seed: int = 0) -> Path:
    """A valid trace with `events` event rows, written through TraceWriter."""
    from aios_lab.telemetry.writer import TraceWriter

    rng = np.random.default_rng(seed)
    n_sw, n_wk = int(events * 0.80), int(events * 0.15)
    n_mg = events - n_sw - n_wk
    duration = max(events // EVENT_RATE, 1) * 1_000_000_000
    md = {"start": {"monotonic_ns": 0, "wall": 0.0}, "end": {"monotonic_ns": duration, "wall": duration / 1e9},
          "kernel": {"release": "synthetic"}, "interval_ms": INTERVAL_NS // 1_000_000,
          "topology": {"nr_llcs": 2, "nr_nodes": 2,
                       "cpus": [{"cpu": c, "llc": c // 4, "node": c // 4} for c in range(CPUS)]}}
    pids = np.arange(1000, 1000 + 2000, dtype=np.int32)
    w = TraceWriter(out, md, flush_rows=1_000_000)
    chunk = 1_000_000
    for lo in range(0, n_sw, chunk):
        n = min(chunk, n_sw - lo)
        ts = np.sort(rng.integers(0, duration, n)) if n else np.zeros(0, np.int64)
        nxt = rng.choice(pids, n)
        w.append_frame("switches", pd.DataFrame({
            "ts_ns": ts.astype(np.int64), "cpu": rng.integers(0, CPUS, n).astype(np.int32),
            "prev_pid": rng.choice(pids, n), "prev_tgid": rng.choice(pids, n),
            "prev_comm": "worker", "prev_prio": np.full(n, 120, np.int32),
            "prev_state": rng.choice([0, 1, 256], n).astype(np.int64),
            "next_pid": nxt, "next_tgid": nxt, "next_comm": "worker", "next_prio": np.full(n, 120, np.int32),
            "next_wait_ns": pd.array(rng.lognormal(9, 1.5, n).astype(np.int64), dtype="Int64")}))
    for lo in range(0, n_wk, chunk):
        n = min(chunk, n_wk - lo)
        pid = rng.choice(pids, n)
        w.append_frame("wakeups", pd.DataFrame({
            "ts_ns": np.sort(rng.integers(0, duration, n)).astype(np.int64), "pid": pid, "tgid": pid,
            "comm": "worker", "target_cpu": rng.integers(0, CPUS, n).astype(np.int32),
            "prev_cpu": pd.array(rng.integers(0, CPUS, n), dtype="Int32"),
            "waker_cpu": rng.integers(0, CPUS, n).astype(np.int32),
            "target_nr_running": pd.array(rng.integers(0, 4, n), dtype="Int32"),
            "since_last_ran_ns": pd.array(rng.integers(0, 10**7, n), dtype="Int64"),
            "weight": np.full(n, 1048576, np.int32)}))
    if n_mg:
        src = rng.integers(0, CPUS, n_mg)
        dst = (src + rng.integers(1, CPUS, n_mg)) % CPUS
        pid = rng.choice(pids, n_mg)
        w.append_frame("migrations", pd.DataFrame({
            "ts_ns": np.sort(rng.integers(0, duration, n_mg)).astype(np.int64), "pid": pid, "tgid": pid,
            "comm": "worker", "src_cpu": src.astype(np.int32), "dst_cpu": dst.astype(np.int32),
            "same_llc": pd.array(src // 4 == dst // 4, dtype="boolean"),
            "same_node": pd.array(src // 4 == dst // 4, dtype="boolean")}))
    starts = np.arange(0, duration, INTERVAL_NS, dtype=np.int64)
    k = len(starts)
    busy = rng.integers(0, INTERVAL_NS, (k, CPUS))
    w.append_frame("cpu_intervals", pd.DataFrame({
        "interval_start_ns": np.repeat(starts, CPUS), "interval_end_ns": np.repeat(starts + INTERVAL_NS, CPUS),
        "cpu": np.tile(np.arange(CPUS, dtype=np.int32), k),
        "busy_ns": busy.reshape(-1), "idle_ns": (INTERVAL_NS - busy).reshape(-1),
        "rq_len_samples": np.full(k * CPUS, 100), "rq_len_mean": rng.random(k * CPUS) * 3,
        "rq_len_max": np.full(k * CPUS, 4, np.int32)}))
    # 200 tasks active per interval.
    act = rng.choice(pids, (k, 200))
    n = act.size
    hist = np.zeros((n, 32), np.uint32)
    hist[:, 12] = 5
    w.append_frame("task_intervals", pd.DataFrame({
        "interval_start_ns": np.repeat(starts, 200), "interval_end_ns": np.repeat(starts + INTERVAL_NS, 200),
        "pid": act.reshape(-1), "tgid": act.reshape(-1), "comm": "worker",
        "oncpu_ns": rng.integers(0, INTERVAL_NS // 10, n), "wait_ns": rng.integers(0, 10**6, n),
        "wait_count": np.full(n, 5), "wait_max_ns": rng.integers(0, 10**6, n),
        "wait_hist": list(hist), "migrations": rng.integers(0, 3, n)}))
    return w.close()


CHILD = {
    "pandas load": """
import sys, pandas as pd
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob('*.parquet')):
    pd.read_parquet(f)
""",
    "analyze": """
import sys
from aios_lab.analysis.metrics import trace_metrics
trace_metrics(sys.argv[1])
""",
    "analyze, 256MB limit": """
import sys
from aios_lab.analysis.metrics import trace_metrics
trace_metrics(sys.argv[1], memory_limit="256MB")
""",
    "analyze + HTML report": """
import sys
from aios_lab.analysis.metrics import trace_metrics
from aios_lab.analysis.report import write_report
write_report(trace_metrics(sys.argv[1]), sys.argv[2])
""",
    "export perfetto": """
import sys
from aios_lab.analysis.perfetto import export_perfetto
export_perfetto(sys.argv[1], sys.argv[2] + ".pftrace")
""",
}


def measure(code: str, trace: Path, scratch: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child running `code`."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code, str(trace), str(scratch / "r.html")])
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"measurement failed: {code.strip().splitlines()[-1]}")
    return wall, ru.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1e5,1e6,1e7")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the traces (default: a temp dir)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    base = args.dir or Path(tempfile.mkdtemp(prefix="aios-analysis-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for size in sizes:
            trace = base / f"synthetic-{size}"
            if trace.exists():
                shutil.rmtree(trace)
            t = time.perf_counter()
            make_trace(trace, size)
            mb = sum(f.stat().st_size for f in trace.iterdir()) / 2**20
            print(f"\n{size:,} events: trace written in {time.perf_counter() - t:.1f} s, {mb:.1f} MiB on disk",
                  flush=True)
            runs: dict[str, list[tuple[float, float]]] = {k: [] for k in CHILD}
            for _ in range(args.repeat):
                for name, code in CHILD.items():      # interleaved
                    runs[name].append(measure(code, trace, base))
            base_t = statistics.median(w for w, _ in runs["pandas load"])
            base_m = statistics.median(m for _, m in runs["pandas load"])
            for name, vals in runs.items():
                wt = statistics.median(w for w, _ in vals)
                mem = statistics.median(m for _, m in vals)
                spread = max(w for w, _ in vals) - min(w for w, _ in vals)
                print(f"  {name:24} {wt:7.2f} s (spread {spread:.2f})  x{wt / base_t:5.2f} time   "
                      f"peak {mem:7.0f} MiB  x{mem / base_m:5.2f} memory", flush=True)
                results.append({"events": size, "what": name, "median_s": wt, "spread_s": spread,
                                "peak_rss_mib": mem, "time_vs_pandas": wt / base_t,
                                "memory_vs_pandas": mem / base_m, "disk_mib": mb})
            shutil.rmtree(trace)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
