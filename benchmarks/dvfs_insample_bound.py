#!/usr/bin/env python3
"""How far can a table over this state go? (SIMULATED, a diagnostic, not a result.)

Trains the sweep table on the held-out traces themselves (run 3 of each
kind, or --run N) with refinement run until it stops improving, and replays
those same traces. The same learner trained on other runs cannot be
expected to do better on them than when fitted to them, so if this in-sample
table misses the issue's target (>= 20 % less energy than schedutil at <= 5 %
more deadline misses), the table's state (utilisation x queue buckets) or
the learner, not the amount of training data, is what stands in the way.
It bounds this learner (coordinate descent from the sampled table), not
every table over the state: a better optimiser may find more. Test a new
state signal or learner here, in the simulator, before building it into BPF.

    .venv/bin/python benchmarks/dvfs_insample_bound.py --passes 4
"""
from __future__ import annotations

import argparse
import sys
import time

from aios_lab.dvfs import experiment as ex
from aios_lab.dvfs.governors import Schedutil, TableGovernor
from aios_lab.dvfs.platform import load_cluster
from aios_lab.dvfs.sim import simulate
from aios_lab.dvfs.sweep import SweepLearner


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=int, default=ex.TEST_RUN, help="the recorded run of each kind to fit and replay")
    ap.add_argument("--passes", type=int, default=4, help="refinement passes (stops early when one changes nothing)")
    ap.add_argument("--cluster", default="gs101:big")
    ap.add_argument("--mem-share", type=float, default=0.3)
    a = ap.parse_args()
    cl = load_cluster(a.cluster)
    _, paths = ex.split(a.run)
    demands = ex.load_demands(paths)
    print(f"{ex.SIMULATED}\nIN-SAMPLE: the table is fitted to the very traces it is scored on "
          f"({', '.join(d.name for d in demands)}); what this learner reaches at best, not a result")
    t0 = time.time()
    # a long lambda grid: fitted in-sample, the cheapest tables within budget sit at small lambdas
    sw = SweepLearner(cl, lambdas=(0.001, 0.01, 0.1, 0.25, 1, 4, 16, 64, 256, 1024), mem_share=a.mem_share,
                      refine_passes=a.passes).fit(demands, progress=lambda m: print(" ", m, flush=True))
    print(f"fitted in {time.time() - t0:.0f} s")
    e = m = be = bm = 0.0
    for d in demands:
        b = simulate(cl, d, Schedutil(), mem_share=a.mem_share)
        r = simulate(cl, d, TableGovernor(sw.table_), mem_share=a.mem_share)
        print(f"{d.name:10} schedutil {b.energy_j:7.2f} J {b.misses:5d} misses | in-sample table "
              f"{r.energy_j:7.2f} J ({r.energy_j / b.energy_j:.2f}x) {r.misses:5d} misses")
        e, m, be, bm = e + r.energy_j, m + r.misses, be + b.energy_j, bm + b.misses
    print(f"in-sample table, all traces: energy x{e / be:.3f}, misses x{m / max(bm, 1):.3f} "
          f"({m:.0f} against schedutil's {bm:.0f})  [SIMULATED]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
