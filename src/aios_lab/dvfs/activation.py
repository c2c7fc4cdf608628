"""Per-activation demand: one item per activation, cut from a trace's switch stream.

An activation is a task's run from a wakeup until it sleeps again: the unit
the kernel's util_est learns from, and the one the `freq` policy's per-task
estimate counts in BPF (policies/freq: `act_ns` from the switch-in after a
wakeup to the switch-out that is not a preemption). The per-interval demand
(dvfs.demand.from_trace) cannot give it: task_intervals keeps a task's
on-CPU time per collection interval, so a 3 ms burst and three bursts of
1 ms in one interval look alike there. The switch stream has every switch,
which is each activation's start, its preemptions and its end.

How a trace's switches become items:
* Per CPU, each switch starts a segment of its `next_pid` that lasts until
  the CPU's next switch; that next switch's `prev_state` says whether the
  task was preempted (0 R, 256 R+: the activation goes on) or slept (any
  other state: the activation is complete). Where the next switch does not
  switch this task out (the kernel did not trace a switch), the segment's
  end state is unknown and the activation is taken to go on.
* An activation starts at a task's first segment in the trace and at each
  segment after one it slept at. It arrives when the task woke: the
  segment's start less the wait the switch ended (`next_wait_ns`), or the
  start itself where that wait was not seen.
* An activation longer than one collection interval of on-CPU time (a
  compiler running for a second) is cut into chunks of at most one
  interval, chunk j arriving when the recorded task had run j intervals of
  it: work arrives no faster than the recording machine ran it, the same
  reading the per-interval demand makes (no item asks for more than an
  interval's worth of CPU by its deadline). Each chunk is a segment of the
  task, so the per-task estimate sees a long runner's activations as
  interval-long, as the per-interval demand did.
* Items are the chunks arriving in one step (1 ms, the simulator's) on one
  CPU (the CPU the chunk started on), arriving at the step's start; each
  keeps its chunks as task segments (dvfs.demand.TaskSegments), so the
  simulator reports every activation's length when its item completes.
* Each task is named by its program (`next_comm`) at its first switch-in
  (`Demand.task_names`): what a kernel knows of a task it has never seen
  run, from which dvfs.task_signal estimates its first activation.
* The idle task and the collector's own process are left out, as in the
  per-interval demand. Deadlines are the per-interval demand's, in
  seconds: DEADLINE_INTERVALS of the trace's interval after arrival.

It needs a complete switch stream: a trace whose switch rows were sampled
(`sample_weight` > 1, see docs/trace-format.md) has holes in its
timelines, and is refused (record with `--stream-budget 0`,
benchmarks/dvfs_record.sh does).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TraceError
from .demand import DEADLINE_INTERVALS, Demand, TaskSegments, kind_of_trace

RUNNABLE_STATES = (0, 256)    # R, R+ (preempted in kernel): switched out still runnable
STEP_S = 0.001                # items are binned at the simulator's step


@dataclass(frozen=True)
class Activations:
    """Every activation chunk of a trace, flat arrays in arrival order."""

    arrival_ns: np.ndarray     # (m,) when the chunk's work arrived
    cpu: np.ndarray            # (m,) CPU it started on
    task: np.ndarray           # (m,) pid
    work_ns: np.ndarray        # (m,) on-CPU ns
    activation: np.ndarray     # (m,) the activation it belongs to (dense id)
    unknown_ends: int          # segments whose switch-out the kernel did not trace

    @property
    def nr_activations(self) -> int:
        return int(self.activation.max()) + 1 if len(self.activation) else 0

    def lengths_ns(self) -> np.ndarray:
        """Each activation's whole on-CPU time, by activation id."""
        return np.bincount(self.activation, weights=self.work_ns, minlength=self.nr_activations)


def segments(sw, *, drop_tgid: int | None = None):
    """Per-CPU segments of a switch table (a pandas DataFrame with the
    `switches` columns): (cpu, task, start_ns, end_ns, wait_ns, end_state)
    as numpy arrays, sorted by (task, start). end_state is -1 where the
    segment's switch-out was not traced; wait_ns is -1 where unknown."""
    sw = sw.sort_values(["cpu", "ts_ns"], kind="stable")
    cpu = sw["cpu"].to_numpy(np.int64)
    ts = sw["ts_ns"].to_numpy(np.int64)
    nxt = sw["next_pid"].to_numpy(np.int64)
    ntgid = sw["next_tgid"].fillna(-1).to_numpy(np.int64)
    prev = sw["prev_pid"].to_numpy(np.int64)
    pstate = sw["prev_state"].fillna(-1).to_numpy(np.int64)
    wait = sw["next_wait_ns"].fillna(-1).to_numpy(np.int64)
    # a segment runs from a switch to the same CPU's next one; a CPU's last switch has no end
    has_end = np.r_[cpu[1:] == cpu[:-1], False]
    end = np.r_[ts[1:], 0]
    matched = np.r_[prev[1:], -2] == nxt
    end_state = np.where(matched, np.r_[pstate[1:], -1], -1)
    keep = has_end & (nxt != 0)
    if drop_tgid is not None:
        keep &= ntgid != drop_tgid
    order = np.lexsort((ts[keep], nxt[keep]))
    pick = np.flatnonzero(keep)[order]
    return cpu[pick], nxt[pick], ts[pick], end[pick], wait[pick], end_state[pick]


