#!/usr/bin/env python3
"""What the issue-21 value checks cost `aios-lab analyze`.

trace_metrics now scans each table once more (analysis/sanity.check_values:
min/max of every time column, backwards intervals, negative CPUs) before it
reports anything. This times trace_metrics with the check and with it
replaced by a no-op, interleaved in one process per size (duckdb's page
cache is warm for both arms after the first pass), and prints the medians,
their spread and the ratio, of wall time and of the process's CPU time
(all duckdb threads; steadier than wall time on a shared machine). The
trace is analysis_bench.make_trace's.

Usage: .venv/bin/python benchmarks/sanity_overhead.py [--sizes 1e5,1e6] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from analysis_bench import make_trace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e5,1e6")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from aios_lab.analysis import metrics

    checked = metrics.check_values
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(float(s)) for s in args.sizes.split(",")):
            trace = make_trace(Path(tmp) / f"t{size}", size)
            metrics.trace_metrics(trace)  # warm-up: imports, page cache
            arms = ("with check", "without")
            times = {(a, c): [] for a in arms for c in ("wall", "cpu")}
            for _ in range(args.repeat):
                for arm in arms:  # interleaved arms
                    metrics.check_values = checked if arm == "with check" else (lambda db, tables=None: None)
                    t0, c0 = time.perf_counter(), time.process_time()
                    metrics.trace_metrics(trace)
                    times[(arm, "wall")].append(time.perf_counter() - t0)
                    times[(arm, "cpu")].append(time.process_time() - c0)
            metrics.check_values = checked
            for clock in ("wall", "cpu"):
                med = {a: statistics.median(times[(a, clock)]) for a in arms}
                for a in arms:
                    v = times[(a, clock)]
                    print(f"{size:>9} events  {clock:4} {a:10}  median {med[a]:.3f} s  [{min(v):.3f}-{max(v):.3f}]")
                print(f"{size:>9} events  {clock:4} ratio with/without x{med['with check'] / med['without']:.3f}")


if __name__ == "__main__":
    main()
