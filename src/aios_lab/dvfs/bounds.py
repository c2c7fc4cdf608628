"""How far any frequency policy could go on a demand (SIMULATED).

Two yardsticks for the learned governors; neither is a policy one could
deploy, because both see what no governor sees:

* `energy_lower_bound()`: a linear programme whose optimum is at or below
  the energy of *every* run of dvfs.sim on the demand that misses no
  deadline, whatever the governor. It knows the whole demand in advance and
  drops three costs the simulator charges, so it is a floor, not a target:
  - frequency changes are free and instant (the cluster may time-share its
    OPPs within a segment in any proportion; the simulator pays a 500 us
    latency per change and decides once a step);
  - an idle CPU costs only the power-collapsed `sleep_w` of the OPP (the
    simulator charges leakage for the first `idle_min_residency_s`);
  - work is fluid: it can be split across the OPPs of a segment.
  What it keeps is what makes the bound bite: all CPUs of the cluster share
  one OPP at a time, work cannot run before it arrives, and each CPU's work
  must be done, in FIFO order, by its deadlines.
  Why it is a bound: cut time at every arrival and deadline. In any
  zero-miss run, segment k gives each OPP o some time tau[k, o] (summing to
  the segment's length) and each CPU c some busy time b[c, k, o] <= tau[k, o]
  at it, doing r[o] * b of work at busy_w[o] watts, and it idles the rest at
  >= sleep_w[o]; the cumulative work of CPU c stays between what has arrived
  and what is due. Those numbers are a feasible point of the programme, and
  its objective is at most that run's energy. Idle time after the demand's
  span is not charged (a run may end there).
* `Clairvoyant`: a governor that sees each queued item's remaining work and
  deadline and, within `lookahead_s`, the work that will arrive and when it
  is due. Every step it asks for the slowest speed that still finishes, in
  FIFO order, everything it can see by its deadline plus `lateness_s` (the
  greedy form of Yao-Demers-Shenker's critical-interval rule), taking the
  max over CPUs since they share an OPP, and alternates between the two
  OPPs around that speed so that their mean matches it. `max_opp` caps
  the OPP it may ask for: the work that would need a faster one misses
  instead, which is how foresight spends a miss allowance well (the top
  OPP of gs101's big cluster costs 13 % more energy per unit of work than
  the one below it for 2.5 % more speed). It runs in the
  simulator with every cost the simulator charges, so its figures are
  reachable; it is a heuristic, not an optimum. With `lookahead_s=0` it
  knows only what is already queued: the most an online governor that knew
  each task's exact work and deadline (and nothing of the future) could do
  with this rule. With `predict_tau_s` it still knows the queued work but
  predicts the future instead of reading it: each CPU's recent arrival rate
  (an EWMA over the arrived intervals) extended over `lookahead_s`. That
  separates what knowing the future is worth from what knowing the work
  already queued is worth. With `estimate_work` as well it reads no item's
  work at all: it is an online governor. Queued items are estimated as the
  CPU's mean completed item plus `work_margin`, less what the running item
  has already done (its run time, which a kernel knows), and arrivals are
  counted, not weighed. It still reads each item's deadline, which a real
  system must be told (a per-task latency target). `estimate_work="task"`
  is the per-task rung: each queued item is estimated as the sum of its
  tasks' next-activation estimates (dvfs.task_signal: the kernel's util_est
  rule per task, scaled by 1 + `work_margin`), and arrivals are weighed by
  the estimates of the tasks that woke; it still reads no item's work.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import AiosError
from .demand import Demand
from .governors import Governor, Schedutil
from .platform import Cluster
from .sim import Obs, QueueItem, SimResult, Simulation, simulate, work_rates


class BoundError(AiosError):
    """The demand cannot be bounded: no schedule meets every deadline, or the solver failed."""


@dataclass
class EnergyBound:
    demand: str
    energy_j: float
    segments: int
    solve_s: float

    def as_dict(self) -> dict:
        return {"demand": self.demand, "energy_j": self.energy_j, "segments": self.segments,
                "solve_s": round(self.solve_s, 2), "simulated": True}


def _cumulative_limits(d: Demand, bp: np.ndarray, due: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per CPU and segment: the work arrived by the segment's start (an upper
    limit on the work done by its end) and the work owed by its end (a lower
    limit). Items run FIFO per CPU, so an item due by then is owed with every
    item ahead of it, even one due later (a long trace interval is due later
    than the short one after it)."""
    arrived_idx = np.searchsorted(d.starts_s, bp[:-1] + 1e-9, side="right")
    order = np.argsort(due, kind="stable")
    last_owed = np.maximum.accumulate(order)        # the furthest item owed once the p-th deadline passed
    p = np.searchsorted(due[order], bp[1:] + 1e-9, side="right")
    owed_idx = np.where(p > 0, last_owed[np.maximum(p - 1, 0)] + 1, 0)
    cum = np.vstack([np.zeros(d.nr_cpus), np.cumsum(d.work_s, axis=0)])   # (n+1, cpus)
    return cum[arrived_idx].T, cum[owed_idx].T


