"""Per-CPU demand for the simulator: replayed from traces or drawn from models.

Demand is a list of work items per CPU. Interval k brings `work_s[k, cpu]`
seconds of CPU time, measured at the cluster's top frequency, arriving at
`starts_s[k]` and due `deadline_s[k]` later. A trace gives one item per
collection interval and CPU: what the traced workload ran on that CPU in that
interval (task_intervals.oncpu_ns by the task's CPU; the collector's own
process is left out). Arrival at the interval's start is the conservative
reading: the work is as bursty as the interval allows.

Task identity: a trace's demand also keeps, per item, which tasks (pids)
ran in it and for how long (`Demand.tasks`, a `TaskSegments`), in the
order of their pids: the item's work is the sum of its segments. The
simulator runs an item as one unit (a miss is still counted per interval
and CPU, so figures stay comparable with the merged demand of earlier
versions) and reports each segment's task and length when the item
completes, which is what a per-task estimate of activation lengths
(dvfs.task_signal) learns from. A task's "activation" here is its on-CPU
time in one collection interval on one CPU: the traces count time per
interval, not per wakeup. Workload models carry no task identity
(`tasks` is None): each CPU's items then stand for one anonymous task.

Assumptions, stated wherever results are reported: the recording machine's
CPU time is taken as time at the simulated cluster's top OPP (this host has
no cpufreq, so it ran at one fixed speed), and the work of an interval is
due by the end of the following interval (deadline = 2 intervals; 10 for
throughput demand, see DEADLINE_INTERVALS) unless a workload model says
otherwise (a frame is due at the next frame).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import TraceError

# trace workload command -> demand kind, by the workloads/dvfs scripts' names
_KINDS = {"bursty": "interactive", "frames": "periodic", "build": "throughput"}


@dataclass
class TaskSegments:
    """Which task ran how long in each item: flat arrays, one row per segment,
    ordered by (interval, cpu). `work` of the rows of interval k and CPU c sums
    to the demand's work_s[k, c]."""

    k: np.ndarray          # (m,) interval index
    cpu: np.ndarray        # (m,) CPU
    task: np.ndarray       # (m,) task id (the traced pid)
    work: np.ndarray       # (m,) top-OPP seconds

    def __post_init__(self) -> None:
        self.k = np.asarray(self.k, dtype=np.int64)
        self.cpu = np.asarray(self.cpu, dtype=np.int64)
        self.task = np.asarray(self.task, dtype=np.int64)
        self.work = np.asarray(self.work, dtype=float)
        order = np.lexsort((self.cpu, self.k))   # stable: keeps the segments' order within an item
        if np.any(order != np.arange(len(order))):
            self.k, self.cpu, self.task, self.work = (a[order] for a in (self.k, self.cpu, self.task, self.work))

    def select(self, rows: np.ndarray, k: np.ndarray | None = None, cpu: np.ndarray | None = None) -> "TaskSegments":
        return TaskSegments(self.k[rows] if k is None else k, self.cpu[rows] if cpu is None else cpu,
                            self.task[rows], self.work[rows])

    def per_item(self, n: int, cpus: int) -> list[list[tuple]]:
        """items[k][cpu] = ((task, work), ...): what the simulator enqueues."""
        out: list[list[tuple]] = [[() for _ in range(cpus)] for _ in range(n)]
        for k, c, t, w in zip(self.k.tolist(), self.cpu.tolist(), self.task.tolist(), self.work.tolist()):
            out[k][c] = out[k][c] + ((t, w),)
        return out


@dataclass(frozen=True)
class ItemTasks:
    """The tasks of every item of a demand, in the two forms the simulator
    reads (`Demand.item_tasks`, built once per demand: the sweep replays one
    demand at every OPP, and none of this depends on the OPP).

    `segments[k][cpu]`: the item's ((task, work), ...), what the simulator
    enqueues (None for a model demand: one anonymous task per CPU, -1 - cpu).
    `rows[cpu]`: per CPU, one row per item that CPU will ever queue, in
    arrival order (the items with work), holding its tasks' dense indices
    (`index`) in segment order, padded with `nr_tasks`. A CPU's queue is
    always a contiguous run of these rows (FIFO), which is what lets the
    per-task signal (dvfs.task_signal) gather every queued item's estimate
    in one numpy step instead of a Python loop per item and task."""

    segments: list[list[tuple]] | None
    index: dict[int, int]
    rows: list[np.ndarray]

    @property
    def nr_tasks(self) -> int:
        return len(self.index)


