#!/usr/bin/env python3
"""Exploratory (SIMULATED): the sweep with a validation run, against overfitting.

benchmarks/dvfs_bench.py trained the table on runs 1-2 of each trace kind
(runs 1, 2, 4 and 5 since runs 4-5 were recorded) and held out run 3; its
learners met their miss budget on the training runs and overshot it on run 3. Here the table is sampled on run 1 only, lambda is
chosen by run 2's miss budget, and refinement (coordinate descent on the energy of
runs 1 and 2) accepts a step only while each stays within schedutil's misses
+ 5 % on its own. Run 3 is reported as before.

    .venv/bin/python benchmarks/dvfs_validation_probe.py [refine passes, default 2]
"""
from __future__ import annotations

import sys

from aios_lab.dvfs import experiment as ex, budget
from aios_lab.dvfs.governors import TableGovernor, Schedutil
from aios_lab.dvfs.platform import load_cluster
from aios_lab.dvfs.sim import simulate
from aios_lab.dvfs.sweep import SweepLearner, choose, refine, sample
from aios_lab.dvfs.table import FreqTable

cl = load_cluster("gs101:big")
tr, te = ex.split()
train, test = ex.load_demands(tr), ex.load_demands(te)
fit = [d for d in train if d.name.endswith("-1")]
val = [d for d in train if d.name.endswith("-2")]
print(ex.SIMULATED)
print("fit", [d.name for d in fit], "validate", [d.name for d in val], flush=True)
cfg = SweepLearner()
S = sample(cl, fit)


def run(perf, ds):
    t = FreqTable(perf, method="sweep")
    return [simulate(cl, d, TableGovernor(t)) for d in ds]


bval = [simulate(cl, d, Schedutil()) for d in val]
bfit = [simulate(cl, d, Schedutil()) for d in fit]
ex_val = budget.miss_excess(bval, miss_slack=0.05)
ex_fit = budget.miss_excess(bfit, miss_slack=0.05)
best = None
for lam in cfg.lambdas:
    perf = choose(cl, S, lam, min_visits=cfg.min_visits, overdue_weight=cfg.overdue_weight)
    rv = run(perf, val)
    e, x = sum(r.energy_j for r in rv), ex_val(rv)
    print(f"lam {lam}: val energy {e:.2f} (sched {sum(b.energy_j for b in bval):.2f}) excess {x}", flush=True)
    key = budget.within_first(e, x)
    if best is None or key < best[0]:
        best = (key, perf, lam)
perf = best[1]
passes = int(sys.argv[1]) if len(sys.argv) > 1 else 2
# refine() minimises energy over the runs it is given, within `excess`: here
# runs 1 and 2, each set held to its own schedutil budget (a total over both
# would let one run's slack pay for the other's misses)
n = len(fit)
table = refine(cl, FreqTable(perf, method="sweep"), fit + val, lam=best[2], passes=passes,
               visits=S.steps.sum(axis=0), excess=lambda res: ex_fit(res[:n]) + ex_val(res[n:]),
               progress=lambda m: print(m, flush=True))
tot = {"table": [0.0, 0], "schedutil": [0.0, 0]}
for d in test:
    for name, gov in (("table", TableGovernor(table)), ("schedutil", Schedutil())):
        r = simulate(cl, d, gov)
        tot[name][0] += r.energy_j
        tot[name][1] += r.misses
        print(f"{d.name:10} {name:10} {r.energy_j:7.2f} J {r.misses:5d} misses")
(e, m), (be, bm) = tot["table"], tot["schedutil"]
print(f"held out: energy x{e / be:.3f} misses x{m / bm:.3f}  [SIMULATED]")
