"""The metrics of one trace, computed in SQL (analysis.db) into plain data.

``trace_metrics`` returns a JSON-able dict: everything a report, a
comparison or ``--json`` needs, and nothing the size of the trace (time
series are binned to at most ``MAX_BINS`` points). What each number means:

- wait: run-queue wait, from waking (or being preempted) to running. From
  the ``switches`` table when it has every wait: exact percentiles. When it
  has none, or the stream was sampled (a ``sample_weight`` above 1, see
  docs/trace-format.md), from the per-task log2 histograms, which count
  every wait: each percentile is the upper bound of its bucket (``exact``
  says which, ``sampled_stream`` why).
- util: busy / (busy + idle) per CPU per time bin, from ``cpu_intervals``.
- rq_len: mean sampled ``nr_running`` (the running task included) per CPU
  per bin, weighted by the number of samples.
- migrations: from the ``migrations`` event table; its same_llc/same_node
  columns split them into within-LLC, across LLCs within a node, and
  across NUMA nodes.
- freq_khz: mean recorded frequency per CPU per bin, or None when the
  kernel exposed none (every VM here).
- policy_stats: the attached sched_ext policy's counters, summed over CPUs
  and intervals.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from aios_lab.analysis.db import TraceDB, exact_quantiles, log2_buckets, stream_sampled
from aios_lab.analysis.sanity import check_values
from aios_lab.telemetry.schema import TABLES, WAIT_HIST_BUCKETS
from aios_lab.telemetry.trace import Trace

if TYPE_CHECKING:
    import numpy as np

MAX_BINS = 200
QUANTILES = (0.5, 0.9, 0.99, 0.999)
QUANTILE_KEYS = ("p50_ns", "p90_ns", "p99_ns", "p999_ns")
EVENT_TABLES = ("switches", "wakeups", "migrations")
TOP_TASKS = 20
EXACT_TASK_WAITS = 2_000_000   # per-task p99s are exact up to this many waits in all


def trace_metrics(trace: Trace | str, memory_limit: str | None = None,
                  max_bins: int = MAX_BINS, top: int = TOP_TASKS) -> dict[str, Any]:
    """All metrics of one trace (see the module docstring)."""
    if not isinstance(trace, Trace):
        trace = Trace.open(trace)
    kw = {"memory_limit": memory_limit} if memory_limit else {}
    with TraceDB(trace, **kw) as db:
        check_values(db)
        t0, t1 = _span(db, trace)
        duration_s = (t1 - t0) / 1e9 if t0 is not None and t1 > t0 else None
        cpus = [int(r[0]) for r in db.rows("SELECT DISTINCT cpu FROM cpu_intervals ORDER BY cpu")]
        width = _bin_width(db, t0, t1, max_bins)
        out: dict[str, Any] = {
            "trace": str(trace.path),
            "status": trace.status,
            "truncated": trace.status == "truncated",
            "rows": {name: trace.rows(name) for name in TABLES},
            "events": sum(trace.rows(n) for n in EVENT_TABLES),
            "metadata": _metadata(trace),
            "lost": {k: v for k, v in (trace.metadata.get("lost") or {}).items() if v},
            "duration_s": duration_s,
            "t0_ns": t0,
            "cpus": cpus,
            "wait": _wait(db),
            "tasks": _tasks(db, top),
            "migrations": _migrations(db, t0, width, duration_s),
            "switches": _switches(db, duration_s),
            "policy_stats": _policy_stats(db),
        }
        out["time"] = _timeline(db, t0, width, cpus)
    return out


def mean_util(m: dict[str, Any]) -> float | None:
    """Mean utilisation over the CPUs that have one (each CPU counts once)."""
    u = [v for v in m["time"].get("util_by_cpu") or [] if v is not None]
    return sum(u) / len(u) if u else None


def hist_percentile(hist: "np.ndarray", q: float) -> int | None:
    """Bucket index holding the q-quantile (nearest rank), or None if empty."""
    import numpy as np

    total = int(hist.sum())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    return int(np.searchsorted(np.cumsum(hist), rank))


def bucket_upper_ns(i: int | None) -> int | None:
    """Exclusive upper bound of log2 wait bucket i; None for the open-ended last one."""
    return None if i is None or i >= WAIT_HIST_BUCKETS - 1 else 2 ** (i + 1)


# -- time axis --------------------------------------------------------------------------------

def _span(db: TraceDB, trace: Trace) -> tuple[int | None, int]:
    """Start and end in trace ns: the recorded ones, else the data's span."""
    md = trace.metadata
    start = (md.get("start") or {}).get("monotonic_ns") if isinstance(md.get("start"), dict) else None
    end = (md.get("end") or {}).get("monotonic_ns") if isinstance(md.get("end"), dict) else None
    if isinstance(start, int) and isinstance(end, int) and end > start:
        return start, end
    lo, hi = db.one("""
        SELECT min(lo), max(hi) FROM (
          SELECT min(interval_start_ns) lo, max(interval_end_ns) hi FROM cpu_intervals
          UNION ALL SELECT min(interval_start_ns), max(interval_end_ns) FROM task_intervals
          UNION ALL SELECT min(ts_ns), max(ts_ns) FROM switches
          UNION ALL SELECT min(ts_ns), max(ts_ns) FROM wakeups
          UNION ALL SELECT min(ts_ns), max(ts_ns) FROM migrations)""")
    return (int(lo), int(hi)) if lo is not None else (None, 0)