@dataclass
class Demand:
    name: str
    kind: str                      # interactive | periodic | throughput
    starts_s: np.ndarray           # (n,) arrival of each interval's work, from 0
    work_s: np.ndarray             # (n, cpus) CPU-seconds at the top OPP
    deadline_s: np.ndarray         # (n,) relative deadline of each interval's work
    duration_s: float
    source: str = ""
    meta: dict = field(default_factory=dict)
    tasks: TaskSegments | None = None   # task identity per item (traces); None: one anonymous task per CPU
    # the program (comm) each task ran when it first woke in the trace, where the demand knows it
    # (dvfs.activation): what a new task's first estimate is keyed by (dvfs.task_signal, `prior`)
    task_names: dict[int, str] | None = None

    def __post_init__(self) -> None:
        self.starts_s = np.asarray(self.starts_s, dtype=float)
        self.work_s = np.asarray(self.work_s, dtype=float)
        self.deadline_s = np.broadcast_to(np.asarray(self.deadline_s, dtype=float), self.starts_s.shape).copy()
        if self.work_s.ndim != 2 or self.work_s.shape[0] != self.starts_s.shape[0]:
            raise TraceError(f"demand {self.name}: work has shape {self.work_s.shape}, "
                             f"expected ({self.starts_s.shape[0]}, cpus)")
        if not (np.all(np.isfinite(self.work_s)) and np.all(self.work_s >= 0)):
            raise TraceError(f"demand {self.name}: work holds negative or non-finite values")
        if not np.all(np.isfinite(self.starts_s)) or (len(self.starts_s) and self.starts_s.min() < 0):
            raise TraceError(f"demand {self.name}: interval starts hold negative or non-finite values")
        if not (np.all(np.isfinite(self.deadline_s)) and np.all(self.deadline_s > 0)):
            raise TraceError(f"demand {self.name}: deadlines must be finite and > 0")
        if np.any(np.diff(self.starts_s) < 0):
            raise TraceError(f"demand {self.name}: interval starts are not in time order")
        if self.tasks is not None:
            ts = self.tasks
            if len(ts.k) and (ts.k.min() < 0 or ts.k.max() >= len(self.starts_s) or ts.cpu.min() < 0
                              or ts.cpu.max() >= self.nr_cpus or ts.work.min() < 0):
                raise TraceError(f"demand {self.name}: task segments point outside the demand's items")
            total = np.zeros_like(self.work_s)
            np.add.at(total, (ts.k, ts.cpu), ts.work)
            if not np.allclose(total, self.work_s, rtol=1e-9, atol=1e-12):
                raise TraceError(f"demand {self.name}: task segments do not sum to the items' work")

    @cached_property
    def item_tasks(self) -> ItemTasks:
        """The tasks of every item (see ItemTasks), computed on first use and kept."""
        n, cpus = len(self.starts_s), self.nr_cpus
        segs = self.tasks.per_item(n, cpus) if self.tasks is not None else None
        index: dict[int, int] = {}
        per_cpu = []
        for cpu in range(cpus):
            # the items the simulator enqueues on this CPU: those with work, in arrival order
            ks = np.flatnonzero(self.work_s[:, cpu] > 0).tolist()
            per_cpu.append([[index.setdefault(t, len(index)) for t, _ in
                             (segs[k][cpu] if segs is not None else ((-1 - cpu, 0.0),))] for k in ks])
        rows = []
        for items in per_cpu:
            m = np.full((len(items), max((len(r) for r in items), default=1) or 1), len(index), dtype=np.intp)
            for i, r in enumerate(items):
                m[i, :len(r)] = r
            rows.append(m)
        return ItemTasks(segs, index, rows)

    @property
    def nr_cpus(self) -> int:
        return self.work_s.shape[1]

    @property
    def total_work_s(self) -> float:
        return float(self.work_s.sum())

    def utilisation(self) -> float:
        """Mean share of the CPUs' time the work needs at the top OPP."""
        return self.total_work_s / max(self.duration_s * self.nr_cpus, 1e-12)

    def window(self, start_s: float, length_s: float) -> "Demand":
        """The items arriving in [start_s, start_s + length_s), re-timed from 0."""
        sel = (self.starts_s >= start_s) & (self.starts_s < start_s + length_s)
        tasks = None
        if self.tasks is not None:
            idx = np.flatnonzero(sel)    # a contiguous run of intervals (starts are sorted)
            rows = np.isin(self.tasks.k, idx)
            tasks = self.tasks.select(rows, k=self.tasks.k[rows] - (idx[0] if len(idx) else 0))
        return Demand(f"{self.name}@{start_s:.1f}s", self.kind, self.starts_s[sel] - start_s, self.work_s[sel],
                      self.deadline_s[sel], min(length_s, max(self.duration_s - start_s, 0.0)), self.source,
                      dict(self.meta, window=(start_s, length_s)), tasks, self.task_names)

    def fold(self, nr_cpus: int) -> "Demand":
        """Map the recorded CPUs onto a cluster of `nr_cpus` (cpu % nr_cpus)."""
        if nr_cpus == self.nr_cpus:
            return self
        out = np.zeros((self.work_s.shape[0], nr_cpus))
        for c in range(self.nr_cpus):
            out[:, c % nr_cpus] += self.work_s[:, c]
        tasks = None
        if self.tasks is not None:
            rows = np.arange(len(self.tasks.k))
            tasks = self.tasks.select(rows, cpu=self.tasks.cpu % nr_cpus)
        return Demand(self.name, self.kind, self.starts_s, out, self.deadline_s, self.duration_s,
                      self.source, dict(self.meta, folded_from=self.nr_cpus), tasks, self.task_names)


