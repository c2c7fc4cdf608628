"""Values no kernel writes: refused before they are reported as results.

A trace's Parquet files can be edited or damaged under a valid footer and
schema. A negative wait would be printed as "mean -5 ns", a negative or
int64-max timestamp would reach Perfetto as ~1.8e19 ns, an interval that
ends before it starts would give negative utilisation. One scan per table
(duckdb, bounded memory) checks the columns analyze, compare and export
read; the first offending column is a TraceError naming table, column and
value.
"""
from __future__ import annotations

from aios_lab.analysis.db import TraceDB
from aios_lab.errors import TraceError

# 2^62 ns is 146 years of uptime: a larger CLOCK_MONOTONIC value is damage.
MAX_NS = 1 << 62

# table -> columns that are times or durations in ns (never negative, never huge)
NS_COLUMNS = {
    "switches": ("ts_ns", "next_wait_ns"),
    "wakeups": ("ts_ns",),
    "migrations": ("ts_ns",),
    "task_intervals": ("interval_start_ns", "interval_end_ns", "oncpu_ns", "wait_ns", "wait_max_ns"),
    "cpu_intervals": ("interval_start_ns", "interval_end_ns", "busy_ns", "idle_ns"),
    "lb_decisions": ("ts_ns", "wait_after_ns", "run_after_ns"),
}
CPU_COLUMNS = {"switches": "cpu", "cpu_intervals": "cpu"}


def check_values(db: TraceDB, tables: tuple[str, ...] | None = None) -> None:
    """TraceError at the first time or duration outside 0..2^62 ns, interval
    that ends before it starts, or negative CPU number."""
    for table, cols in NS_COLUMNS.items():
        if tables is not None and table not in tables:
            continue
        if db.trace.file(table) is None or db.trace.rows(table) == 0:
            continue
        aggs = ", ".join(f"min({c}), max({c})" for c in cols)
        extra = ""
        if "interval_end_ns" in cols:
            extra += ", count(*) FILTER (WHERE interval_end_ns < interval_start_ns)"
        if table in CPU_COLUMNS:
            extra += f", min({CPU_COLUMNS[table]})"
        row = db.one(f"SELECT {aggs}{extra} FROM {table}")
        for i, c in enumerate(cols):
            lo, hi = row[2 * i], row[2 * i + 1]
            if lo is not None and lo < 0 or hi is not None and hi > MAX_NS:
                bad = lo if lo is not None and lo < 0 else hi
                raise TraceError(f"trace {db.trace.path}: {table}.{c} holds {bad}, not a time in "
                                 f"0..2^62 ns; the file was edited or damaged, re-collect it")
        rest = row[2 * len(cols):]
        if "interval_end_ns" in cols and rest[0]:
            raise TraceError(f"trace {db.trace.path}: {table} has {rest[0]} intervals that end before "
                             "they start; the file was edited or damaged, re-collect it")
        if table in CPU_COLUMNS and rest[-1] is not None and rest[-1] < 0:
            raise TraceError(f"trace {db.trace.path}: {table}.cpu holds {rest[-1]}; the file was edited "
                             "or damaged, re-collect it")