def _bin_width(db: TraceDB, t0: int | None, t1: int, max_bins: int) -> int:
    """Bin width in ns: the collection interval, widened to keep <= max_bins bins."""
    if t0 is None or t1 <= t0:
        return 1_000_000_000
    (interval,) = db.one("SELECT median(interval_end_ns - interval_start_ns) FROM cpu_intervals")
    base = int(interval) if interval else 1_000_000_000
    need = math.ceil((t1 - t0) / max_bins)
    return max(base, need, 1)


def _grid(rows: list[tuple], nbins: int, cpus: list[int]) -> list[list[float | None]]:
    """(bin, cpu, value) rows -> [bin][cpu index] with None where no data."""
    index = {c: i for i, c in enumerate(cpus)}
    grid: list[list[float | None]] = [[None] * len(cpus) for _ in range(nbins)]
    for b, cpu, v in rows:
        if 0 <= b < nbins and cpu in index and v is not None:
            grid[int(b)][index[cpu]] = float(v)
    return grid


def _timeline(db: TraceDB, t0: int | None, width: int, cpus: list[int]) -> dict[str, Any]:
    if t0 is None or not cpus:
        return {"bin_s": width / 1e9, "t_s": [], "util": [], "rq_len": [], "rq_len_max": [],
                "freq_khz": None}
    (last,) = db.one("SELECT max(interval_start_ns) FROM cpu_intervals")
    nbins = max(1, int((last - t0) // width) + 1) if last is not None else 1
    b = f"CAST(floor((interval_start_ns - {t0}) / {width}) AS BIGINT)"
    sampled = "FILTER (WHERE rq_len_samples > 0)"
    rows = db.rows(f"""
        SELECT {b} AS b, cpu, sum(busy_ns)::DOUBLE / nullif(sum(busy_ns + idle_ns), 0),
               sum(rq_len_mean * rq_len_samples) {sampled} / nullif(sum(rq_len_samples) {sampled}, 0),
               max(rq_len_max), avg(freq_khz)
        FROM cpu_intervals GROUP BY ALL""")

    def column(i: int) -> list[tuple]:
        return [(r[0], r[1], r[i]) for r in rows]
    overall = dict(db.rows("""
        SELECT cpu, sum(busy_ns)::DOUBLE / nullif(sum(busy_ns + idle_ns), 0)
        FROM cpu_intervals GROUP BY cpu"""))
    return {
        "bin_s": width / 1e9,
        "t_s": [i * width / 1e9 for i in range(nbins)],
        "util": _grid(column(2), nbins, cpus),
        "rq_len": _grid(column(3), nbins, cpus),
        "rq_len_max": _grid(column(4), nbins, cpus),
        # None, not a grid of Nones, where the kernel exposed no frequency.
        "freq_khz": _grid(column(5), nbins, cpus) if any(r[5] is not None for r in rows) else None,
        "util_by_cpu": [overall.get(c) for c in cpus],
    }


# -- waits ------------------------------------------------------------------------------------

def _wait(db: TraceDB) -> dict[str, Any]:
    (n_exact,) = db.one("SELECT count(next_wait_ns) FROM switches")
    sampled = bool(n_exact) and stream_sampled(db, "switches")
    if n_exact and not sampled:
        # One column, materialised once: duckdb keeps temp tables in its
        # buffer pool and spills them, and the quantile search scans it a few times.
        # Through db.rows, so that a damaged data page is a TraceError here too.
        db.rows("""CREATE OR REPLACE TEMP TABLE waits AS
                          SELECT next_wait_ns AS w FROM switches WHERE next_wait_ns IS NOT NULL""")
        count, mean, wmax = db.one("SELECT count(*), avg(w), max(w) FROM waits")
        levels = log2_buckets(db, "waits", "w")
        quantiles = exact_quantiles(db, "waits", "w", QUANTILES, levels)
        db.rows("DROP TABLE waits")
        hist = [0] * WAIT_HIST_BUCKETS
        for k, c, _, _ in levels:
            # The last bucket holds everything from 2^31 ns up.
            hist[min(k, WAIT_HIST_BUCKETS - 1)] += c
        out = {"source": "switches", "exact": True, "count": int(count), "mean_ns": float(mean),
               "max_ns": int(wmax)}
        out.update(zip(QUANTILE_KEYS, quantiles))
        out["hist"] = hist
        return out
    # No switch stream: the per-task log2 histograms (bucket upper bounds).
    hist = [0] * WAIT_HIST_BUCKETS
    for i, c in db.rows("""
            SELECT i, sum(c) FROM (
              SELECT unnest(generate_series(0, len(wait_hist) - 1)) AS i, unnest(wait_hist) AS c
              FROM task_intervals WHERE wait_hist IS NOT NULL) GROUP BY i"""):
        # A longer list than ours folds into the last ("and above") bucket.
        hist[min(int(i), WAIT_HIST_BUCKETS - 1)] += int(c or 0)
    total = sum(hist)
    wait_ns, count, wmax = db.one("SELECT sum(wait_ns), sum(wait_count), max(wait_max_ns) FROM task_intervals")
    if not total:
        return {"source": None, "exact": False, "count": 0, "hist": hist}
    import numpy as np

    h = np.array(hist)
    out = {"source": "histogram", "exact": False, "sampled_stream": sampled, "count": int(total),
           "mean_ns": float(wait_ns) / count if count else None,
           "max_ns": int(wmax) if wmax is not None else None, "hist": hist}
    # Upper bound of the bucket; None for the open "2^31 ns and above" bucket.
    out.update({k: bucket_upper_ns(hist_percentile(h, q)) for k, q in zip(QUANTILE_KEYS, QUANTILES)})
    return out


# -- tasks ------------------------------------------------------------------------------------

_TASK_COLS = ("pid", "tgid", "comm", "oncpu_ns", "wait_ns", "wait_count", "wait_max_ns",
              "wakeups", "voluntary_switches", "involuntary_switches", "migrations")


def _tasks(db: TraceDB, top: int) -> dict[str, Any]:
    db.rows("""
        CREATE OR REPLACE TEMP TABLE per_task AS
        SELECT pid, any_value(tgid) AS tgid, arg_max(comm, interval_end_ns) AS comm,
               sum(oncpu_ns) AS oncpu_ns, sum(wait_ns) AS wait_ns, sum(wait_count) AS wait_count,
               max(wait_max_ns) AS wait_max_ns, sum(wakeups) AS wakeups,
               sum(voluntary_switches) AS voluntary_switches,
               sum(involuntary_switches) AS involuntary_switches, sum(migrations) AS migrations
        FROM task_intervals GROUP BY pid""")
    (n,) = db.one("SELECT count(*) FROM per_task")
    cols = ", ".join(_TASK_COLS)
    by_wait = [dict(zip(_TASK_COLS, r)) for r in db.rows(
        f"SELECT {cols} FROM per_task ORDER BY wait_ns DESC NULLS LAST, pid LIMIT {int(top)}")]
    by_mig = [dict(zip(_TASK_COLS, r)) for r in db.rows(
        f"""SELECT {cols} FROM per_task WHERE migrations > 0
            ORDER BY migrations DESC, pid LIMIT {int(top)}""")]
    pids = sorted({t["pid"] for t in by_wait + by_mig})
    p99: dict[int, int] = {}
    approx = False
    if pids:
        where = f"next_wait_ns IS NOT NULL AND next_pid IN ({', '.join(map(str, pids))})"
        (n_waits,) = db.one(f"SELECT count(*) FROM switches WHERE {where}")
        # quantile_disc holds its group's values in memory and cannot spill;
        # past EXACT_TASK_WAITS the t-digest estimate keeps memory bounded.
        # A sampled stream holds some waits only: its percentiles are estimates.
        approx = n_waits > EXACT_TASK_WAITS or stream_sampled(db, "switches")
        fn = "approx_quantile" if approx else "quantile_disc"
        p99 = {int(p): int(v) for p, v in db.rows(
            f"SELECT next_pid, {fn}(next_wait_ns, 0.99) FROM switches WHERE {where} GROUP BY next_pid")}
    for t in by_wait + by_mig:
        t["wait_mean_ns"] = t["wait_ns"] / t["wait_count"] if t["wait_count"] else None
        t["wait_p99_ns"] = p99.get(t["pid"])
    return {"count": int(n), "top_by_wait": by_wait, "top_by_migrations": by_mig,
            "p99_approximate": approx}


# -- migrations and switches ------------------------------------------------------------------

def _migrations(db: TraceDB, t0: int | None, width: int, duration_s: float | None) -> dict[str, Any]:
    (events,) = db.one("SELECT count(*) FROM migrations")
    if not events:
        (counted,) = db.one("SELECT sum(migrations) FROM task_intervals")
        total = int(counted or 0)
        return {"source": "task_intervals" if counted is not None else None, "total": total,
                "rate_per_s": total / duration_s if duration_s else None,
                "per_bin": [], "matrix": None, "by_domain": None}
    per_bin: list[int] = []
    if t0 is not None:
        rows = db.rows(f"""SELECT CAST(floor((ts_ns - {t0}) / {width}) AS BIGINT) AS b, count(*)
                           FROM migrations GROUP BY b ORDER BY b""")
        nb = max((int(b) for b, _ in rows if b is not None and b >= 0), default=-1) + 1
        per_bin = [0] * nb
        for b, c in rows:
            if b is not None and 0 <= b < nb:
                per_bin[int(b)] = int(c)
    pairs = db.rows("""SELECT src_cpu, dst_cpu, count(*) FROM migrations
                       WHERE src_cpu IS NOT NULL AND dst_cpu IS NOT NULL GROUP BY ALL""")
    cpus = sorted({int(s) for s, _, _ in pairs} | {int(d) for _, d, _ in pairs})
    idx = {c: i for i, c in enumerate(cpus)}
    matrix = [[0] * len(cpus) for _ in cpus]
    for s, d, c in pairs:
        matrix[idx[s]][idx[d]] = int(c)
    same_llc, cross_llc, cross_node, unknown = db.one("""
        SELECT count(*) FILTER (WHERE same_llc),
               count(*) FILTER (WHERE NOT same_llc AND same_node),
               count(*) FILTER (WHERE NOT same_node),
               count(*) FILTER (WHERE same_llc IS NULL OR same_node IS NULL)
        FROM migrations""")
    return {"source": "migrations", "total": int(events),
            "rate_per_s": events / duration_s if duration_s else None,
            "bin_s": width / 1e9, "per_bin": per_bin,
            "matrix": {"cpus": cpus, "counts": matrix},
            "by_domain": {"same_llc": int(same_llc), "cross_llc": int(cross_llc),
                          "cross_node": int(cross_node), "unknown": int(unknown)}}


def _switches(db: TraceDB, duration_s: float | None) -> dict[str, Any]:
    (n,) = db.one("SELECT count(*) FROM switches")
    if n and not stream_sampled(db, "switches"):
        total, source = int(n), "switches"
    else:
        (s,) = db.one("SELECT sum(switches) FROM cpu_intervals")
        total, source = int(s or 0), "cpu_intervals" if s is not None else None
    return {"source": source, "total": total,
            "rate_per_s": total / duration_s if duration_s and source else None}


def _policy_stats(db: TraceDB) -> dict[str, dict[str, int]]:
    """Each sched_ext policy counter's total over the trace, all CPUs summed."""
    out: dict[str, dict[str, int]] = {}
    for policy, stat, total in db.rows("""SELECT policy, stat, sum(value) FROM policy_stats
                                          GROUP BY ALL ORDER BY policy, stat"""):
        out.setdefault(policy, {})[stat] = int(total or 0)
    return out


# -- metadata ---------------------------------------------------------------------------------

def _metadata(trace: Trace) -> dict[str, Any]:
    """The metadata a reader of a report needs, flattened to label -> text."""
    md = trace.metadata
    out: dict[str, Any] = {"schema_version": md.get("schema_version"), "status": md.get("status"),
                           "aios_lab_version": md.get("aios_lab_version")}
    kernel = md.get("kernel") if isinstance(md.get("kernel"), dict) else {}
    out["kernel"] = kernel.get("release")
    from aios_lab.vm.guest_platform import describe

    out["vm_platform"] = describe(md.get("vm_platform") if isinstance(md.get("vm_platform"), dict) else None)
    host = md.get("host") if isinstance(md.get("host"), dict) else {}
    out["host"] = host.get("hostname")
    out["vm"] = host.get("vm")
    work = md.get("workload") if isinstance(md.get("workload"), dict) else {}
    cmd = work.get("command")
    out["command"] = " ".join(map(str, cmd)) if isinstance(cmd, list) else cmd
    out["policy"] = md.get("policy")
    out["ended_by"] = md.get("ended_by")
    out["interval_ms"] = md.get("interval_ms")
    start = md.get("start") if isinstance(md.get("start"), dict) else {}
    out["start_wall"] = start.get("wall")
    topo = md.get("topology") if isinstance(md.get("topology"), dict) else {}
    out["topology"] = {"nr_llcs": topo.get("nr_llcs"), "nr_nodes": topo.get("nr_nodes"),
                       "cpus": topo.get("cpus")} if topo else None
    out["sources"] = md.get("sources")
    return out
