"""The Linux cpufreq governors, reimplemented for the simulator, plus the
learned-table governor and a fixed OPP (for the oracle sweep).

Each follows its kernel counterpart's decision rule (drivers/cpufreq/*,
kernel/sched/cpufreq_schedutil.c) at the level the simulator models; the
defaults are the kernel's. What is left out is said per class.
"""
from __future__ import annotations


from .platform import Cluster
from .sim import Obs
from .table import SCHEDUTIL_HEADROOM, FreqTable, rq_bucket, util_bucket


class Governor:
    name = "governor"
    period_s = 0.01

    def reset(self, cluster: Cluster) -> None:
        self.c = cluster

    def decide(self, obs: Obs) -> int:
        raise NotImplementedError


class Performance(Governor):
    name = "performance"

    def decide(self, obs: Obs) -> int:
        return obs.cluster.nr_opps - 1


class Powersave(Governor):
    name = "powersave"

    def decide(self, obs: Obs) -> int:
        return 0


class Static(Governor):
    """One fixed OPP all run long (the sweep's candidates; `userspace` with a constant)."""

    def __init__(self, opp: int) -> None:
        self.opp = int(opp)
        self.name = f"static-{opp}"

    def decide(self, obs: Obs) -> int:
        return min(self.opp, obs.cluster.nr_opps - 1)


class Ondemand(Governor):
    """ondemand: load = busiest CPU's busy share over the sampling period; above
    up_threshold (80 %) jump to the top OPP, else pick min + load x (max - min)
    (cpufreq_ondemand.c od_update). Left out: sampling_down_factor, powersave_bias."""

    name = "ondemand"

    def __init__(self, sampling_s: float = 0.01, up_threshold: float = 80.0) -> None:
        self.period_s = sampling_s
        self.up = up_threshold

    def decide(self, obs: Obs) -> int:
        c = obs.cluster
        load = 100.0 * max(obs.busy, default=0.0)
        if load > self.up:
            return c.nr_opps - 1
        lo, hi = c.freqs_khz[0], c.max_khz
        return c.opp_closest_khz(lo + load * (hi - lo) / 100.0)  # od_update: CPUFREQ_RELATION_C


class Conservative(Governor):
    """conservative: step the target by freq_step (5 % of max) up when load >
    up_threshold (80), down when load < down_threshold (20), every sampling
    period (cpufreq_conservative.c cs_dbs_update)."""

    name = "conservative"

    def __init__(self, sampling_s: float = 0.01, up: float = 80.0, down: float = 20.0, step: float = 5.0) -> None:
        self.period_s = sampling_s
        self.up, self.down, self.step = up, down, step

    def reset(self, cluster: Cluster) -> None:
        super().reset(cluster)
        self.target = float(cluster.max_khz)
        self._opp = cluster.nr_opps - 1

    def decide(self, obs: Obs) -> int:
        c = obs.cluster
        load = 100.0 * max(obs.busy, default=0.0)
        delta = c.max_khz * self.step / 100.0
        if load > self.up:
            self.target = min(self.target + delta, c.max_khz)
            self._opp = c.opp_at_or_below_khz(self.target)   # cs_dbs_update: RELATION_H going up
        elif load < self.down:
            self.target = max(self.target - delta, c.freqs_khz[0])
            self._opp = c.opp_for_khz(self.target)           # RELATION_L going down
        return self._opp


class Schedutil(Governor):
    """schedutil: next_freq = 1.25 x max_freq x util / 1024 with util the
    busiest CPU's frequency-invariant utilisation (get_next_freq,
    sugov_next_freq_shared), rate-limited to the policy's transition delay
    (1.5 x transition latency, cpufreq_policy_transition_delay_us). Left out:
    iowait boost, uclamp, the 'busy CPU keeps its frequency' hold. util_est
    is in (dvfs.sim models it per CPU); util_est=False gives PELT alone."""

    name = "schedutil"

    def __init__(self, rate_limit_s: float | None = None, headroom: float = SCHEDUTIL_HEADROOM,
                 util_est: bool = True) -> None:
        self._rate = rate_limit_s
        self.util_est = util_est
        self.headroom = headroom
        self.period_s = rate_limit_s or 0.001

    def reset(self, cluster: Cluster) -> None:
        super().reset(cluster)
        if self._rate is None:
            self.period_s = max(1.5 * cluster.transition_latency_s, 0.001)

    def decide(self, obs: Obs) -> int:
        util = max(obs.util, default=0.0)
        if obs.util_est is not None and self.util_est:
            util = max(util, max(obs.util_est, default=0.0))  # cpu_util(): max(util_avg, util_est)
        return obs.cluster.opp_for_perf(min(self.headroom * util, 1024.0))


class TableGovernor(Governor):
    """A learned FreqTable: each CPU looks up perf[util bucket][queue bucket]
    with the freq policy's utilisation (Obs.util_table);
    the cluster runs at the highest request (as schedutil aggregates the
    CPUs of a shared policy), at the lowest OPP that reaches it. Decides as
    often as schedutil may (the BPF policy updates on every tick/running)."""

    def __init__(self, table: FreqTable, name: str | None = None, period_s: float = 0.001) -> None:
        self.table = table
        self.name = name or f"table:{table.method}"
        self.period_s = period_s

    def reset(self, cluster: Cluster) -> None:
        super().reset(cluster)
        # perf -> OPP is monotone, so the highest request's OPP is the highest OPP
        self._opp = [[cluster.opp_for_perf(int(p)) for p in row] for row in self.table.perf]

    def decide(self, obs: Obs) -> int:
        return max(self._opp[util_bucket(float(u))][rq_bucket(int(q))]
                   for u, q in zip(obs.util if obs.util_table is None else obs.util_table, obs.nr_queued))


class TaskTableGovernor(TableGovernor):
    """A FreqTable over the per-task state (dvfs.task_signal): perf[need
    bucket][arrival-rate bucket], the need and the rate computed from each
    task's estimated activation length. The cluster-level state is already
    the max over CPUs, so one lookup decides."""

    task_state = True

    def decide(self, obs: Obs) -> int:
        ub, rb = obs.task_state
        return self._opp[ub][rb]


# the state a table is indexed by (FreqTable.state) -> the governor that reads it
TABLE_GOVERNORS: dict[str, type[TableGovernor]] = {"util-queue": TableGovernor, "task": TaskTableGovernor}


def table_governor_for(table: FreqTable, name: str | None = None) -> TableGovernor:
    return TABLE_GOVERNORS[table.state](table, name=name)


BUILTIN = {"performance": Performance, "powersave": Powersave, "ondemand": Ondemand,
           "conservative": Conservative, "schedutil": Schedutil}


def builtin(name: str) -> Governor:
    return BUILTIN[name]()
