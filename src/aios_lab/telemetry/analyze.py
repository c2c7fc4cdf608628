"""Summarise a trace: who waited, how long wakeups took, migrations, CPU use.

``summarize`` returns plain JSON-able data (so the CLI can print it or dump
it as JSON); ``format_summary`` renders it as text. A trace may lack whole
tables (a /proc-only trace collected without root has no BPF tables): each
such gap is listed under "absent" instead of failing.
"""
from __future__ import annotations

import math
import shlex
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aios_lab.telemetry.schema import WAIT_HIST_BUCKETS
from aios_lab.telemetry.trace import Trace

NS_PER_S = 1_000_000_000


def _int_sum(table: pa.Table, column: str) -> int | None:
    """Sum of a column, or None when every value is null (no data, not zero)."""
    col = table.column(column)
    if len(col) == col.null_count:
        return None
    return int(pc.sum(col).as_py())


def _duration(trace: Trace) -> tuple[int | None, str]:
    """Trace duration in ns and where it came from.

    The recorded start/end are authoritative; without them fall back to the
    span of timestamps in the data.
    """
    md = trace.metadata
    start = (md.get("start") or {}).get("monotonic_ns") if isinstance(md.get("start"), dict) else None
    end = (md.get("end") or {}).get("monotonic_ns") if isinstance(md.get("end"), dict) else None
    if isinstance(start, int) and isinstance(end, int) and end > start:
        return end - start, "metadata"
    lo, hi = None, None
    for name, first, last in (("task_intervals", "interval_start_ns", "interval_end_ns"),
                              ("cpu_intervals", "interval_start_ns", "interval_end_ns"),
                              ("migrations", "ts_ns", "ts_ns"),
                              ("wakeups", "ts_ns", "ts_ns"),
                              ("processes", "ts_ns", "ts_ns")):
        t = trace.arrow(name)
        if t.num_rows == 0:
            continue
        a, b = pc.min(t.column(first)).as_py(), pc.max(t.column(last)).as_py()
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    if lo is not None and hi is not None and hi > lo:
        return hi - lo, "data"
    return None, "unknown"


def combined_wait_hist(table: pa.Table) -> np.ndarray:
    """Element-wise sum of every row's wait_hist (WAIT_HIST_BUCKETS counts)."""
    total = np.zeros(WAIT_HIST_BUCKETS, dtype=np.int64)
    col = table.column("wait_hist")
    if len(col) == col.null_count:
        return total
    for chunk in col.chunks:
        lengths = pc.list_value_length(chunk).fill_null(0).to_numpy(zero_copy_only=False)
        values = pc.list_flatten(chunk).fill_null(0).to_numpy(zero_copy_only=False)
        if np.all(lengths == WAIT_HIST_BUCKETS):
            total += values.reshape(-1, WAIT_HIST_BUCKETS).astype(np.int64).sum(axis=0)
            continue
        # Odd lengths (not from our writer): the last bucket means "and above",
        # so extra buckets fold into it rather than being dropped.
        pos = 0
        for n in lengths:
            row = values[pos:pos + n].astype(np.int64)
            pos += n
            k = min(n, WAIT_HIST_BUCKETS)
            total[:k] += row[:k]
            if n > WAIT_HIST_BUCKETS:
                total[-1] += row[WAIT_HIST_BUCKETS:].sum()
    return total


def hist_percentile(hist: np.ndarray, q: float) -> int | None:
    """Bucket index holding the q-quantile (nearest rank), or None if empty."""
    total = int(hist.sum())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    return int(np.searchsorted(np.cumsum(hist), rank))


def bucket_upper_ns(i: int) -> int | None:
    """Exclusive upper bound of bucket i; None for the open-ended last bucket."""
    return None if i >= WAIT_HIST_BUCKETS - 1 else 2 ** (i + 1)


