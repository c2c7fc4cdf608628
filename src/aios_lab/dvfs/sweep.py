"""The learned table governor (after CRAVE): sample the frequency space at
design time, keep the best setting per state bucket.

1. Sample: replay every training demand at every fixed OPP (on the
   simulator here; `aios_lab.cpufreq` could pin real OPPs on a host with
   cpufreq the same way). Per step the simulator logs the state bucket
   (utilisation, queue of the busiest CPU) and what the step cost: energy,
   deadline misses, overdue time.
2. Choose: for each bucket, the OPP with the lowest mean cost per step,
   cost = energy + lam x (misses + overdue-seconds / step), normalised by
   the top OPP's busy power. Buckets never sampled fall back to schedutil's
   choice; the table is then made non-decreasing in utilisation and queue
   (more demand never gets a lower frequency).
3. Tune: lam over a grid; keep the table with the least training energy whose
   training deadline misses stay within `miss_slack` of schedutil's.

Every number here is SIMULATED.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import budget
from .demand import Demand
from .governors import Schedutil, Static, table_governor_for
from .learners import TableLearner, register
from .platform import Cluster
from .rl import schedutil_perf
from .sim import STATE_FNS, Simulation, StepLog, simulate
from .table import PERF_MAX, RQ_BUCKETS, UTIL_BUCKETS, FreqTable


@dataclass
class Samples:
    steps: np.ndarray      # [opp, ub, rb]
    energy: np.ndarray
    misses: np.ndarray
    overdue: np.ndarray
    step_s: float


def sample(cluster: Cluster, demands: list[Demand], *, mem_share: float = 0.3,
           progress: Callable[[str], None] | None = None, state: str = "util-queue",
           opps: list[int] | None = None, signals: Callable[[Simulation], object] | None = None) -> Samples:
    """Step 1 of the module doc, at every OPP (or those in `opps`). `signals`
    makes the per-task estimator a run's state reads (default the run's own,
    Simulation.task_signals); benchmarks/dvfs_task_state.py passes the
    item-by-item definition to time it against."""
    shape = (cluster.nr_opps, UTIL_BUCKETS, RQ_BUCKETS)
    s = Samples(np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape), 0.001)
    # folded once, so what a demand computes on first use (Demand.item_tasks) serves every OPP
    demands = [d.fold(cluster.nr_cpus) for d in demands]
    for o in range(cluster.nr_opps) if opps is None else opps:
        for d in demands:
            # cut the drain short: steps after the demand ends say little about a bucket
            sim = Simulation(cluster, d, mem_share=mem_share, start_opp=o, cutoff_factor=1.2)
            if signals is not None:
                sim.signals = signals(sim)
            fn = STATE_FNS[state]
            fn(sim)   # the state's signals exist before the first arrival
            sim.enable_log(lambda: fn(sim))
            sim.run(Static(o))
            if not sim.log:
                continue
            log = StepLog(*np.array(sim.log, dtype=float).T)   # one column per field
            ub, rb = log.util_bucket.astype(int), log.queue_bucket.astype(int)
            np.add.at(s.steps[o], (ub, rb), 1)
            np.add.at(s.energy[o], (ub, rb), log.energy_j)
            np.add.at(s.misses[o], (ub, rb), log.misses)
            np.add.at(s.overdue[o], (ub, rb), log.overdue_s)
            s.step_s = sim.dt
        if progress:
            progress(f"sampled OPP {o + 1}/{cluster.nr_opps} ({cluster.freqs_khz[o] // 1000} MHz)")
    return s


def choose(cluster: Cluster, s: Samples, lam: float, *, min_visits: int = 5,
           overdue_weight: float = 0.25) -> np.ndarray:
    """The per-bucket cheapest OPP's perf (the state is whatever `s` was sampled over)."""
    e_norm = cluster.nr_cpus * float(cluster.busy_w[-1]) * s.step_s
    with np.errstate(invalid="ignore", divide="ignore"):
        cost = (s.energy / e_norm + lam * (s.misses + overdue_weight * s.overdue / s.step_s)) / s.steps
    cost[s.steps < min_visits] = np.inf
    perf = np.zeros((UTIL_BUCKETS, RQ_BUCKETS), dtype=np.int64)
    for ub in range(UTIL_BUCKETS):
        for rb in range(RQ_BUCKETS):
            c = cost[:, ub, rb]
            o = int(np.argmin(c)) if np.isfinite(c).any() else cluster.opp_for_perf(schedutil_perf(ub))
            perf[ub, rb] = cluster.table_perf(o)
    perf = np.maximum.accumulate(np.maximum.accumulate(perf, axis=0), axis=1)
    return np.clip(perf, 1, PERF_MAX)