def energy_lower_bound(cluster: Cluster, demand: Demand, *, mem_share: float = 0.3) -> EnergyBound:
    """The least energy any zero-miss run of `demand` on `cluster` could use (see the module doc)."""
    from scipy import sparse
    from scipy.optimize import linprog

    t0 = time.perf_counter()
    d = demand.fold(cluster.nr_cpus)
    due = d.starts_s + d.deadline_s
    bp = np.unique(np.round(np.concatenate([[0.0], d.starts_s, due]), 9))
    n, C, O = len(bp) - 1, d.nr_cpus, cluster.nr_opps
    dt = np.diff(bp)
    arrived, owed = _cumulative_limits(d, bp, due)
    r = work_rates(cluster, mem_share)
    busy_w, sleep_w = cluster.busy_w, cluster.sleep_w
    # idle after the demand's span is not charged: a run may end there
    charged = np.clip((d.duration_s - bp[:-1]) / dt, 0.0, 1.0)

    # variables per segment k: tau[o] (time at OPP o), b[c, o] (CPU c busy at o), x[c] (work done by the end)
    per = O + C * O + C
    k = np.arange(n)[:, None]
    tau = k * per + np.arange(O)[None, :]                                   # (n, O)
    b = (k * per + O)[:, :, None] + (np.arange(C)[:, None] * O + np.arange(O)[None, :])[None]   # (n, C, O)
    x = k * per + O + C * O + np.arange(C)[None, :]                         # (n, C)
    nv = per * n
    cost = np.zeros(nv)
    cost[tau] = C * sleep_w[None, :] * charged[:, None]
    # busy at o costs busy_w instead of the idle sleep_w already counted in tau (none past the span)
    cost[b] = busy_w[None, None, :] - sleep_w[None, None, :] * charged[:, None, None]
    lo, hi = np.zeros(nv), np.full(nv, np.inf)
    lo[x], hi[x] = owed.T, arrived.T
    if np.any(owed.T > arrived.T + 1e-12):
        raise BoundError(f"demand {d.name}: work is due before it arrives")

    # equalities: sum_o tau = dt; x[k] - x[k-1] - sum_o r[o] b[c, o] = 0
    eq_rows = [np.repeat(np.arange(n), O)]
    eq_cols = [tau.ravel()]
    eq_vals = [np.ones(n * O)]
    xr = n + (k * C + np.arange(C)[None, :])                                 # (n, C) row of each work balance
    eq_rows += [xr.ravel(), np.repeat(xr.ravel(), O)]
    eq_cols += [x.ravel(), b.reshape(n * C, O).ravel()]
    eq_vals += [np.ones(n * C), np.tile(-r, n * C)]
    if n > 1:
        eq_rows.append(xr[1:].ravel())
        eq_cols.append(x[:-1].ravel())
        eq_vals.append(-np.ones((n - 1) * C))
    A_eq = sparse.csr_matrix((np.concatenate(eq_vals), (np.concatenate(eq_rows), np.concatenate(eq_cols))),
                             shape=(n + n * C, nv))
    b_eq = np.concatenate([dt, np.zeros(n * C)])
    # inequalities: b[c, o] - tau[o] <= 0
    m = n * C * O
    ub_rows = np.concatenate([np.arange(m), np.arange(m)])
    ub_cols = np.concatenate([b.ravel(), np.broadcast_to(tau[:, None, :], (n, C, O)).ravel()])
    ub_vals = np.concatenate([np.ones(m), -np.ones(m)])
    A_ub = sparse.csr_matrix((ub_vals, (ub_rows, ub_cols)), shape=(m, nv))
    res = linprog(cost, A_ub=A_ub, b_ub=np.zeros(m), A_eq=A_eq, b_eq=b_eq, bounds=np.stack([lo, hi], axis=1),
                  method="highs-ipm")  # interior point: 4x faster than simplex on the 20 s traces
    if res.status == 2:
        raise BoundError(f"demand {d.name}: no schedule meets every deadline, even at the top OPP throughout",
                         hint="the bound is for zero-miss runs; it is undefined for demand over the cluster's capacity")
    if res.status != 0:
        raise BoundError(f"demand {d.name}: the LP solver stopped without an optimum ({res.message})")
    return EnergyBound(d.name, float(res.fun), n, time.perf_counter() - t0)