def summarize(trace: Trace, top: int = 10) -> dict[str, Any]:
    md = trace.metadata
    absent: list[str] = []
    duration_ns, duration_source = _duration(trace)
    lost = md.get("lost") if isinstance(md.get("lost"), dict) else {}
    summary: dict[str, Any] = {
        "path": str(trace.path),
        "status": trace.status,
        "schema_version": trace.schema_version,
        "kernel": (md.get("kernel") or {}).get("release") if isinstance(md.get("kernel"), dict) else None,
        "workload": _command(md.get("workload")),
        "sources": list(md.get("sources") or []),
        "start_wall": (md.get("start") or {}).get("wall") if isinstance(md.get("start"), dict) else None,
        "end_wall": (md.get("end") or {}).get("wall") if isinstance(md.get("end"), dict) else None,
        "duration_s": duration_ns / NS_PER_S if duration_ns else None,
        "duration_source": duration_source,
        "lost": {str(k): int(v) for k, v in lost.items() if isinstance(v, (int, float))},
        "rows": {name: trace.rows(name) for name in trace.tables},
    }
    summary["lost_total"] = sum(summary["lost"].values())
    if duration_ns is None:
        absent.append("trace duration (no start/end in metadata and no timestamps in data)")

    tasks = trace.arrow("task_intervals")
    summary["top_wait"] = _top_wait(tasks, top)
    summary["wakeup_latency"] = _wakeup_latency(tasks)
    if tasks.num_rows == 0:
        absent.append("task_intervals is empty: no run-queue wait or wakeup latency "
                      "(collected without the BPF collector, e.g. without root?)")
    elif summary["wakeup_latency"]["count"] == 0:
        absent.append("no wait_hist counts in task_intervals: no wakeup latency percentiles")

    summary["migrations"] = _migrations(trace.arrow("migrations"), tasks, duration_ns)
    if summary["migrations"]["source"] is None:
        absent.append("migrations: neither the migrations table nor "
                      "task_intervals.migrations has data")

    summary["cpu"] = _cpu_util(trace.arrow("cpu_intervals"))
    if summary["cpu"]["overall"] is None:
        absent.append("cpu_intervals has no busy/idle time: no CPU utilisation")

    summary["policy_stats"] = _policy_stats(trace.arrow("policy_stats"))

    procs = trace.arrow("processes")
    summary["processes"] = {
        "samples": procs.num_rows,
        "pids": int(pc.count_distinct(procs.column("pid")).as_py()) if procs.num_rows else 0,
    }
    summary["absent"] = absent
    return summary


def _command(workload: Any) -> str | None:
    # The collector records the command as an argv list; show it as a shell line.
    cmd = workload.get("command") if isinstance(workload, dict) else None
    if isinstance(cmd, list):
        return shlex.join(map(str, cmd))
    return None if cmd is None else str(cmd)


def _policy_stats(stats: pa.Table) -> dict[str, dict[str, int]]:
    """Totals of each sched_ext policy counter over the trace, all CPUs summed."""
    if stats.num_rows == 0:
        return {}
    df = stats.select(["policy", "stat", "value"]).to_pandas()
    g = df.groupby(["policy", "stat"], sort=True)["value"].sum()
    out: dict[str, dict[str, int]] = {}
    for (policy, stat), value in g.items():
        out.setdefault(str(policy), {})[str(stat)] = int(value)
    return out


def _top_wait(tasks: pa.Table, top: int) -> list[dict[str, Any]]:
    if tasks.num_rows == 0:
        return []
    df = tasks.select(["pid", "comm", "wait_ns", "wait_count"]).to_pandas()
    # A pid keeps its comm until exec; grouping by both keeps an exec'd
    # process's phases apart, and dropna keeps rows whose comm is unknown.
    g = (df.groupby(["pid", "comm"], dropna=False, sort=False)[["wait_ns", "wait_count"]]
           .sum(min_count=1).reset_index())
    g = g[g["wait_ns"].notna()].sort_values(["wait_ns", "pid"], ascending=[False, True]).head(top)
    out = []
    for r in g.itertuples(index=False):
        count = int(r.wait_count) if r.wait_count == r.wait_count else 0  # NaN check
        wait = int(r.wait_ns)
        out.append({
            "pid": int(r.pid),
            "comm": None if not isinstance(r.comm, str) else r.comm,
            "wait_ns": wait,
            "wait_count": count,
            "mean_wait_ns": wait / count if count else None,
        })
    return out


def _wakeup_latency(tasks: pa.Table) -> dict[str, Any]:
    hist = combined_wait_hist(tasks)
    total = int(hist.sum())
    wait_ns = _int_sum(tasks, "wait_ns") if tasks.num_rows else None
    wait_count = _int_sum(tasks, "wait_count") if tasks.num_rows else None
    out: dict[str, Any] = {"count": total, "hist": hist.tolist()}
    for label, q in (("p50", 0.50), ("p99", 0.99)):
        i = hist_percentile(hist, q)
        out[f"{label}_bucket"] = i
        out[f"{label}_ns"] = None if i is None else bucket_upper_ns(i)
    # The histogram only bounds the percentiles; the mean is exact.
    out["mean_ns"] = wait_ns / wait_count if wait_ns is not None and wait_count else None
    return out


def _migrations(mig: pa.Table, tasks: pa.Table, duration_ns: int | None) -> dict[str, Any]:
    if mig.num_rows:
        count, source = mig.num_rows, "migrations"
    else:
        count = _int_sum(tasks, "migrations") if tasks.num_rows else None
        source = "task_intervals" if count is not None else None
    per_s = count / (duration_ns / NS_PER_S) if count is not None and duration_ns else None
    return {"count": count, "per_s": per_s, "source": source}


