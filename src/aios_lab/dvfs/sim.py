"""A trace-driven DVFS simulator for one frequency domain (a cluster).

SIMULATED: no machine here has cpufreq or energy counters, so every figure
this module produces is a model's output, and every report that shows one
says so.

Model, per step of `step_s` (1 ms by default):
* Work arrives per CPU as items (dvfs.demand) and runs FIFO on its CPU.
* Performance: an item's CPU-bound share (1 - mem_share) scales with
  frequency, its memory-bound share does not, so at OPP f it progresses at
  r(f) = 1 / ((1 - m) * f_max / f + m) seconds of top-OPP work per second.
* Frequency: the whole cluster shares one OPP. A governor's request takes
  effect after the cluster's transition latency (the device tree's
  clock-latency-ns); the CPUs keep running at the old OPP meanwhile.
* Power: dvfs.platform (C*V^2*f + leakage when busy; leakage in shallow
  idle; power-collapsed after the idle state's min-residency).
* util_est: per CPU, an EWMA of its PELT util each time its work runs out
  (kernel util_est_update: up at once, down by 1/4), counted while the CPU
  has work, as schedutil adds it to util_avg (cpu_util: max of the two).
* Utilisation: each CPU keeps two frequency-invariant signals (busy share x
  current perf / top perf, 0..1024): PELT-like (32 ms half-life, updated each
  1 ms), which schedutil reads, and the `freq` sched_ext policy's own
  (busy fraction per 8 ms window folded into an EWMA of weight 1/4,
  policies/freq/freq.bpf.c) plus that policy's util_est (the larger of the
  EWMA and the current window's busy fraction, sampled when the CPU's work
  runs out, by the kernel's util_est rule; it counts while the CPU has
  work), which the table governor and the RL state read, so a table trained
  here sees the signal it is indexed by in the kernel. One difference: the
  simulator's windows keep a fixed 8 ms grid, while the policy restarts a
  busy CPU's window when a task starts running after a closed window, so
  the policy's partial-window sample of a short burst is somewhat higher.
* Tasks: an item carries its tasks' segments (dvfs.demand.TaskSegments;
  a model demand's item is one anonymous task per CPU); when it completes,
  each (task, length) is appended to `task_done`, from which per-task
  estimates are learned online (dvfs.task_signal, `task_state()`).
* QoS: an item that completes after its deadline is a deadline miss (a frame
  drop for periodic demand); for throughput the makespan (time until all
  work is done) is the figure. Items unfinished when the run is cut off
  (at 3x the demand's duration) count as misses.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .demand import Demand
from .platform import Cluster
from .table import rq_bucket, util_bucket

PELT_HALF_LIFE_S = 0.032
WINDOW_S = 0.008        # policies/freq: window_ns
WINDOW_WEIGHT = 0.25    # policies/freq: fp = (fp * 3 + sample) / 4


def work_rates(cluster: Cluster, mem_share: float) -> np.ndarray:
    """Per OPP, seconds of top-OPP work done per second busy:
    r(f) = 1 / ((1 - m) * f_max / f + m), the memory-bound share m not scaling."""
    f = np.array(cluster.freqs_khz, dtype=float)
    return 1.0 / ((1 - mem_share) * f[-1] / f + mem_share)


@dataclass(slots=True)
class QueueItem:
    """One item of work on a CPU's FIFO queue (Simulation.queues): what one
    interval of the demand puts on that CPU. Slots, not a dict per item: the
    simulator touches the running item every 1 ms step."""

    remaining: float             # top-OPP seconds of work still to do
    deadline: float              # absolute, seconds
    arrival: float               # seconds; work that arrives mid-step starts then
    work: float                  # top-OPP seconds in all (remaining + done)
    segments: tuple              # its tasks' (task, work) segments (dvfs.demand.TaskSegments)


class StepLog(NamedTuple):
    """The fields of one step of a logged run (Simulation.enable_log): the
    state buckets at the step's start and what the step cost. The log keeps
    each step as a plain tuple in this order, since building a StepLog every
    step made the sweep's sampling 15-20 % slower (measured); read the log
    as columns with `StepLog(*np.array(sim.log).T)`."""

    util_bucket: int             # or the need bucket of the per-task state
    queue_bucket: int            # or its arrival-rate bucket
    energy_j: float
    misses: int                  # deadlines missed in the step
    overdue_s: float             # CPU-seconds in the step spent with an overdue head item


def _util_est_step(est: float, sample: float) -> float:
    """kernel/sched/fair.c util_est_update: up to a larger sample at once,
    down by a quarter of the gap to a smaller one."""
    return sample if sample >= est else est + (sample - est) / 4


@dataclass
class Obs:
    """What a governor sees when it decides."""

    t_s: float
    opp: int                     # current OPP index
    util: list[float]            # per CPU, 0..1024, frequency-invariant PELT-like (schedutil's)
    busy: list[float]            # per CPU busy share since this governor's last decision
    nr_queued: list[int]         # per CPU items waiting behind the running one
    cluster: Cluster
    # per CPU, 0..1024, what tables are indexed by: the freq policy's windowed
    # EWMA, or its util_est when larger and the CPU has work (Simulation.table_util);
    # None in a hand-built Obs means "same as util"
    util_table: list[float] | None = None
    # per CPU, the util_est schedutil adds (0 while the CPU has nothing runnable); None: none
    util_est: list[float] | None = None
    # (need bucket, arrival-rate bucket) from per-task estimates (dvfs.task_signal), for
    # governors that ask for it (task_state = True); None otherwise
    task_state: tuple[int, int] | None = None


@dataclass
class SimResult:
    governor: str
    demand: str
    kind: str
    energy_j: float
    duration_s: float            # the demand's span
    makespan_s: float            # until the last item completed
    items: int
    misses: int
    late_work_s: float           # top-OPP work of the items that missed
    mean_latency_s: float        # work-weighted mean completion latency of items
    transitions: int
    mean_khz: float
    residency: list[float] = field(default_factory=list)  # share of time at each OPP

    @property
    def miss_rate(self) -> float:
        return self.misses / self.items if self.items else 0.0

    @property
    def edp(self) -> float:
        """Energy-delay product: joules x the items' mean completion latency (s)."""
        return self.energy_j * self.mean_latency_s

    def as_dict(self) -> dict:
        return {"governor": self.governor, "demand": self.demand, "kind": self.kind,
                "energy_j": self.energy_j, "duration_s": self.duration_s, "makespan_s": self.makespan_s,
                "items": self.items, "misses": self.misses, "miss_rate": self.miss_rate,
                "late_work_s": self.late_work_s, "mean_latency_s": self.mean_latency_s, "edp": self.edp,
                "transitions": self.transitions, "mean_khz": self.mean_khz, "simulated": True}


