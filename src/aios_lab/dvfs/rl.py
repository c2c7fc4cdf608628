"""The RL frequency policy (after MobiRL): tabular Q-learning on FreqEnv.

The agent's state is the table's state (utilisation bucket, queue bucket),
its action an OPP, so the learned greedy policy *is* a FreqTable that fits
a BPF array map: no function approximator to squeeze into the kernel. The
current OPP is in the environment's observation but not in the agent's
state, because the deployed table cannot condition on it cheaply.

Everything it learns from and is evaluated on is SIMULATED (dvfs.sim).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .budget import miss_excess, within_first
from .demand import Demand
from .env import FreqEnv, RewardWeights
from .governors import table_governor_for
from .learners import TableLearner, register
from .platform import Cluster
from .sim import simulate
from .table import PERF_MAX, RQ_BUCKETS, UTIL_BUCKETS, FreqTable


def schedutil_perf(ub: int) -> int:
    """What schedutil would ask for at the middle of a utilisation bucket."""
    return int(min(PERF_MAX, round(1.25 * (ub + 0.5) * (1024 / UTIL_BUCKETS))))


def action_opps(cluster: Cluster, max_actions: int) -> list[int]:
    """OPP indices the agent chooses among: evenly spread, lowest and highest included."""
    n = cluster.nr_opps
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(n, max(2, max_actions)))})


def table_from_q(q: np.ndarray, visits: np.ndarray, cluster: Cluster, meta: dict,
                 actions: list[int] | None = None, monotone: bool = True, state: str = "util-queue") -> FreqTable:
    actions = actions or list(range(cluster.nr_opps))
    perf = np.zeros((UTIL_BUCKETS, RQ_BUCKETS), dtype=np.int64)
    for ub in range(UTIL_BUCKETS):
        for rb in range(RQ_BUCKETS):
            if visits[ub, rb].sum() > 0:
                perf[ub, rb] = cluster.table_perf(actions[int(np.argmax(q[ub, rb]))])
            else:  # never seen in training: behave like schedutil there
                perf[ub, rb] = cluster.table_perf(cluster.opp_for_perf(schedutil_perf(ub)))
    if monotone:
        # The sweep's structural prior: more utilisation or a longer queue never
        # gets a lower frequency. Q-learning's greedy table has holes (a rarely
        # visited high-utilisation bucket at a low OPP) that let a backlog grow
        # without bound on demand it has not seen. A running maximum would let
        # one noisy high entry at low utilisation raise every bucket above it,
        # so each queue column gets the visit-weighted isotonic fit along
        # utilisation instead, snapped to an OPP, then a running max over queues.
        from sklearn.isotonic import IsotonicRegression

        w = visits.sum(axis=2).astype(float) + 1e-3  # unvisited buckets barely count
        for rb in range(RQ_BUCKETS):
            fit = IsotonicRegression(increasing=True).fit_transform(
                np.arange(UTIL_BUCKETS), perf[:, rb].astype(float), sample_weight=w[:, rb])
            perf[:, rb] = [cluster.table_perf(cluster.opp_for_perf(v)) for v in fit]
        perf = np.maximum.accumulate(np.maximum.accumulate(perf, axis=0), axis=1)
    perf = np.clip(perf, 1, PERF_MAX)
    return FreqTable(perf, method="rl", meta=dict(meta, unvisited=int((visits.sum(axis=2) == 0).sum())), state=state)


# the parameters recorded as the table's meta["config"], in this order
CONFIG = ("episodes", "window_s", "decision_s", "alpha", "gamma", "eps_start", "eps_end", "eval_every",
          "max_actions", "prior", "select_every", "miss_slack", "seed")


@register
class QLearner(TableLearner):
    """Tabular Q-learning of a table over `state` (FreqTable.state).

    Fitted: ``table_`` (the greedy table kept: the best one on the training
    demands, see fit), ``curve_`` (one row per episode, with held-out
    figures every `eval_every` episodes when fit is given test demands),
    ``q_`` and ``visits_`` (per state bucket and action), ``actions_`` (the
    OPP indices the actions stand for)."""

    name = "rl"

    def __init__(self, cluster: Cluster | str = "gs101:big", *, episodes: int = 300,
                 window_s: float = 4.0,        # each episode replays a random window of a training demand
                 decision_s: float = 0.004, alpha: float = 0.1,
                 gamma: float = 0.99,          # ~100 decisions (0.4 s): long enough to see a backlog build up
                 eps_start: float = 0.5, eps_end: float = 0.02,
                 eval_every: int = 25,         # learning-curve points on the held-out demands
                 max_actions: int = 9,         # OPPs the agent may pick, spread over the table (fewer: faster learning)
                 prior: float = 1.0,           # weight of the schedutil-shaped initial Q values
                 select_every: int = 25,       # judge the greedy table on the training demands this often, keep the best
                 miss_slack: float = 0.05,     # "best": least training energy with misses <= schedutil's x (1 + slack)
                 seed: int = 0, weights: RewardWeights = RewardWeights(), mem_share: float = 0.3,
                 state: str = "util-queue") -> None:
        self.cluster = cluster
        self.episodes = episodes
        self.window_s = window_s
        self.decision_s = decision_s
        self.alpha = alpha
        self.gamma = gamma
        self.eps_start = eps_start
        self.eps_end = eps_end
        self.eval_every = eval_every
        self.max_actions = max_actions
        self.prior = prior
        self.select_every = select_every
        self.miss_slack = miss_slack
        self.seed = seed
        self.weights = weights
        self.mem_share = mem_share
        self.state = state

    def fit(self, X: list[Demand], y: None = None, *, test: list[Demand] | None = None,
            progress: Callable[[str], None] | None = None) -> "QLearner":
        train = self._check_demands(X)
        cluster = self._cluster()
        mem_share, state = self.mem_share, self.state
        env = FreqEnv(cluster, train, decision_s=self.decision_s, mem_share=mem_share, weights=self.weights,
                      window_s=self.window_s, state=state)
        rng = np.random.default_rng(self.seed)
        actions = action_opps(cluster, self.max_actions)
        n_act = len(actions)
        # Start from schedutil's choice: a small penalty on each action by its
        # distance from what schedutil would pick in that utilisation bucket, so
        # the first greedy policy is sensible and exploration refines it.
        q = np.zeros((UTIL_BUCKETS, RQ_BUCKETS, n_act))
        act_perf = np.array([cluster.perf[a] for a in actions])
        for ub in range(UTIL_BUCKETS):
            q[ub, :, :] = -self.prior * np.abs(act_perf - schedutil_perf(ub)) / PERF_MAX
        visits = np.zeros((UTIL_BUCKETS, RQ_BUCKETS, n_act), dtype=np.int64)
        curve: list[dict] = []
        meta = {"actions_khz": [cluster.freqs_khz[a] for a in actions],
                "config": {k: getattr(self, k) for k in CONFIG},
                "weights": self.weights.as_dict(), "mem_share": mem_share, "cluster": cluster.describe(),
                "train": [d.name for d in train], "test": [d.name for d in (test or [])], "simulated": True}
        # Q-learning's greedy policy swings from one evaluation to the next (the
        # reward is noisy: a window's misses depend on the backlog left by random
        # exploration), so the policy kept is the best one seen on the *training*
        # demands, judged like the sweep's: least energy within schedutil's misses.
        from .governors import Schedutil

        base = [simulate(cluster, d, Schedutil(), mem_share=mem_share) for d in train] if self.select_every else []
        excess = miss_excess(base, miss_slack=self.miss_slack)
        best: tuple[tuple, FreqTable] | None = None
        obs, _ = env.reset(seed=self.seed)
        for ep in range(self.episodes):
            eps = self.eps_end + (self.eps_start - self.eps_end) * max(0.0, 1 - ep / (0.7 * self.episodes))
            if ep:
                obs, _ = env.reset()
            total, energy, misses, done = 0.0, 0.0, 0, False
            while not done:
                ub, rb = int(obs[0]), int(obs[1])
                a = int(rng.integers(n_act)) if rng.random() < eps else int(np.argmax(q[ub, rb]))
                obs, r, done, _, info = env.step(actions[a])
                target = r if done else r + self.gamma * float(np.max(q[obs[0], obs[1]]))
                q[ub, rb, a] += self.alpha * (target - q[ub, rb, a])
                visits[ub, rb, a] += 1
                total += r
                energy += info["energy_j"]
                misses += info["misses"]
            row = {"episode": ep + 1, "epsilon": round(eps, 4), "reward": total, "energy_j": energy, "misses": misses}
            if test and (ep + 1) % self.eval_every == 0 or (test and ep + 1 == self.episodes):
                tab = table_from_q(q, visits, cluster, meta, actions, state=state)
                res = [simulate(cluster, d, table_governor_for(tab), mem_share=mem_share) for d in test]
                row["test_energy_j"] = sum(r.energy_j for r in res)
                row["test_misses"] = sum(r.misses for r in res)
                row["test_items"] = sum(r.items for r in res)
                if progress:
                    progress(f"episode {row['episode']}: held-out energy {row['test_energy_j']:.2f} J, "
                             f"misses {row['test_misses']}/{row['test_items']} (simulated)")
            if self.select_every and ((ep + 1) % self.select_every == 0 or ep + 1 == self.episodes):
                tab = table_from_q(q, visits, cluster, meta, actions, state=state)
                res = [simulate(cluster, d, table_governor_for(tab), mem_share=mem_share) for d in train]
                e, m = sum(r.energy_j for r in res), sum(r.misses for r in res)
                row["train_energy_j"], row["train_misses"] = e, m
                key = within_first(e, excess(res))
                if best is None or key < best[0]:
                    best = (key, tab)
                    tab.meta.update(selected_episode=ep + 1, train_energy_j=e, train_misses=m,
                                    schedutil_train_misses=sum(r.misses for r in base))
            curve.append(row)
        self.q_, self.visits_, self.actions_, self.curve_ = q, visits, actions, curve
        self.table_ = best[1] if best is not None else table_from_q(q, visits, cluster, meta, actions, state=state)
        return self