# the parameters recorded as the table's meta["config"], in this order
CONFIG = ("lambdas", "miss_slack", "per_trace", "abs_slack", "min_visits", "overdue_weight", "bisect_steps")


@register
class SweepLearner(TableLearner):
    """The sampled table (see the module doc) over `state` (FreqTable.state).

    Fitted: ``table_``; ``candidates_`` (one row per lambda tried: its
    training energy, misses and excess over the miss budget);
    ``schedutil_train_`` (schedutil's training energy and misses);
    ``samples_`` (what the sampling logged); ``curve_`` is empty (no
    episodes)."""

    name = "sweep"

    def __init__(self, cluster: Cluster | str = "gs101:big", *,
                 lambdas: tuple[float, ...] = (0.25, 1, 4, 16, 64, 256, 1024),
                 miss_slack: float = 0.05,     # training misses <= schedutil's x (1 + slack)
                 # per_trace: the budget holds for every training trace on its own (plus
                 # abs_slack of its items), so misses cannot be traded between kinds of
                 # demand; otherwise it holds for the sum over all traces
                 per_trace: bool = False, abs_slack: float = 0.005,
                 min_visits: int = 5,          # a bucket/OPP pair seen fewer steps is not trusted
                 overdue_weight: float = 0.25, bisect_steps: int = 5,
                 refine_passes: int = 0,       # coordinate-descent passes after the sampled choice (refine)
                 mem_share: float = 0.3, state: str = "util-queue") -> None:
        self.cluster = cluster
        self.lambdas = lambdas
        self.miss_slack = miss_slack
        self.per_trace = per_trace
        self.abs_slack = abs_slack
        self.min_visits = min_visits
        self.overdue_weight = overdue_weight
        self.bisect_steps = bisect_steps
        self.refine_passes = refine_passes
        self.mem_share = mem_share
        self.state = state

    def fit(self, X: list[Demand], y: None = None, *, test: list[Demand] | None = None,
            progress: Callable[[str], None] | None = None, samples: Samples | None = None) -> "SweepLearner":
        """Sample, choose and tune on `X`; `test` is not looked at. `samples`:
        the `samples_` of an earlier fit on the same demands, cluster, memory
        share and state (sampling depends on nothing else, so a search over
        `miss_slack` or `lambdas` samples once)."""
        train = self._check_demands(X)
        cluster = self._cluster()
        mem_share, state = self.mem_share, self.state
        if samples is None:
            samples = sample(cluster, train, mem_share=mem_share, progress=progress, state=state)
        base = [simulate(cluster, d, Schedutil(), mem_share=mem_share) for d in train]
        base_misses = sum(r.misses for r in base)
        base_energy = sum(r.energy_j for r in base)
        excess = budget.miss_excess(base, miss_slack=self.miss_slack, per_trace=self.per_trace,
                                    abs_slack=self.abs_slack)
        cands: list[dict] = []

        def trial(lam: float) -> dict:
            perf = choose(cluster, samples, lam, min_visits=self.min_visits, overdue_weight=self.overdue_weight)
            tab = FreqTable(perf, method="sweep", state=state)
            res = [simulate(cluster, d, table_governor_for(tab), mem_share=mem_share) for d in train]
            row = {"lambda": lam, "energy_j": sum(r.energy_j for r in res), "misses": sum(r.misses for r in res),
                   "excess": excess(res), "perf": perf}
            cands.append(row)
            if progress:
                progress(f"lambda {lam:g}: training energy {row['energy_j']:.2f} J (schedutil {base_energy:.2f}), "
                         f"misses {row['misses']} (schedutil {base_misses}), over budget by {row['excess']:.0f}")
            return row

        for lam in self.lambdas:
            trial(lam)
        # Misses fall as lambda grows: bisect (geometrically) between the largest
        # lambda over the budget and the smallest within it, where the cheapest
        # table that still meets the budget lies.
        for _ in range(self.bisect_steps):
            over = [c["lambda"] for c in cands if c["excess"] > 0]
            within = [c["lambda"] for c in cands if c["excess"] == 0]
            if not over or not within:
                break
            lo = max((x for x in over if x < min(within)), default=None)
            if lo is None:
                break
            trial(float(np.sqrt(lo * min(within))))
        ok = [c for c in cands if c["excess"] == 0]
        best = min(ok, key=lambda c: c["energy_j"]) if ok else min(cands, key=lambda c: (c["excess"], c["energy_j"]))
        meta = {"config": {k: getattr(self, k) for k in CONFIG}, "mem_share": mem_share,
                "cluster": cluster.describe(),
                "train": [d.name for d in train], "lambda": best["lambda"], "met_miss_budget": bool(ok),
                "budget": "per trace" if self.per_trace else "total",
                "train_energy_j": best["energy_j"], "train_misses": best["misses"],
                "schedutil_train_energy_j": base_energy, "schedutil_train_misses": base_misses, "simulated": True}
        table = FreqTable(best["perf"], method="sweep", meta=meta, state=state)
        if self.refine_passes:
            table = refine(cluster, table, train, lam=best["lambda"], passes=self.refine_passes,
                           mem_share=mem_share, visits=samples.steps.sum(axis=0), excess=excess, progress=progress)
        for c in cands:
            c.pop("perf")
        self.table_, self.candidates_, self.samples_, self.curve_ = table, cands, samples, []
        self.schedutil_train_ = {"energy_j": base_energy, "misses": base_misses}
        return self