class Simulation:
    """One run of `demand` on `cluster`, advanced step by step.

    `run(governor)` drives it with a governor; the RL environment drives it
    with `request()` + `advance()` directly.
    """

    def __init__(self, cluster: Cluster, demand: Demand, *, mem_share: float = 0.3, step_s: float = 0.001,
                 start_opp: int | None = None, cutoff_factor: float = 3.0, signal=None) -> None:
        if not 0 <= mem_share < 1:
            raise ValueError("mem_share must be in [0, 1)")
        self.c = cluster
        self.d = demand.fold(cluster.nr_cpus)
        self.m = float(mem_share)
        self.dt = float(step_s)
        f = np.array(cluster.freqs_khz, dtype=float)
        self._rate = work_rates(cluster, self.m).tolist()
        self._busy_w = cluster.busy_w.tolist()
        self._static_w = cluster.static_w.tolist()
        self._sleep_w = cluster.sleep_w.tolist()
        self._rel_f = (f / f[-1]).tolist()
        self._y = 0.5 ** (self.dt / PELT_HALF_LIFE_S)
        n = cluster.nr_cpus
        self.t = 0.0
        self.opp = cluster.nr_opps - 1 if start_opp is None else int(start_opp)
        self._next_opp: int | None = None
        self._next_at = 0.0
        self.queues: list[deque[QueueItem]] = [deque() for _ in range(n)]
        # plain lists, not arrays: per-element updates every 1 ms step are
        # several times faster on Python floats than on numpy scalars
        self.util = [0.0] * n
        self.util_win = [0.0] * n
        self.util_est = [0.0] * n       # EWMA of util at each "dequeue" (the CPU's work running out)
        self.win_est = [0.0] * n        # the freq policy's util_est, over its windowed signal
        self._win_busy = [0.0] * n      # perf-weighted busy seconds in the current window
        self._win_t = 0.0
        self._win_steps = max(1, int(round(WINDOW_S / step_s)))
        self._nstep = 0
        self.idle_streak = [0.0] * n
        self.busy_acc = [0.0] * n        # busy seconds since the governor's last look
        self.acc_t = 0.0
        self._k = 0                      # next demand interval to arrive
        self.cutoff = max(self.d.duration_s, 1e-3) * cutoff_factor
        self.energy_j = 0.0
        self.items = 0
        self.misses = 0
        self.late_work = 0.0
        self.lat_weighted = 0.0
        self.work_done = 0.0
        # per CPU: items completed and their total work (what a governor can learn item sizes from)
        self.completed = [0] * n
        self.completed_work = [0.0] * n
        self.last_completion = 0.0
        self.transitions = 0
        self.opp_time = [0.0] * cluster.nr_opps
        # per step, for the RL reward: what happened in the last advance()
        self.step_misses = 0
        self.step_energy = 0.0
        self.step_overdue = 0.0
        self.log: list[tuple] | None = None  # see enable_log(): StepLog's fields, in its order
        self._log_state = self.table_state
        # task identity: per interval and CPU the (task, work) segments of its item
        d = self.d
        self._segs = d.item_tasks.segments
        self.task_done: list[tuple[int, float]] = []   # (task, activation length), in completion order
        self._signal_cfg = signal
        self.signals = None                            # dvfs.task_signal.TaskSignals, made on first use

    def enable_log(self, state=None) -> None:
        """Record StepLog's fields per step, with the buckets of the busiest CPU at
        the step's start: what the table sweep attributes costs to. `state`: a
        function of the simulation giving the two buckets (default
        table_state; task_state for the per-task state)."""
        self.log = []
        if state is not None:
            self._log_state = state

    # -- control ------------------------------------------------------------

    def request(self, opp: int) -> None:
        """Ask for an OPP; it takes effect after the transition latency."""
        opp = int(min(max(opp, 0), self.c.nr_opps - 1))
        if opp == self.opp:
            self._next_opp = None  # back to where we are: cancel a pending change, no transition
            return
        if self._next_opp == opp:
            return
        self._next_opp = opp
        self._next_at = self.t + self.c.transition_latency_s

    @property
    def rates(self) -> list[float]:
        """work_rates() of this run's cluster and memory-bound share."""
        return list(self._rate)

    @property
    def arrived(self) -> int:
        """How many of the demand's intervals have arrived so far."""
        return self._k

    @property
    def done(self) -> bool:
        drained = (self._k >= len(self.d.starts_s) and not any(self.queues)
                   and self.t >= self.d.duration_s - 1e-12)
        return drained or self.t >= self.cutoff

    def table_state(self) -> tuple[int, int]:
        """The cluster's state as a table indexes it: the utilisation bucket of
        the busiest CPU (the freq policy's windowed signal) and the bucket of
        the longest queue. What the sweep logs and the RL agent sees."""
        return (util_bucket(float(max(self.table_util()))),
                rq_bucket(max(max(len(q) - 1, 0) for q in self.queues)))

    def table_util(self) -> list[float]:
        """Per CPU, the utilisation a table is indexed by (the freq policy's
        `util`): the windowed EWMA, or its util_est when larger and the CPU
        has work."""
        return [max(u, e) if q else u for u, e, q in zip(self.util_win, self.win_est, self.queues)]

    def task_signals(self):
        """The per-task estimator of this run (made on first use, then fed every arrival)."""
        if self.signals is None:
            from .task_signal import SignalConfig, TaskSignals

            self.signals = TaskSignals(self, self._signal_cfg or SignalConfig())
        return self.signals

    def task_state(self) -> tuple[int, int]:
        """The per-task state (dvfs.task_signal.TaskSignals.bucket)."""
        return self.task_signals().bucket()

    def observe(self, task_state: bool = False) -> Obs:
        span = max(self.acc_t, 1e-12)
        obs = Obs(t_s=self.t, opp=self.opp, util=list(self.util), busy=[min(b / span, 1.0) for b in self.busy_acc],
                  nr_queued=[max(len(q) - 1, 0) for q in self.queues], cluster=self.c, util_table=self.table_util(),
                  util_est=[e if q else 0.0 for e, q in zip(self.util_est, self.queues)],
                  task_state=self.task_state() if task_state else None)
        self.busy_acc = [0.0] * len(self.busy_acc)
        self.acc_t = 0.0
        return obs

    # -- stepping -----------------------------------------------------------

    def advance(self, steps: int = 1) -> None:
        self.step_misses = 0
        self.step_energy = 0.0
        self.step_overdue = 0.0
        for _ in range(steps):
            if self.done:
                return
            self._step()

    def _arrivals(self, until: float) -> None:
        d = self.d
        while self._k < len(d.starts_s) and d.starts_s[self._k] < until:
            k = self._k
            segs = self._segs[k] if self._segs is not None else None
            woke = []
            for cpu in range(d.nr_cpus):
                w = d.work_s[k, cpu]
                if w > 0:
                    seg = segs[cpu] if segs is not None else ((-1 - cpu, w),)
                    self.queues[cpu].append(QueueItem(w, d.starts_s[k] + d.deadline_s[k], d.starts_s[k], w, seg))
                    self.items += 1
                    woke.append(seg)
                else:
                    woke.append(())
            if self.signals is not None:
                self.signals.on_arrival(float(d.starts_s[k]), woke)
            self._k += 1

    def _step(self) -> None:
        t0, dt = self.t, self.dt
        t1 = t0 + dt
        self._arrivals(t1)
        if self.log is not None:
            state = self._log_state()
            misses0, overdue0 = self.misses, self.step_overdue
        # the OPPs in force during this step: the old one until a pending change lands
        if self._next_opp is not None and self._next_at < t1:
            cut = max(self._next_at - t0, 0.0)
            segments = [(cut, self.opp), (dt - cut, self._next_opp)]
            self.opp = self._next_opp
            self._next_opp = None
            self.transitions += 1
        else:
            segments = [(dt, self.opp)]
        perf_eff = 0.0
        for seg_dt, opp in segments:
            self.opp_time[opp] += seg_dt
            perf_eff += seg_dt / dt * self._rel_f[opp]
        energy = 0.0
        for cpu, q in enumerate(self.queues):
            busy = 0.0
            had_work = bool(q)
            seg_start = t0
            for seg_dt, opp in segments:
                rate = self._rate[opp]
                used = 0.0     # busy time in this segment
                cursor = 0.0   # time into the segment
                while q and seg_dt - cursor > 1e-15:
                    item = q[0]
                    start = max(cursor, item.arrival - seg_start)  # work that arrives mid-step starts then
                    if start >= seg_dt:
                        break
                    need = item.remaining / rate
                    if need <= seg_dt - start:
                        used += need
                        cursor = start + need
                        self._complete(item, seg_start + cursor, cpu)
                        q.popleft()
                    else:
                        item.remaining -= (seg_dt - start) * rate
                        used += seg_dt - start
                        cursor = seg_dt
                busy += used
                idle = seg_dt - used
                energy += used * self._busy_w[opp]
                if used > 0:
                    self.idle_streak[cpu] = 0.0
                if idle > 0:
                    shallow = min(idle, max(self.c.idle_min_residency_s - self.idle_streak[cpu], 0.0))
                    energy += shallow * self._static_w[opp] + (idle - shallow) * self._sleep_w[opp]
                    self.idle_streak[cpu] += idle
                seg_start += seg_dt
            self.busy_acc[cpu] += busy
            self.util[cpu] = self.util[cpu] * self._y + (1 - self._y) * (busy / dt) * perf_eff * 1024
            if had_work and not q:
                # util_est (kernel/sched/fair.c util_est_update): at dequeue the
                # task's util is a sample; the EWMA jumps up to a larger sample
                # and falls by 1/4 of the difference to a smaller one. The
                # CPU's work running out stands for its task going to sleep.
                self.util_est[cpu] = _util_est_step(self.util_est[cpu], self.util[cpu])
                # The freq policy's own util_est (policies/freq: util_est_update):
                # the same rule over its windowed signal, sampled as the larger
                # of the EWMA and the busy fraction of the window so far, which
                # holds the burst that just ended (the EWMA lags it).
                part = (self._nstep % self._win_steps + 1) * dt
                ws = max(self.util_win[cpu], min((self._win_busy[cpu] + busy * perf_eff) / part, 1.0) * 1024)
                self.win_est[cpu] = _util_est_step(self.win_est[cpu], ws)
            self._win_busy[cpu] += busy * perf_eff
            if q and q[0].deadline < t1:
                self.step_overdue += dt
        self.acc_t += dt
        self._nstep += 1
        if self._nstep % self._win_steps == 0:
            span = self._win_steps * dt
            for cpu in range(len(self.util_win)):
                sample = min(self._win_busy[cpu] / span, 1.0) * 1024
                self.util_win[cpu] += WINDOW_WEIGHT * (sample - self.util_win[cpu])
                self._win_busy[cpu] = 0.0
        self.energy_j += energy
        self.step_energy += energy
        self.t = t1
        if self.log is not None:
            self.log.append((state[0], state[1], energy, self.misses - misses0, self.step_overdue - overdue0))

    def _complete(self, item: QueueItem, done_at: float, cpu: int) -> None:
        work = item.work
        self.work_done += work
        self.completed[cpu] += 1
        self.completed_work[cpu] += work
        self.task_done.extend(item.segments)
        self.lat_weighted += work * (done_at - item.arrival)
        self.last_completion = max(self.last_completion, done_at)
        if done_at > item.deadline + 1e-9:
            self.misses += 1
            self.step_misses += 1
            self.late_work += work

    # -- results ------------------------------------------------------------

    def result(self, governor: str) -> SimResult:
        # what is still queued at the cut-off missed its deadline
        left = [it for q in self.queues for it in q]
        misses = self.misses + len(left)
        late = self.late_work + sum(it.work for it in left)
        opp_time = np.array(self.opp_time)
        total_t = max(opp_time.sum(), 1e-12)
        khz = np.array(self.c.freqs_khz, dtype=float)
        return SimResult(governor=governor, demand=self.d.name, kind=self.d.kind, energy_j=self.energy_j,
                         duration_s=self.d.duration_s,
                         makespan_s=self.t if left else max(self.last_completion, 0.0),
                         items=self.items, misses=misses, late_work_s=late,
                         mean_latency_s=self.lat_weighted / self.work_done if self.work_done else 0.0,
                         transitions=self.transitions, mean_khz=float((opp_time * khz).sum() / total_t),
                         residency=(opp_time / total_t).round(4).tolist())

    def run(self, governor) -> SimResult:
        """Drive to the end with `governor` (dvfs.governors), deciding every governor.period_s."""
        governor.reset(self.c)
        every = max(1, int(round(governor.period_s / self.dt)))
        wants = bool(getattr(governor, "task_state", False))
        if wants:
            self.task_signals()
        self.request(governor.decide(self.observe(wants)))
        n = 0
        while not self.done:
            self._step()
            n += 1
            if n % every == 0:
                self.request(governor.decide(self.observe(wants)))
        return self.result(governor.name)


# FreqTable.state -> the Simulation method giving that state's two buckets
STATE_FNS = {"util-queue": Simulation.table_state, "task": Simulation.task_state}


def simulate(cluster: Cluster, demand: Demand, governor, **kw) -> SimResult:
    return Simulation(cluster, demand, **kw).run(governor)
