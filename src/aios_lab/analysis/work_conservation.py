"""Work-conservation loss: CPU time left idle while runnable work waited.

A scheduler is work-conserving when no CPU idles while a task is runnable.
The loss is the integral over time of min(idle CPUs, waiting tasks): at
each instant, every idle CPU that could have taken a waiting task is capacity
thrown away. It is a placement metric measured inside the guest from its own
context switches, so the host's noise (QEMU's vCPU threads sharing host
cores with everything else) moves it far less than a makespan.

From the ``switches`` table alone:
- a CPU is idle from a switch to the idle task (``next_pid == 0``) until its
  next switch away from it (``prev_pid == 0``);
- a task waits over ``[ts_ns - next_wait_ns, ts_ns)`` for every switch that
  ended a wait (the wait from wakeup or preemption to running).
Only the span where every CPU's state is known counts: from the last CPU's
first switch to the first CPU's last switch.

What it includes on purpose: a task woken onto an idle CPU waits while that
CPU leaves idle, so slow idle exit (milliseconds for a halted vCPU under
TCG) counts as loss; a placement that sends wakeups to sleeping CPUs pays
for it here too.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from aios_lab.errors import TraceError
from aios_lab.telemetry.trace import Trace


def work_conservation_loss(ts_ns: np.ndarray, cpu: np.ndarray, prev_pid: np.ndarray, next_pid: np.ndarray,
                           next_wait_ns: np.ndarray) -> dict[str, Any]:
    """The loss over a switch stream (arrays of equal length; next_wait_ns may
    hold NaN for unknown waits). Returns loss_s, span_s, cpus, fraction."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    cpu = np.asarray(cpu, dtype=np.int64)
    prev_pid = np.asarray(prev_pid, dtype=np.int64)
    next_pid = np.asarray(next_pid, dtype=np.int64)
    wait = np.asarray(next_wait_ns, dtype=np.float64)
    empty = {"loss_s": None, "span_s": None, "cpus": 0, "fraction": None}
    if ts.size == 0:
        return empty
    order = np.lexsort((ts, cpu))
    ts, cpu, prev_pid, next_pid, wait = ts[order], cpu[order], prev_pid[order], next_pid[order], wait[order]
    cpus = np.unique(cpu)
    firsts = np.array([ts[cpu == c][0] for c in cpus])
    lasts = np.array([ts[cpu == c][-1] for c in cpus])
    lo, hi = int(firsts.max()), int(lasts.min())
    if hi <= lo:
        return {**empty, "cpus": int(cpus.size)}
    times, deltas_idle, deltas_wait = [], [], []
    # Idle spans: a switch to idle opens one, the CPU's next switch closes it.
    same_cpu_next = np.r_[cpu[1:] == cpu[:-1], False]
    opens = np.nonzero((next_pid == 0) & same_cpu_next)[0]
    starts, ends = ts[opens], ts[opens + 1]
    times += [starts, ends]
    deltas_idle += [np.ones(starts.size), -np.ones(ends.size)]
    deltas_wait += [np.zeros(starts.size), np.zeros(ends.size)]
    # Waits: each switch that ended one.
    ok = (next_pid != 0) & np.isfinite(wait) & (wait > 0)
    wend = ts[ok]
    wstart = wend - wait[ok].astype(np.int64)
    times += [wstart, wend]
    deltas_idle += [np.zeros(wstart.size), np.zeros(wend.size)]
    deltas_wait += [np.ones(wstart.size), -np.ones(wend.size)]
    t = np.concatenate(times)
    di, dw = np.concatenate(deltas_idle), np.concatenate(deltas_wait)
    o = np.argsort(t, kind="stable")
    t, idle, waiting = t[o], np.cumsum(di[o]), np.cumsum(dw[o])
    # Between consecutive events the counts are constant; clip to [lo, hi).
    seg_lo = np.clip(t[:-1], lo, hi)
    seg_hi = np.clip(t[1:], lo, hi)
    loss_ns = float(np.sum(np.minimum(idle[:-1], waiting[:-1]).clip(min=0) * (seg_hi - seg_lo)))
    span_ns = hi - lo
    return {"loss_s": loss_ns / 1e9, "span_s": span_ns / 1e9, "cpus": int(cpus.size),
            "fraction": loss_ns / (span_ns * cpus.size)}


def _require_whole_stream(trace: Trace) -> None:
    """A sampled switch stream (collect's stream budget) has gaps between its
    windows, in which idle spans and waits are unknown: no loss from it."""
    sw = trace.arrow("switches")
    if "sample_weight" in sw.column_names:
        import pyarrow.compute as pc

        top = pc.max(sw.column("sample_weight")).as_py()
        if top is not None and top > 1:
            raise TraceError(f"{trace.path}: its switch stream is sampled (weights up to {top}); "
                             "the work-conservation loss needs every switch",
                             hint="collect again with --stream-budget 0")


def trace_work_conservation(trace: Trace | str) -> dict[str, Any]:
    """The loss of one trace (see the module docstring)."""
    if not isinstance(trace, Trace):
        trace = Trace.open(trace)
    _require_whole_stream(trace)
    t = trace.arrow("switches").select(["ts_ns", "cpu", "prev_pid", "next_pid", "next_wait_ns"])
    col = {n: t.column(n).to_numpy(zero_copy_only=False) for n in t.column_names}
    wait = t.column("next_wait_ns").to_numpy(zero_copy_only=False).astype(np.float64)
    return work_conservation_loss(col["ts_ns"], col["cpu"], col["prev_pid"], col["next_pid"], wait)


def _percentiles(w: np.ndarray, prefix: str) -> dict[str, float | None]:
    w = w[w >= 0]
    p50, p99 = np.percentile(w, [50, 99]) if w.size else (None, None)
    return {f"{prefix}_p50_ns": None if p50 is None else float(p50),
            f"{prefix}_p99_ns": None if p99 is None else float(p99)}


def trace_placement(trace: Trace | str, latency_comm: str | None = None) -> dict[str, Any]:
    """What a placement benchmark records per run: the loss above, the exact
    wait percentiles (wakeup or preemption to running) of every task, and,
    with ``latency_comm``, those of the tasks of that name alone (latency_*)."""
    if not isinstance(trace, Trace):
        trace = Trace.open(trace)
    out = trace_work_conservation(trace)
    sw = trace.arrow("switches").select(["next_comm", "next_wait_ns"])
    waits = sw.column("next_wait_ns").to_numpy(zero_copy_only=False).astype(np.float64)
    known = np.isfinite(waits)
    res = {"wc_loss_s": out["loss_s"], "wc_fraction": out["fraction"], **_percentiles(waits[known], "wait")}
    if latency_comm:
        comm = np.asarray(sw.column("next_comm").to_pylist(), dtype=object)
        mine = known & (comm == latency_comm)
        res.update(_percentiles(waits[mine], "latency"), latency_n=int(mine.sum()))
    return res