def kind_of_trace(meta: dict) -> str:
    cmd = " ".join((meta.get("workload") or {}).get("command") or [])
    for key, kind in _KINDS.items():
        if key in cmd:
            return kind
    return "interactive"


# How long after its arrival an interval's work is due, in intervals, per
# kind: interactive work and frames within the next interval (a frame at
# 60 fps is ~1.7 intervals of 10 ms); throughput work may lag 100 ms (a batch
# job is judged by its completion time, so a governor may stretch it, but not
# let it fall ever further behind).
DEADLINE_INTERVALS = {"interactive": 2.0, "periodic": 2.0, "throughput": 10.0}


def from_trace(path: Path | str, *, kind: str | None = None, deadline_intervals: float | None = None) -> Demand:
    """Per-CPU demand of the traced workload, one item per interval and CPU."""
    from ..telemetry.trace import Trace

    tr = Trace.open(path)
    meta = tr.metadata
    if "task_intervals" not in tr.tables or tr.rows("task_intervals") == 0:
        raise TraceError(f"trace {path} has no task_intervals rows: no demand to replay",
                         hint="record it with BPF telemetry: aios-lab collect --interval 0.01 -- CMD")
    t = tr.arrow("task_intervals").select(
        ["interval_start_ns", "interval_end_ns", "pid", "tgid", "comm", "oncpu_ns", "last_cpu"]).to_pandas()
    collector = (meta.get("collector") or {}).get("pid")
    drop = t["comm"].eq("aios-lab")  # older traces do not record the collector's pid
    if collector is not None:
        drop |= t["tgid"].eq(int(collector))
    t = t[~drop & t["last_cpu"].ge(0)]
    cpus = [c["cpu"] for c in (meta.get("topology") or {}).get("cpus", [])] or sorted(t["last_cpu"].unique())
    nr = max(cpus) + 1
    if len(t) and int(t["last_cpu"].max()) >= nr:  # metadata's CPU ids are validated, the rows here
        raise TraceError(f"trace {path}: task_intervals has last_cpu {int(t['last_cpu'].max())} but the "
                         f"trace's topology has CPUs 0..{nr - 1}; the trace is damaged, re-collect it")
    bounds = (t[["interval_start_ns", "interval_end_ns"]].drop_duplicates()
              .sort_values("interval_start_ns").to_numpy())
    if len(bounds) == 0:
        raise TraceError(f"trace {path}: no intervals with workload tasks")
    t0 = int(bounds[0, 0])
    index = {int(s): i for i, (s, _) in enumerate(bounds)}
    lengths = (bounds[:, 1] - bounds[:, 0]) / 1e9
    work = np.zeros((len(bounds), nr))
    g = t.groupby(["interval_start_ns", "last_cpu", "pid"])["oncpu_ns"].sum()
    g = g[g > 0]
    seg_k = np.array([index[int(s)] for s in g.index.get_level_values(0)], dtype=np.int64)
    seg_cpu = g.index.get_level_values(1).to_numpy(dtype=np.int64)
    seg_task = g.index.get_level_values(2).to_numpy(dtype=np.int64)
    seg_work = g.to_numpy(dtype=float) / 1e9
    # the items' work summed as before task identity was kept, so old figures reproduce to the last bit
    for (start, cpu), ns in t.groupby(["interval_start_ns", "last_cpu"])["oncpu_ns"].sum().items():
        work[index[int(start)], int(cpu)] += ns / 1e9
    extra_k: list[int] = []
    extra_cpu: list[int] = []
    extra_task: list[int] = []
    extra_work: list[float] = []
    # A task that ran on two CPUs in one interval is booked to its last one;
    # move what exceeds the interval to the least-loaded CPU so no CPU is
    # given more than it could have run. The task segments follow: a donor
    # CPU's segments shrink in proportion, and what a CPU receives is a
    # segment of the donor's longest task (the one most likely to have moved).
    for i in range(len(bounds)):
        over = np.maximum(work[i] - lengths[i], 0)
        if over.any():
            before = work[i].copy()
            work[i] -= over
            for extra in over[over > 0]:
                j = int(np.argmin(work[i]))
                work[i, j] = min(lengths[i], work[i, j] + extra)
            rows_i = seg_k == i
            donor = int(np.argmax(over))
            drows = np.flatnonzero(rows_i & (seg_cpu == donor))
            mover = int(seg_task[drows[np.argmax(seg_work[drows])]])
            for c in range(nr):
                if work[i, c] < before[c]:
                    seg_work[rows_i & (seg_cpu == c)] *= work[i, c] / before[c]
                elif work[i, c] > before[c]:
                    extra_k.append(i)
                    extra_cpu.append(c)
                    extra_task.append(mover)
                    extra_work.append(work[i, c] - before[c])
    tasks = TaskSegments(np.concatenate([seg_k, extra_k]), np.concatenate([seg_cpu, extra_cpu]),
                         np.concatenate([seg_task, extra_task]), np.concatenate([seg_work, extra_work]))
    starts = (bounds[:, 0] - t0) / 1e9
    duration = float((bounds[-1, 1] - t0) / 1e9)
    kind = kind or kind_of_trace(meta)
    due = deadline_intervals if deadline_intervals is not None else DEADLINE_INTERVALS.get(kind, 2.0)
    return Demand(name=Path(path).name, kind=kind, starts_s=starts, work_s=work,
                  deadline_s=lengths * due, duration_s=duration, source=str(path),
                  meta={"interval_ms": meta.get("interval_ms"), "trace_status": tr.status,
                        "collector_pid": collector}, tasks=tasks)