class Clairvoyant(Governor):
    """See the module doc. Bound to one Simulation: it reads that run's queues and demand."""

    period_s = 0.001

    def __init__(self, sim: Simulation, *, lookahead_s: float = 0.6, lateness_s: float = 0.0,
                 max_opp: int | None = None, predict_tau_s: float | None = None, estimate_work: bool = False,
                 work_margin: float = 0.5, dither: bool = True, signal_rule: str = "util_est") -> None:
        if lookahead_s < 0:
            raise ValueError("lookahead_s must be >= 0")
        if predict_tau_s is not None and predict_tau_s <= 0:
            raise ValueError("predict_tau_s must be > 0")
        if estimate_work and predict_tau_s is None and lookahead_s > 0:
            raise ValueError("estimate_work reads no item's work, so it cannot read the future either: "
                             "give predict_tau_s or lookahead_s=0")
        top = sim.c.nr_opps - 1
        if max_opp is not None and not 0 <= max_opp <= top:
            raise ValueError(f"max_opp must be an OPP index in 0..{top}")
        self.sim = sim
        self.lookahead_s = float(lookahead_s)
        self.lateness_s = float(lateness_s)
        self.dither = dither
        self.max_opp = top if max_opp is None else int(max_opp)
        cap = "" if self.max_opp == top else f", max OPP {self.max_opp}"
        if estimate_work not in (False, True, "cpu", "task"):
            raise ValueError("estimate_work is False, True (= 'cpu': per-CPU mean item) or 'task' (per task)")
        self.predict_tau_s = predict_tau_s
        self.estimate_work = bool(estimate_work)
        self.signals = None
        if estimate_work == "task":
            from .task_signal import SignalConfig, TaskSignals

            # the run's estimator, fed by the simulator at every arrival from here on
            self.signals = sim.signals = TaskSignals(sim, SignalConfig(
                rule=signal_rule, tau_s=predict_tau_s or 0.1, margin=work_margin))
        self.work_margin = float(work_margin)
        seen = "predicted" if predict_tau_s else "lookahead"
        kind = ("online per-task" if self.signals else "online") if estimate_work else "clairvoyant"
        self.name = f"{kind}({seen} {lookahead_s * 1000:g} ms, lateness {lateness_s * 1000:g} ms{cap})"
        d = sim.d
        # the predictor's state: per CPU arrival rate (top-OPP work per second), the intervals folded in
        self._rate_est = np.zeros(d.nr_cpus)
        self._folded = 0
        self._step = float(np.median(np.diff(d.starts_s))) if len(d.starts_s) > 1 else 0.01
        # estimate_work: per CPU, an EWMA of completed items' work, from a prior of half an interval
        self._size = np.full(d.nr_cpus, self._step / 2)
        self._seen_done = [0] * d.nr_cpus
        self._seen_work = [0.0] * d.nr_cpus
        self._due = d.starts_s + d.deadline_s
        self._cum = np.cumsum(d.work_s, axis=0)    # (n, cpus) work arrived by each interval, inclusive
        self._rates = sim.rates
        # a request lands after the transition latency and is acted on at the next step
        self._guard = sim.c.transition_latency_s + sim.dt
        self._credit = 0.0

    def need(self) -> float:
        """The slowest work rate (top-OPP seconds per second) that finishes
        everything visible on every CPU by its deadline plus the lateness allowed."""
        s, d = self.sim, self.sim.d
        t = s.t
        k = s.arrived
        if self.predict_tau_s is not None:
            return self._need_predicted(t, k)
        end = int(np.searchsorted(d.starts_s, t + self.lookahead_s, side="left")) if self.lookahead_s else k
        need, queued = self._queued_need(t)
        if end > k:
            ahead = self._cum[k:end] - (self._cum[k - 1] if k else 0.0)   # (intervals, cpus), cumulative
            need = max(need, self._future_need(queued, ahead, self._due[k:end], t))
        return need

    def _future_need(self, queued: list[float], ahead: np.ndarray, due: np.ndarray, t: float) -> float:
        """The rate that finishes each CPU's queued work plus `ahead` (the cumulative
        work arriving, per future arrival and CPU) by each arrival's deadline `due`."""
        slack = np.maximum(due + self.lateness_s - t - self._guard, 1e-4)
        return float(((np.asarray(queued)[None, :] + ahead) / slack[:, None]).max())

    def _learn_sizes(self) -> None:
        """estimate_work: fold the items completed since the last look into each CPU's mean size."""
        s = self.sim
        for cpu, n in enumerate(s.completed):
            new = n - self._seen_done[cpu]
            if new:
                mean = (s.completed_work[cpu] - self._seen_work[cpu]) / new
                self._size[cpu] += (1 - 0.8 ** new) * (mean - self._size[cpu])   # weight 0.2 per item
                self._seen_done[cpu] = n
                self._seen_work[cpu] = s.completed_work[cpu]

    def _remaining(self, cpu: int, i: int, item: QueueItem) -> float:
        """An item's remaining work: read, or (estimate_work) the CPU's mean item size with a margin,
        less what the running item has already done (its run time so far, which a kernel knows)."""
        if not self.estimate_work:
            return item.remaining
        if self.signals is not None:
            return self.signals.remaining(item, i == 0)
        est = self._size[cpu] * (1 + self.work_margin)
        return max(est - (item.work - item.remaining), 0.1 * self._size[cpu]) if i == 0 else est

    def _queued_need(self, t: float) -> tuple[float, list[float]]:
        if self.signals is not None:
            self.signals.queued()   # folds the activations completed since the last look
        elif self.estimate_work:
            self._learn_sizes()
        need, totals = 0.0, []
        for cpu, q in enumerate(self.sim.queues):
            queued = 0.0
            for i, item in enumerate(q):
                queued += self._remaining(cpu, i, item)
                need = max(need, queued / max(item.deadline + self.lateness_s - t - self._guard, 1e-4))
            totals.append(queued)
        return need, totals

    def _need_predicted(self, t: float, k: int) -> float:
        """Queued work exactly; the future as each CPU's recent arrival rate
        (an EWMA with time constant predict_tau_s over the intervals arrived),
        arriving every trace interval and due as the last arrival was."""
        d = self.sim.d
        if self.signals is not None:   # the per-task estimator keeps its own arrival rate
            self._rate_est = np.asarray(self.signals.rate)
            self._folded = k
        while self._folded < k:
            i = self._folded
            gap = max(d.starts_s[i] - d.starts_s[i - 1], 1e-3) if i else self._step
            # estimate_work sees that work arrived (a task woke up), not how much
            work = (d.work_s[i] > 0) * self._size if self.estimate_work else d.work_s[i]
            self._rate_est += (1 - np.exp(-gap / self.predict_tau_s)) * (work / gap - self._rate_est)
            self._folded += 1
        need, queued = self._queued_need(t)
        if not k or not self.lookahead_s:
            return need
        last = d.starts_s[k - 1]
        arrive = last + self._step * np.arange(1, int(np.ceil((t + self.lookahead_s - last) / self._step)) + 1)
        arrive = arrive[arrive > t]
        if not len(arrive):
            return need
        steps = np.arange(1, len(arrive) + 1) * self._step
        ahead = steps[:, None] * self._rate_est[None, :]
        return max(need, self._future_need(queued, ahead, arrive + d.deadline_s[k - 1], t))

    def decide(self, obs: Obs) -> int:
        need, rates = self.need(), self._rates
        hi = next((o for o, r in enumerate(rates) if r >= need), len(rates) - 1)
        if hi > self.max_opp:
            return self.max_opp
        if not self.dither or hi == 0 or rates[hi] < need:
            return hi
        # run the OPP below for the share of steps that makes the mean rate `need`
        self._credit += (rates[hi] - need) / (rates[hi] - rates[hi - 1])
        if self._credit >= 1.0:
            self._credit -= 1.0
            return hi - 1
        return hi


