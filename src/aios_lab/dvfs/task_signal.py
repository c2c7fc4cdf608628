"""Per-task knowledge a governor can compute online (SIMULATED here; the
freq sched_ext policy keeps the same numbers in BPF task-local storage).

Per task: an estimate of its next activation's length, from the lengths of
its activations so far (`RULES`; the default is the kernel's util_est rule,
kernel/sched/fair.c util_est_update: up to a longer activation at once, down
by a quarter of the gap to a shorter one, so a task that sometimes runs long
is planned for long). A task never seen before is estimated by its `prior`
(PRIORS): `program`, the default, keys it by the program it ran when it
first woke (`Demand.task_names`, the comm a kernel reads in task_struct):
the same rule over the first activations of earlier tasks that started as
that program (a build's compiler children, forked from `gcc`, run long
first; a shell's children do not); a program with no such task yet, or a
demand that names no tasks, falls back to `mean`, the mean of every
activation seen so far (the only prior before issue 22's activations, so
the per-interval figures, whose demand names no tasks, are unchanged).
The simulator reports an activation when the item it ran in completes,
never earlier than the kernel would see it end. What an activation is
depends on the demand's unit (dvfs.units): a task's on-CPU time in one
trace interval (`interval`), or its run from a wakeup until it sleeps, in
chunks of at most an interval (`activation`, dvfs.activation).

From those estimates, per CPU:
* queued work: the estimated work of every queued item (the sum of its
  tasks' estimates), less what the running item has already run (its run
  time, which a kernel knows), floored at a tenth of its estimate;
* the arrival rate: an EWMA (time constant `tau_s`) of the estimated work
  arriving per second, each arrival weighed when it arrives by the estimates
  of the tasks that woke, never by their true work.
And the policy state a learned table is indexed by (`bucket()`): the
busiest CPU's need (queued work over the time left to its head item's
deadline, on the 0..1024 speed scale, in 16 buckets) and the highest
arrival rate (share of a CPU at the top OPP, in 4 buckets of a quarter).
Deadlines stand for a per-task latency target a user states (a deadline
class per kind of work); the simulator takes them from the demand.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from .table import PERF_MAX, RQ_BUCKETS, util_bucket

if TYPE_CHECKING:
    from .sim import QueueItem, Simulation


def util_est_rule(est: float, sample: float) -> float:
    """kernel util_est_update: up at once, down by 1/4 of the gap."""
    return sample if sample >= est else est + (sample - est) / 4


def ewma_rule(est: float, sample: float) -> float:
    """A plain EWMA of weight 1/4 both ways (PELT-like, no fast rise)."""
    return est + (sample - est) / 4


def last_rule(est: float, sample: float) -> float:
    """The last activation's length."""
    return sample


def expectile_rule(est: float, sample: float) -> float:
    """Up by 1/4 of the gap to a longer activation, down by 1/16 to a shorter
    one: an EWMA whose fixed point is the 80 % expectile of recent
    activations (up and down pulls balance where 1/4 E[(x - e)+] =
    1/16 E[(e - x)+]), so one long burst raises it a quarter of the way,
    not all the way as util_est does. Shifts only, as BPF would compute it."""
    return est + (sample - est) / 4 if sample >= est else est + (sample - est) / 16


RULES: dict[str, Callable[[float, float], float]] = {"util_est": util_est_rule, "ewma": ewma_rule,
                                                      "last": last_rule, "expectile": expectile_rule}

# what an unseen task's first activation is estimated as (see the module's doc)
PRIORS = ("program", "mean")


@dataclass(frozen=True)
class SignalConfig:
    rule: str = "util_est"
    tau_s: float = 0.1       # the arrival-rate EWMA's time constant
    margin: float = 0.0      # estimates are scaled by (1 + margin)
    prior: str = "program"   # an unseen task's estimate (PRIORS)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown estimate rule {self.rule!r}: use one of {', '.join(RULES)}")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}: use one of {', '.join(PRIORS)}")
        if self.tau_s <= 0 or self.margin < -0.9:
            raise ValueError("tau_s must be > 0 and margin > -0.9")

    def as_dict(self) -> dict:
        return asdict(self)