def _cpu_util(cpus: pa.Table) -> dict[str, Any]:
    if cpus.num_rows == 0:
        return {"per_cpu": {}, "overall": None}
    df = cpus.select(["cpu", "busy_ns", "idle_ns"]).to_pandas()
    g = df.groupby("cpu", sort=True)[["busy_ns", "idle_ns"]].sum(min_count=1)
    per_cpu: dict[int, float | None] = {}
    for cpu, r in g.iterrows():
        busy = 0 if r.busy_ns != r.busy_ns else int(r.busy_ns)
        idle = 0 if r.idle_ns != r.idle_ns else int(r.idle_ns)
        per_cpu[int(cpu)] = busy / (busy + idle) if busy + idle else None
    busy_all = int(np.nansum(g["busy_ns"].to_numpy(dtype=float)))
    idle_all = int(np.nansum(g["idle_ns"].to_numpy(dtype=float)))
    # Overall weights CPUs by observed time: an offline/unobserved CPU does
    # not drag the figure down.
    overall = busy_all / (busy_all + idle_all) if busy_all + idle_all else None
    return {"per_cpu": per_cpu, "overall": overall}


# -- text ----------------------------------------------------------------------


def _fmt_ns(ns: float | int | None) -> str:
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.0f} ns"


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _fmt_bucket(summary_lat: dict[str, Any], label: str) -> str:
    i = summary_lat.get(f"{label}_bucket")
    if i is None:
        return "-"
    ns = summary_lat.get(f"{label}_ns")
    if ns is None:  # open-ended last bucket
        return f">= {_fmt_ns(2 ** i)}"
    return f"< {_fmt_ns(ns)}"


def format_summary(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    add(f"trace     {summary['path']}  ({summary['status']}, schema v{summary['schema_version']})")
    add(f"kernel    {summary.get('kernel') or '-'}")
    add(f"workload  {summary.get('workload') or '-'}")
    dur = summary.get("duration_s")
    add(f"duration  {'-' if dur is None else f'{dur:.3f} s'}"
        + (f"  (from {summary['duration_source']})" if dur is not None else ""))
    if summary.get("sources"):
        add(f"sources   {', '.join(map(str, summary['sources']))}")
    lost = summary.get("lost") or {}
    if summary.get("lost_total"):
        detail = ", ".join(f"{k}={v}" for k, v in sorted(lost.items()) if v)
        add(f"LOST      {summary['lost_total']} events ({detail}): figures undercount")
    else:
        add("lost      0 events")
    rows = summary.get("rows") or {}
    add("rows      " + ", ".join(f"{k}={v}" for k, v in rows.items()))

    lat = summary["wakeup_latency"]
    add("")
    add(f"wakeup latency ({lat['count']} waits): p50 {_fmt_bucket(lat, 'p50')}, "
        f"p99 {_fmt_bucket(lat, 'p99')}, mean {_fmt_ns(lat['mean_ns'])}")

    mig = summary["migrations"]
    if mig["source"] is None:
        add("migrations: -")
    else:
        rate = "-" if mig["per_s"] is None else f"{mig['per_s']:.2f}/s"
        add(f"migrations: {mig['count']} ({rate}, from {mig['source']})")

    cpu = summary["cpu"]
    add(f"cpu utilisation: overall {_fmt_pct(cpu['overall'])}")
    if cpu["per_cpu"]:
        add("  " + "  ".join(f"cpu{c}={_fmt_pct(u)}" for c, u in cpu["per_cpu"].items()))

    if summary["top_wait"]:
        add("")
        add("top run-queue wait:")
        add(f"  {'pid':>8}  {'comm':<16} {'total wait':>12} {'waits':>8} {'mean':>10}")
        for t in summary["top_wait"]:
            add(f"  {t['pid']:>8}  {(t['comm'] or '?'):<16} {_fmt_ns(t['wait_ns']):>12} "
                f"{t['wait_count']:>8} {_fmt_ns(t['mean_wait_ns']):>10}")

    for policy, stats in (summary.get("policy_stats") or {}).items():
        add(f"policy {policy}: " + ", ".join(f"{k}={v}" for k, v in stats.items()))

    procs = summary.get("processes") or {}
    if procs.get("samples"):
        add(f"processes: {procs['samples']} samples of {procs['pids']} pids")

    if summary["absent"]:
        add("")
        add("absent:")
        for a in summary["absent"]:
            add(f"  - {a}")
    return "\n".join(lines)