def simulate_clairvoyant(cluster: Cluster, demand: Demand, *, mem_share: float = 0.3, **kw) -> SimResult:
    """One simulator run of `demand` under a Clairvoyant governor (keywords: its options)."""
    sim = Simulation(cluster, demand, mem_share=mem_share)
    gov = Clairvoyant(sim, **kw)
    return sim.run(gov)


# the rungs of the knowledge ladder (benchmarks/RESULTS.md): what each planner may read
LADDER = (("clairvoyant", {}),
          ("queued work + predicted arrivals", {"predict_tau_s": 0.1}),
          ("queued work only", {"lookahead_s": 0.0}),
          ("online: estimated work, predicted", {"predict_tau_s": 0.1, "estimate_work": True}),
          ("online: per-task estimates, predicted", {"predict_tau_s": 0.1, "estimate_work": "task",
                                                     "work_margin": 0.0}))


def yardsticks(cluster: Cluster, demand: Demand, *, mem_share: float = 0.3, lookahead_s: float = 0.6,
               lateness_s: float = 0.0, max_opp: int | None = None, lower_bound: bool = True) -> list[dict]:
    """schedutil, the lower bound and the speed planner at each rung of LADDER
    on one demand: one row each (energy, misses, ratios to schedutil)."""
    su = simulate(cluster, demand, Schedutil(), mem_share=mem_share)
    rows = [("schedutil", su.energy_j, su.misses)]
    if lower_bound:
        rows.append(("lower bound, zero misses", energy_lower_bound(cluster, demand, mem_share=mem_share).energy_j, 0))
    for what, knows in LADDER:
        kw = {"lookahead_s": lookahead_s, "lateness_s": lateness_s, "max_opp": max_opp, **knows}
        r = simulate_clairvoyant(cluster, demand, mem_share=mem_share, **kw)
        rows.append((what, r.energy_j, r.misses))
    return [{"demand": demand.name, "what": what, "energy_j": e, "misses": m, "items": su.items,
             "energy_x": e / su.energy_j if su.energy_j else float("nan"),
             "misses_x": m / max(su.misses, 1), "simulated": True} for what, e, m in rows]