class TaskSignals:
    """Bound to one Simulation, which calls `on_arrival` as items arrive."""

    def __init__(self, sim: "Simulation", cfg: SignalConfig = SignalConfig()) -> None:
        self.sim = sim
        self.cfg = cfg
        self._rule = RULES[cfg.rule]
        self.est: dict[int, float] = {}
        d = sim.d
        self._step = float(np.median(np.diff(d.starts_s))) if len(d.starts_s) > 1 else 0.01
        self._sum, self._count = 0.0, 0
        self._seen = 0                      # activations of sim.task_done folded in
        self.rate = [0.0] * d.nr_cpus       # estimated top-OPP work arriving per second, per CPU
        self._last_arrival: float | None = None
        self._guard = sim.c.transition_latency_s + sim.dt
        # checks of the estimator (observed activation, its estimate just before): what the guest test compares
        self.errors: list[tuple[float, float]] = []
        # The same estimates as arrays over the demand's dense task index (Demand.item_tasks),
        # for queued(): a queue at a low OPP holds hundreds of items, and the state is read
        # every step. The last slot is the rows' padding, estimated 0.
        self._items = d.item_tasks
        nt = self._items.nr_tasks
        self._est_arr = np.zeros(nt + 1)
        self._seen_arr = np.zeros(nt + 1, dtype=bool)
        self._seen_arr[nt] = True
        # the program prior: each dense task's program (dense, -1: none), and per program the
        # rule over the first activations of its tasks (NaN: none yet, the mean stands in)
        names = d.task_names if cfg.prior == "program" else None
        self._program: dict[int, int] = {}
        self._task_program = np.full(nt + 1, -1, dtype=np.intp)
        if names:
            progs: dict[str, int] = {}
            for task, i in self._items.index.items():
                name = names.get(task)
                if name is not None:
                    self._program[task] = self._task_program[i] = progs.setdefault(name, len(progs))
            self._prior = np.full(len(progs), np.nan)
        else:
            self._prior = np.zeros(0)
        self._version = 0                     # bumped when an estimate (or the unseen-task mean) changes
        self._scaled: np.ndarray | None = None   # every task's estimate x (1 + margin), at _scaled_version
        self._scaled_version = -1
        # per CPU: (version, first row, end row, the queued items' estimates as a list)
        self._cache: list[tuple | None] = [None] * d.nr_cpus

    def _fold(self) -> None:
        log = self.sim.task_done
        if self._seen == len(log):
            return
        index, arr, seen = self._items.index, self._est_arr, self._seen_arr
        for task, work in log[self._seen:]:
            prev = self.est.get(task)
            if prev is not None:
                self.errors.append((work, prev))
            else:
                g = self._program.get(task)
                if g is not None:   # a task's first activation teaches its program's prior
                    p = self._prior[g]
                    self._prior[g] = work if np.isnan(p) else self._rule(p, work)
            new = self.est[task] = work if prev is None else self._rule(prev, work)
            i = index[task]
            arr[i] = new
            seen[i] = True
            self._sum += work
            self._count += 1
        self._seen = len(log)
        self._version += 1

    def estimate(self, task: int) -> float:
        """The next activation of `task`, top-OPP seconds."""
        e = self.est.get(task)
        if e is None:
            g = self._program.get(task)
            p = self._prior[g] if g is not None else np.nan
            e = float(p) if not np.isnan(p) else self._sum / self._count if self._count else self._step / 2
        return e * (1 + self.cfg.margin)

    def item_estimate(self, segs: tuple) -> float:
        return sum(self.estimate(t) for t, _ in segs)

    def on_arrival(self, t_s: float, per_cpu: list[tuple]) -> None:
        """Items arrived at `t_s`: per CPU, the tasks that woke (segments; () for none)."""
        self._fold()
        gap = self._step if self._last_arrival is None else max(t_s - self._last_arrival, 1e-3)
        self._last_arrival = t_s
        w = 1 - np.exp(-gap / self.cfg.tau_s)
        for cpu, segs in enumerate(per_cpu):
            work = self.item_estimate(segs) if segs else 0.0
            self.rate[cpu] += w * (work / gap - self.rate[cpu])

    def remaining(self, item: QueueItem, running: bool) -> float:
        """An item's estimated remaining work (item: the simulator's queue entry)."""
        est = self.item_estimate(item.segments)
        if not running:
            return est
        return max(est - (item.work - item.remaining), 0.1 * est)

    def queued(self) -> list[float]:
        """Per CPU, the estimated work of everything queued: `queued_by_item()`
        bit for bit, from each CPU's queued items' estimates, gathered in one
        numpy step when they change (an activation folded in, an item arrived
        or done) and summed in the same order."""
        self._fold()
        out: list[float] = []
        for cpu, q in enumerate(self.sim.queues):
            if not q:
                out.append(0)
                continue
            ests = self._queued_estimates(cpu, len(q))
            head = q[0]
            e0 = ests[0]
            # remaining(head, running=True), then the others' estimates, left to right as sum() adds
            out.append(sum(ests[1:], max(e0 - (head.work - head.remaining), 0.1 * e0)))
        return out

    def queued_by_item(self) -> list[float]:
        """The definition of `queued()`, item by item and task by task; what
        tests and benchmarks/dvfs_task_state.py check queued() against."""
        self._fold()
        return [sum(self.remaining(it, i == 0) for i, it in enumerate(q)) for q in self.sim.queues]

    def _queued_estimates(self, cpu: int, n: int) -> list[float]:
        """The estimates of CPU `cpu`'s `n` queued items (item_estimate of each), cached."""
        lo = self.sim.completed[cpu]          # FIFO: the queue is rows lo..lo+n of this CPU's items
        hi = lo + n
        c = self._cache[cpu]
        if c is not None and c[0] == self._version:
            if c[1] == lo and c[2] == hi:
                return c[3]
            if c[1] <= lo <= c[2] <= hi:      # items done or arrived, no estimate changed: reuse the rest
                ests = c[3][lo - c[1]:] + self._row_estimates(cpu, c[2], hi)
                self._cache[cpu] = (self._version, lo, hi, ests)
                return ests
        ests = self._row_estimates(cpu, lo, hi)
        self._cache[cpu] = (self._version, lo, hi, ests)
        return ests

    def _row_estimates(self, cpu: int, lo: int, hi: int) -> list[float]:
        if hi <= lo:
            return []
        if self._scaled_version != self._version:
            mean = self._sum / self._count if self._count else self._step / 2
            unseen = mean
            if len(self._prior):
                p = np.append(self._prior, np.nan)[self._task_program]   # -1 (no program) -> NaN
                unseen = np.where(np.isnan(p), mean, p)
            self._scaled = np.where(self._seen_arr, self._est_arr, unseen) * (1 + self.cfg.margin)
            self._scaled_version = self._version
        # item_estimate per row: its tasks' estimates added left to right (cumsum, not the
        # pairwise sum() of numpy, so the floats match the Python sum bit for bit); padding adds 0
        return np.cumsum(self._scaled[self._items.rows[cpu][lo:hi]], axis=1)[:, -1].tolist()

    def need(self) -> list[float]:
        """Per CPU, queued work over the time left to the head item's deadline (top-OPP speed share)."""
        t = self.sim.t
        return [w / max(q[0].deadline - t - self._guard, 1e-3) if q else 0.0
                for w, q in zip(self.queued(), self.sim.queues)]

    def bucket(self) -> tuple[int, int]:
        """The policy state: (need bucket 0..15, arrival-rate bucket 0..3) of the cluster."""
        need = max(self.need(), default=0.0)
        rate = max(self.rate, default=0.0)
        return (util_bucket(min(need, 1.0) * PERF_MAX),
                min(int(rate * RQ_BUCKETS), RQ_BUCKETS - 1))
