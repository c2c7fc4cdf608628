"""A gymnasium environment over the DVFS simulator (SIMULATED figures).

Observation: MultiDiscrete([16, 4, nr_opps]) = (utilisation bucket of the
busiest CPU, by the freq policy's signal (the windowed EWMA, or its
util_est while the CPU has work: Simulation.table_util), queue bucket: the
most items waiting behind a running one on any CPU, current OPP index).
The first two are exactly the state a FreqTable is indexed by, so a policy
over them deploys as a table. With state="task" they are the per-task
state instead (dvfs.task_signal: the need from per-task estimates of queued
work, the estimated arrival rate).
Action: Discrete(nr_opps), the OPP to request (it lands after the
cluster's transition latency).
Step: one decision period (default 4 ms, a tick at HZ=250).
Reward (weights in RewardWeights, documented in docs/dvfs.md):

    r = -energy / (nr_cpus x P_busy(top OPP) x period)      in [-1, 0]
        - w_miss x deadline misses completed in the step
        - w_late x CPUs' overdue time in the step / period

so running flat out costs 1 per step and each missed deadline w_miss.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..extras import require

gym = require("gymnasium", "learn", "the DVFS environment (train freq --method rl)")
from gymnasium import spaces  # noqa: E402

from .demand import Demand
from .platform import Cluster
from .sim import STATE_FNS, Simulation
from .table import RQ_BUCKETS, UTIL_BUCKETS


@dataclass(frozen=True)
class RewardWeights:
    w_miss: float = 2.0
    w_late: float = 0.5

    def as_dict(self) -> dict:
        return asdict(self)


class FreqEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, cluster: Cluster, demands: list[Demand], *, decision_s: float = 0.004,
                 mem_share: float = 0.3, weights: RewardWeights = RewardWeights(), step_s: float = 0.001,
                 window_s: float | None = None, state: str = "util-queue") -> None:
        super().__init__()
        if not demands:
            raise ValueError("FreqEnv needs at least one demand")
        self.cluster = cluster
        self.demands = list(demands)
        self.decision_steps = max(1, int(round(decision_s / step_s)))
        self.decision_s = self.decision_steps * step_s
        self.mem_share = mem_share
        self.step_s = step_s
        self.weights = weights
        self.window_s = window_s  # episodes over random windows of this length (None: whole demands)
        self._state = STATE_FNS[state]
        self.observation_space = spaces.MultiDiscrete([UTIL_BUCKETS, RQ_BUCKETS, cluster.nr_opps])
        self.action_space = spaces.Discrete(cluster.nr_opps)
        self._e_norm = cluster.nr_cpus * float(cluster.busy_w[-1]) * self.decision_s
        self.sim: Simulation | None = None

    def _obs(self) -> np.ndarray:
        s = self.sim
        return np.array([*self._state(s), s.opp], dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        idx = (options or {}).get("demand")
        if idx is None:
            idx = int(self.np_random.integers(len(self.demands)))
        d = self.demands[int(idx)]
        if self.window_s and d.duration_s > self.window_s:
            d = d.window(float(self.np_random.uniform(0, d.duration_s - self.window_s)), self.window_s)
        self.sim = Simulation(self.cluster, d, mem_share=self.mem_share, step_s=self.step_s)
        return self._obs(), {"demand": d.name}

    def step(self, action):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        s = self.sim
        s.request(int(action))
        s.advance(self.decision_steps)
        w = self.weights
        reward = (-s.step_energy / self._e_norm - w.w_miss * s.step_misses
                  - w.w_late * s.step_overdue / self.decision_s)
        info = {"energy_j": s.step_energy, "misses": s.step_misses}
        return self._obs(), float(reward), bool(s.done), False, info
