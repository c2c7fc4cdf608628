"""Cells per hour of a sweep on the local executor vs Ray on the same machine,
and the time to resume a sweep whose driver was killed half way.

The cells are real: dvfs-sim, every built-in governor on recorded traces
(the simulator replays each whole trace, ~0.2 s of work per cell here). Arms
are interleaved (local, ray, local, ray ...) and each starts from nothing:
a fresh sweep folder and a fresh `aios-lab sweep run` process, which
starts its process pool or a local Ray cluster (ray.init included), so the
figures carry each engine's start-up cost; cells/hour after the first cell
started is printed too. The resumed runs are timed in process (the runner's
own clock) after the CLI driver was SIGKILLed.

Usage: python benchmarks/sweep_bench.py [--repeat 3] [--jobs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aios_lab.sweep.executors import LocalExecutor
from aios_lab.sweep.layout import SweepDir
from aios_lab.sweep.runner import plan_sweep, run_sweep

GOVERNORS = ["schedutil", "ondemand", "conservative", "performance", "powersave"]
TRACES = [f"{k}-{r}" for k in ("bursty", "frames", "build") for r in (1, 2)]


def spec(path: Path, repeat: int = 1) -> Path:
    path.write_text(f'[sweep]\nname = "bench"\nkind = "dvfs-sim"\nrepeat = {repeat}\nseed = 1\n[grid]\n'
                    f"governor = {json.dumps(GOVERNORS)}\ntrace = {json.dumps(TRACES)}\n")
    return path


def one(arm: str, work: Path, jobs: int) -> dict:
    """`aios-lab sweep run` as a user runs it, timed from the command's start
    (Python, imports, the engine: a process pool or ray.init of a local
    cluster) to its exit."""
    root = work / f"{arm}-{time.monotonic_ns()}"
    plan = plan_sweep(spec(work / "s.toml"), root)
    cmd = [sys.executable, "-m", "aios_lab.cli", "sweep", "run", str(root), "--jobs", str(jobs), "--quiet",
           "--executor", arm]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    (end,) = [r for r in SweepDir(root).runs() if r["event"] == "end"]
    assert end["ran"] == len(plan.cells) and not end["failed"]
    # what the runner measured from its call: to the first cell started, and to the end
    steady = end["wall_s"] - end["first_start_s"]
    return {"cells": end["ran"], "wall_s": wall, "engine_start_s": wall - steady,
            "cells_per_h": end["ran"] / wall * 3600, "steady_cells_per_h": end["ran"] / steady * 3600}


def resume(work: Path, jobs: int) -> dict:
    """Kill a CLI driver (SIGKILL, its whole process group) once half the cells
    are published, then time the resumed run to the end."""
    root = work / f"resume-{time.monotonic_ns()}"
    plan = plan_sweep(spec(work / "s.toml", repeat=2), root)
    n = len(plan.cells)
    drv = subprocess.Popen([sys.executable, "-m", "aios_lab.cli", "sweep", "run", str(root), "--jobs", str(jobs),
                            "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    while len(list((root / "cells").rglob("result.json"))) < n // 2:
        time.sleep(0.02)
    os.killpg(drv.pid, signal.SIGKILL)
    drv.wait()
    t0 = time.monotonic()
    rep = run_sweep(SweepDir(root), LocalExecutor(jobs=jobs))
    wall = time.monotonic() - t0
    assert rep.skipped + rep.ran == n and not rep.failed
    t1 = time.monotonic()
    noop = run_sweep(SweepDir(root), LocalExecutor(jobs=jobs))
    noop_s = time.monotonic() - t1
    assert noop.ran == 0
    return {"cells": n, "done_at_kill": rep.skipped, "discarded": rep.cleared_staging, "resumed": rep.ran,
            "to_first_cell_s": rep.first_start_s, "scan_s": rep.scan_s, "resume_wall_s": wall,
            "finished_sweep_rerun_s": noop_s}


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    rows: dict[str, list[dict]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as d:
        work = Path(d)
        for r in range(a.repeat):
            for arm in ("local", "ray"):
                rows[arm].append(one(arm, work, a.jobs))
                print(f"round {r + 1} {arm:5}: {json.dumps({k: round(v, 3) for k, v in rows[arm][-1].items()})}",
                      flush=True)
        res = [resume(work, a.jobs) for _ in range(a.repeat)]
    cells = rows["local"][0]["cells"]
    print(f"\n{cells} dvfs-sim cells (whole recorded traces), {a.jobs} jobs, {os.cpu_count()} host CPUs; "
          f"median [min-max] of {a.repeat} interleaved rounds")
    print(f"{'executor':8} {'wall s':>18} {'engine start s':>18} {'cells/h':>26} {'cells/h after start':>26}")
    for arm, rs in rows.items():
        print(f"{arm:8} {med([r['wall_s'] for r in rs]):>18} {med([r['engine_start_s'] for r in rs]):>18} "
              f"{med([r['cells_per_h'] for r in rs]):>26} {med([r['steady_cells_per_h'] for r in rs]):>26}")
    lo = statistics.median(r["cells_per_h"] for r in rows["local"])
    ra = statistics.median(r["cells_per_h"] for r in rows["ray"])
    los = statistics.median(r["steady_cells_per_h"] for r in rows["local"])
    ras = statistics.median(r["steady_cells_per_h"] for r in rows["ray"])
    print(f"ray vs local: cells/h x{ra / lo:.2f} (with start-up), x{ras / los:.2f} (after start-up)")
    print(f"\nresume after the driver was SIGKILLed half way ({res[0]['cells']} cells; local executor):")
    for k in ("done_at_kill", "discarded", "resumed", "to_first_cell_s", "scan_s", "resume_wall_s",
              "finished_sweep_rerun_s"):
        print(f"  {k:24} {med([float(r[k]) for r in res])}")


if __name__ == "__main__":
    main()