def refine(cluster: Cluster, table: FreqTable, train: list[Demand], *, lam: float, passes: int = 1,
           top_buckets: int = 24, steps: tuple[int, ...] = (-2, -1, 1, 2), mem_share: float = 0.3,
           visits: np.ndarray | None = None, excess: Callable[[list], float] | None = None,
           progress: Callable[[str], None] | None = None) -> FreqTable:
    """Coordinate descent on the whole-run objective: for the most visited
    buckets, try neighbouring OPPs and keep a change when the training
    energy + lam x misses (energy in top-OPP busy-power seconds) drops.
    Sampling attributes costs step by step and so misses effects that build
    up over time (a backlog left by a low OPP); this sees them. With
    `excess` (see miss_excess), the objective is constrained instead: least
    energy among tables within the miss budget, and any table within it beats
    any table over it."""
    e_norm = cluster.nr_cpus * float(cluster.busy_w[-1]) * 0.001

    def objective(perf: np.ndarray) -> tuple[tuple, float, int]:
        tab = FreqTable(perf, method="sweep", state=table.state)
        res = [simulate(cluster, d, table_governor_for(tab), mem_share=mem_share) for d in train]
        e = sum(r.energy_j for r in res)
        m = sum(r.misses for r in res)
        if excess is not None:
            return budget.within_first(e, excess(res)), e, m
        return (0, e / e_norm + lam * m), e, m

    perf = table.perf.copy()
    best, e, m = objective(perf)
    order = ([tuple(ix) for ix in np.argwhere(visits > 0)[np.argsort(-visits[visits > 0])]]
             if visits is not None else [(u, r) for u in range(UTIL_BUCKETS) for r in range(RQ_BUCKETS)])
    done = 0
    for p in range(passes):
        start = best
        for ub, rb in order[:top_buckets]:
            cur = cluster.opp_for_perf(perf[ub, rb])
            for step in steps:
                o = cur + step
                if not 0 <= o < cluster.nr_opps:
                    continue
                cand = perf.copy()
                cand[ub, rb] = cluster.table_perf(o)
                # keep the table monotone: raise the buckets above, lower those below
                cand[ub:, rb:] = np.maximum(cand[ub:, rb:], cand[ub, rb])
                cand[:ub + 1, :rb + 1] = np.minimum(cand[:ub + 1, :rb + 1], cand[ub, rb])
                j, ce, cm = objective(cand)
                if j < best:
                    best, perf, e, m = j, cand, ce, cm
                    break
        done = p + 1
        if progress:
            progress(f"refine pass {p + 1}: training energy {e:.2f} J, misses {m}")
        if best == start:
            break  # a pass that changed nothing: the next would try the same steps from the same table
    return FreqTable(perf, method="sweep", meta=dict(table.meta, refined_passes=done,
                                                     train_energy_j=e, train_misses=m), state=table.state)