def activations(sw, *, chunk_ns: int, drop_tgid: int | None = None) -> Activations:
    """Cut a switch table into activation chunks (see the module's doc)."""
    if chunk_ns <= 0:
        raise ValueError("chunk_ns must be > 0")
    cpu, task, start, end, wait, state = segments(sw, drop_tgid=drop_tgid)
    if len(task) == 0:
        z = np.zeros(0, dtype=np.int64)
        return Activations(z, z, z, z, z, 0)
    length = end - start
    slept = (state >= 0) & ~np.isin(state, RUNNABLE_STATES)
    # a new activation at a task's first segment and after each segment it slept at
    first = np.r_[True, (task[1:] != task[:-1]) | slept[:-1]]
    act = np.cumsum(first) - 1
    # on-CPU time of the activation before each segment
    csum = np.cumsum(length)
    act_base = (csum - length)[first][act]
    before = csum - length - act_base
    # chunk boundaries j * chunk_ns falling in each segment: [before, before + length)
    j0 = -(-before // chunk_ns)                                 # ceil
    j1 = np.where(length > 0, (before + length - 1) // chunk_ns, j0 - 1)
    count = np.maximum(j1 - j0 + 1, 0)
    seg_of = np.repeat(np.arange(len(task)), count)
    j = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + j0[seg_of]
    arrival = start[seg_of] + (j * chunk_ns - before[seg_of])
    woke = first[seg_of] & (j == 0) & (wait[seg_of] >= 0)
    arrival = np.where(woke, arrival - wait[seg_of], arrival)
    total = np.bincount(act, weights=length).astype(np.int64)
    a = act[seg_of]
    work = np.minimum(chunk_ns, total[a] - j * chunk_ns)
    order = np.argsort(arrival, kind="stable")
    return Activations(arrival[order], cpu[seg_of][order], task[seg_of][order], work[order], a[order],
                       int(np.count_nonzero(state < 0)))


def from_switches(path: Path | str, *, kind: str | None = None,
                  deadline_intervals: float | None = None) -> Demand:
    """Per-CPU demand of the traced workload, one item per activation chunk
    and CPU arriving in a 1 ms step (see the module's doc)."""
    from ..telemetry.trace import Trace

    tr = Trace.open(path)
    meta = tr.metadata
    if tr.rows("switches") == 0:
        raise TraceError(f"trace {path} has no switches rows: no activations to cut",
                         hint="record it with the whole switch stream: aios-lab collect --interval 0.01 "
                              "--stream-budget 0 -- CMD (benchmarks/dvfs_record.sh)")
    sw = tr.arrow("switches").select(["ts_ns", "cpu", "prev_pid", "prev_state", "next_pid", "next_tgid",
                                      "next_comm", "next_wait_ns", "sample_weight"]).to_pandas()
    if sw["sample_weight"].fillna(1).max() > 1:
        raise TraceError(f"trace {path}: its switch stream was sampled (sample_weight up to "
                         f"{int(sw['sample_weight'].max())}), so activations have holes",
                         hint="re-record it with --stream-budget 0 (benchmarks/dvfs_record.sh)")
    interval_ms = meta.get("interval_ms") or 10
    chunk_ns = int(round(float(interval_ms) * 1e6))
    collector = (meta.get("collector") or {}).get("pid")
    acts = activations(sw, chunk_ns=chunk_ns, drop_tgid=int(collector) if collector is not None else None)
    if len(acts.task) == 0:
        raise TraceError(f"trace {path}: no activations of workload tasks in its switch stream")
    cpus = [c["cpu"] for c in (meta.get("topology") or {}).get("cpus", [])] or sorted(sw["cpu"].unique())
    nr = max(max(cpus), int(acts.cpu.max())) + 1
    t0 = int(sw["ts_ns"].min())
    step_ns = int(STEP_S * 1e9)
    bin_ = np.maximum(acts.arrival_ns - t0, 0) // step_ns   # a wait that began before the trace did
    bins, k = np.unique(bin_, return_inverse=True)
    work = np.zeros((len(bins), nr))
    np.add.at(work, (k, acts.cpu), acts.work_ns / 1e9)
    tasks = TaskSegments(k, acts.cpu, acts.task, acts.work_ns / 1e9)
    # a task's program when it first ran (a forked child still has its parent's name)
    first = sw.sort_values("ts_ns", kind="stable").drop_duplicates("next_pid")
    names = dict(zip(first["next_pid"].astype(int).tolist(), first["next_comm"].fillna("").tolist()))
    names = {t: names.get(t, "") for t in np.unique(acts.task).tolist()}
    kind = kind or kind_of_trace(meta)
    due = deadline_intervals if deadline_intervals is not None else DEADLINE_INTERVALS.get(kind, 2.0)
    duration = float((int(sw["ts_ns"].max()) - t0) / 1e9)
    return Demand(name=Path(path).name, kind=kind, starts_s=bins * STEP_S, work_s=work,
                  deadline_s=np.full(len(bins), due * interval_ms / 1000), duration_s=duration,
                  source=str(path),
                  meta={"interval_ms": interval_ms, "trace_status": tr.status, "collector_pid": collector,
                        "unit": "activation", "activations": acts.nr_activations,
                        "unknown_ends": acts.unknown_ends}, tasks=tasks, task_names=names)
