"""A workload's scheduling character, summarised from one trace.

What a person or an agent choosing a scheduler needs first (SchedCP's
"workload profiling", made from measured data): is it CPU-bound or does it
block, how often do its tasks wake, how long do they run, how long do they
wait, how many threads, how often they migrate. Everything comes from the
trace's tables through ``trace_metrics`` and two queries of our own; the
class is a rule on stated thresholds, not a model, so that its answer can be
checked by reading the numbers beside it.

- ``voluntary_share``: voluntary / all context switches of the tasks (a
  voluntary switch is the task blocking: I/O, a lock, a sleep; an
  involuntary one is a preemption while runnable).
- ``run_ns``: how long a task ran each time it got a CPU: the mean from
  the per-task totals (on-CPU time / switches), and percentiles from the
  switch stream (time between consecutive switches of a CPU, idle excluded)
  when the stream has every switch.
- ``class``: "cpu-bound" when mean utilisation >= CPU_BOUND_UTIL and
  voluntary_share < CPU_BOUND_VOLUNTARY; "blocking" when voluntary_share >=
  BLOCKING_VOLUNTARY and utilisation < BLOCKING_UTIL; otherwise "mixed".
  ``latency_sensitive`` when tasks wake often (>= WAKEUPS_PER_CPU_S per CPU
  per second) and run briefly (mean run < SHORT_RUN_NS): waits dominate such
  a workload's response time, so wakeup placement matters more than balance.
"""
from __future__ import annotations

from typing import Any

from aios_lab.analysis.db import TraceDB, stream_sampled
from aios_lab.analysis.metrics import mean_util, trace_metrics
from aios_lab.telemetry.trace import Trace

CPU_BOUND_UTIL = 0.7
CPU_BOUND_VOLUNTARY = 0.5
BLOCKING_VOLUNTARY = 0.8
BLOCKING_UTIL = 0.5
WAKEUPS_PER_CPU_S = 1000.0
SHORT_RUN_NS = 1_000_000


def classify(util: float | None, voluntary_share: float | None) -> str:
    """The rule of the module docstring; "unknown" without both numbers."""
    if util is None or voluntary_share is None:
        return "unknown"
    if util >= CPU_BOUND_UTIL and voluntary_share < CPU_BOUND_VOLUNTARY:
        return "cpu-bound"
    if voluntary_share >= BLOCKING_VOLUNTARY and util < BLOCKING_UTIL:
        return "blocking"
    return "mixed"


def _run_lengths(db: TraceDB) -> dict[str, Any] | None:
    (n,) = db.one("SELECT count(*) FROM switches")
    if not n or stream_sampled(db, "switches"):
        return None  # gaps between sampled switches are not run lengths
    row = db.one("""
        SELECT count(run), quantile_disc(run, 0.5), quantile_disc(run, 0.9), quantile_disc(run, 0.99)
        FROM (SELECT prev_pid, ts_ns - lag(ts_ns) OVER (PARTITION BY cpu ORDER BY ts_ns) AS run
              FROM switches)
        WHERE prev_pid <> 0 AND run IS NOT NULL""")
    if not row or not row[0]:
        return None
    return {"count": int(row[0]), "p50_ns": int(row[1]), "p90_ns": int(row[2]), "p99_ns": int(row[3])}


def profile_trace(trace: Trace | str, memory_limit: str | None = None) -> dict[str, Any]:
    """The profile of one trace, JSON-able (see the module docstring)."""
    if not isinstance(trace, Trace):
        trace = Trace.open(trace)
    m = trace_metrics(trace, memory_limit=memory_limit, top=5)
    kw = {"memory_limit": memory_limit} if memory_limit else {}
    with TraceDB(trace, **kw) as db:
        threads, processes, oncpu, wakeups, vol, invol = db.one("""
            SELECT count(DISTINCT pid), count(DISTINCT tgid), sum(oncpu_ns), sum(wakeups),
                   sum(voluntary_switches), sum(involuntary_switches) FROM task_intervals""")
        runs = _run_lengths(db)
    duration = m["duration_s"]
    ncpu = len(m["cpus"]) or None
    switches = (vol or 0) + (invol or 0)
    voluntary_share = (vol or 0) / switches if switches else None
    util = mean_util(m)
    run_mean = oncpu / switches if oncpu is not None and switches else None
    wake_rate = wakeups / duration if wakeups is not None and duration else None
    wait = m["wait"]
    latency_sensitive = (wake_rate is not None and ncpu is not None and run_mean is not None
                         and wake_rate / ncpu >= WAKEUPS_PER_CPU_S and run_mean < SHORT_RUN_NS)
    return {
        "trace": str(trace.path),
        "duration_s": duration,
        "cpus": ncpu,
        "class": classify(util, voluntary_share),
        "latency_sensitive": latency_sensitive,
        "util_mean": util,
        "voluntary_share": voluntary_share,
        "threads": int(threads or 0),
        "processes": int(processes or 0),
        "wakeups_per_s": wake_rate,
        "switches_per_s": m["switches"]["rate_per_s"],
        "run_ns": {"mean": run_mean, **(runs or {})},
        "wait_ns": {k: wait.get(k) for k in ("mean_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns")}
                   | {"exact": wait.get("exact"), "count": wait.get("count")},
        "migrations_per_s": m["migrations"]["rate_per_s"],
        "migrations_by_domain": m["migrations"].get("by_domain"),
        "thresholds": {"cpu_bound_util": CPU_BOUND_UTIL, "cpu_bound_voluntary": CPU_BOUND_VOLUNTARY,
                       "blocking_voluntary": BLOCKING_VOLUNTARY, "blocking_util": BLOCKING_UTIL,
                       "wakeups_per_cpu_s": WAKEUPS_PER_CPU_S, "short_run_ns": SHORT_RUN_NS},
    }


def format_profile(p: dict[str, Any]) -> str:
    """A few lines for a terminal."""
    def ms(ns: float | None) -> str:
        return "-" if ns is None else f"{ns / 1e6:.3g} ms"

    def num(x: float | None, fmt: str = "{:.3g}") -> str:
        return "-" if x is None else fmt.format(x)

    run, wait = p["run_ns"], p["wait_ns"]
    lines = [
        f"class: {p['class']}{' (latency-sensitive)' if p['latency_sensitive'] else ''}  "
        f"util {num(p['util_mean'], '{:.0%}')}, voluntary switches {num(p['voluntary_share'], '{:.0%}')}",
        f"threads {p['threads']} in {p['processes']} processes on {p['cpus']} CPUs over {num(p['duration_s'])} s",
        f"wakeups {num(p['wakeups_per_s'])}/s, switches {num(p['switches_per_s'])}/s, "
        f"migrations {num(p['migrations_per_s'])}/s",
        f"run length mean {ms(run.get('mean'))}, p50 {ms(run.get('p50_ns'))}, p99 {ms(run.get('p99_ns'))}",
        f"wait mean {ms(wait.get('mean_ns'))}, p50 {ms(wait.get('p50_ns'))}, p99 {ms(wait.get('p99_ns'))}"
        + ("" if wait.get("exact") else " (histogram bucket bounds)"),
    ]
    return "\n".join(lines)
