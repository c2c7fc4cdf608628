"""The RL frequency policy (after MobiRL): tabular Q-learning on FreqEnv.

The agent's state is the table's state (utilisation bucket, queue bucket),
its action an OPP, so the learned greedy policy *is* a FreqTable that fits
a BPF array map: no function approximator to squeeze into the kernel. The
current OPP is in the environment's observation but not in the agent's
state, because the deployed table cannot condition on it cheaply.

Everything it learns from and is evaluated on is SIMULATED (dvfs.sim).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .demand import Demand
from .env import FreqEnv, RewardWeights
from .governors import TableGovernor
from .platform import Cluster
from .sim import simulate
from .table import PERF_MAX, RQ_BUCKETS, UTIL_BUCKETS, FreqTable


@dataclass(frozen=True)
class QConfig:
    episodes: int = 300
    window_s: float = 4.0          # each episode replays a random window of a training demand
    decision_s: float = 0.004
    alpha: float = 0.1
    gamma: float = 0.95
    eps_start: float = 1.0
    eps_end: float = 0.02
    eval_every: int = 25           # learning-curve points on the held-out demands
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def schedutil_perf(ub: int) -> int:
    """What schedutil would ask for at the middle of a utilisation bucket."""
    return int(min(PERF_MAX, round(1.25 * (ub + 0.5) * (1024 / UTIL_BUCKETS))))


def table_from_q(q: np.ndarray, visits: np.ndarray, cluster: Cluster, meta: dict) -> FreqTable:
    perf = np.zeros((UTIL_BUCKETS, RQ_BUCKETS), dtype=np.int64)
    for ub in range(UTIL_BUCKETS):
        for rb in range(RQ_BUCKETS):
            if visits[ub, rb].sum() > 0:
                perf[ub, rb] = int(np.ceil(cluster.perf[int(np.argmax(q[ub, rb]))]))
            else:  # never seen in training: behave like schedutil there
                perf[ub, rb] = int(np.ceil(cluster.perf[cluster.opp_for_perf(schedutil_perf(ub))]))
    perf = np.clip(perf, 1, PERF_MAX)
    return FreqTable(perf, method="rl", meta=dict(meta, unvisited=int((visits.sum(axis=2) == 0).sum())))


def train_q(cluster: Cluster, train: list[Demand], *, test: list[Demand] | None = None, cfg: QConfig = QConfig(),
            weights: RewardWeights = RewardWeights(), mem_share: float = 0.3,
            on_point: Callable[[dict], None] | None = None) -> tuple[FreqTable, list[dict]]:
    """Learn a table; return it and the learning curve (one row per episode,
    with held-out figures every `eval_every` episodes)."""
    env = FreqEnv(cluster, train, decision_s=cfg.decision_s, mem_share=mem_share, weights=weights,
                  window_s=cfg.window_s)
    rng = np.random.default_rng(cfg.seed)
    n_act = cluster.nr_opps
    q = np.zeros((UTIL_BUCKETS, RQ_BUCKETS, n_act))
    visits = np.zeros((UTIL_BUCKETS, RQ_BUCKETS, n_act), dtype=np.int64)
    curve: list[dict] = []
    meta = {"config": cfg.as_dict(), "weights": weights.as_dict(), "mem_share": mem_share,
            "cluster": cluster.describe(), "train": [d.name for d in train],
            "test": [d.name for d in (test or [])], "simulated": True}
    obs, _ = env.reset(seed=cfg.seed)
    for ep in range(cfg.episodes):
        eps = cfg.eps_end + (cfg.eps_start - cfg.eps_end) * max(0.0, 1 - ep / (0.7 * cfg.episodes))
        if ep:
            obs, _ = env.reset()
        total, energy, misses, done = 0.0, 0.0, 0, False
        while not done:
            ub, rb = int(obs[0]), int(obs[1])
            a = int(rng.integers(n_act)) if rng.random() < eps else int(np.argmax(q[ub, rb]))
            obs, r, done, _, info = env.step(a)
            target = r if done else r + cfg.gamma * float(np.max(q[obs[0], obs[1]]))
            q[ub, rb, a] += cfg.alpha * (target - q[ub, rb, a])
            visits[ub, rb, a] += 1
            total += r
            energy += info["energy_j"]
            misses += info["misses"]
        row = {"episode": ep + 1, "epsilon": round(eps, 4), "reward": total, "energy_j": energy, "misses": misses}
        if test and (ep + 1) % cfg.eval_every == 0 or (test and ep + 1 == cfg.episodes):
            tab = table_from_q(q, visits, cluster, meta)
            res = [simulate(cluster, d, TableGovernor(tab), mem_share=mem_share) for d in test]
            row["test_energy_j"] = sum(r.energy_j for r in res)
            row["test_misses"] = sum(r.misses for r in res)
            row["test_items"] = sum(r.items for r in res)
        curve.append(row)
        if on_point is not None:
            on_point(row)
    return table_from_q(q, visits, cluster, meta), curve