# ----------------------------------------------------------------- workload models

def periodic(*, fps: float = 60.0, load: float = 0.45, duration_s: float = 10.0, nr_cpus: int = 2,
             heavy_every: int = 30, seed: int = 0) -> Demand:
    """A frame loop on CPU 0 (each frame due at the next), a light 100 Hz task on CPU 1."""
    rng = np.random.default_rng(seed)
    period = 1.0 / fps
    n = int(duration_s / period)
    starts = np.arange(n) * period
    work = np.zeros((n, nr_cpus))
    frame = period * load * rng.uniform(0.7, 1.3, n)
    if heavy_every:
        frame *= np.where(rng.random(n) < 1 / heavy_every, 1.8, 1.0)
    work[:, 0] = np.minimum(frame, period)
    if nr_cpus > 1:
        work[:, 1] = period * 0.12  # the 100 Hz audio task's share, per frame
    return Demand(f"periodic-{fps:g}fps-{load:g}", "periodic", starts, work, period, n * period,
                  source="model:periodic", meta={"seed": seed})


def bursty(*, duration_s: float = 10.0, nr_cpus: int = 2, think_ms: float = 60.0, burst_ms: float = 6.0,
           seed: int = 0, step_ms: float = 10.0) -> Demand:
    """Trains of lognormal bursts separated by exponential think times, per CPU."""
    rng = np.random.default_rng(seed)
    step = step_ms / 1000
    n = int(duration_s / step)
    work = np.zeros((n, nr_cpus))
    for c in range(nr_cpus):
        t = rng.exponential(think_ms / 1000)
        while t < duration_s:
            for _ in range(rng.integers(1, 9)):
                burst = min(rng.lognormal(0, 0.8) * burst_ms, 80) / 1000
                b, k = burst, int(t / step)
                while b > 1e-12 and k < n:  # spread a long burst over the intervals it covers
                    take = min(b, step - work[k, c])
                    work[k, c] += take
                    b -= take
                    k += 1
                t += burst + rng.exponential(0.004) + 1e-3
            t += rng.exponential(think_ms / 1000)
    return Demand(f"bursty-{seed}", "interactive", np.arange(n) * step, work, 2 * step, n * step,
                  source="model:bursty", meta={"seed": seed})


def batch(*, work_s: float = 4.0, nr_cpus: int = 2, duration_s: float = 2.0, step_ms: float = 10.0) -> Demand:
    """Throughput: `work_s` CPU-seconds spread evenly over `duration_s` on every CPU."""
    step = step_ms / 1000
    n = int(duration_s / step)
    per = work_s / (n * nr_cpus)
    return Demand("batch", "throughput", np.arange(n) * step, np.full((n, nr_cpus), min(per, step)),
                  DEADLINE_INTERVALS["throughput"] * step, n * step, source="model:batch")
