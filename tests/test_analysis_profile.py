"""analysis.profile: a workload's character from a trace with known contents."""
from __future__ import annotations

from pathlib import Path

import pytest

from aios_lab.analysis.profile import classify, format_profile, profile_trace
from aios_lab.telemetry.writer import TraceWriter

S = 1_000_000_000


def _trace(out: Path, *, busy: float, vol: int, invol: int, wakeups: int, run_ns: int | None = None,
           cpus: int = 2, seconds: int = 4) -> Path:
    """``cpus`` CPUs ``busy`` of the time; two tasks of one process with the
    given switch and wakeup totals; with ``run_ns``, a switch stream where
    each CPU switches every run_ns (task 100 and 200 alternating, idle
    between every fourth)."""
    end = seconds * S
    md = {"start": {"monotonic_ns": 0, "wall": 1.7e9}, "end": {"monotonic_ns": end, "wall": 1.7e9 + seconds},
          "kernel": {"release": "6.12.0-test"}, "interval_ms": 1000}
    w = TraceWriter(out, md)
    w.append("cpu_intervals", [
        {"interval_start_ns": i * S, "interval_end_ns": (i + 1) * S, "cpu": c, "busy_ns": int(busy * S),
         "idle_ns": S - int(busy * S), "switches": 10} for i in range(seconds) for c in range(cpus)])
    w.append("task_intervals", [
        {"interval_start_ns": 0, "interval_end_ns": end, "pid": pid, "tgid": 100, "comm": f"t{pid}",
         "oncpu_ns": int(busy * end * cpus / 2), "wait_ns": 0, "wait_count": 0, "wakeups": wakeups // 2,
         "voluntary_switches": vol // 2, "involuntary_switches": invol // 2, "migrations": 0}
        for pid in (100, 200)])
    if run_ns is not None:
        rows = []
        for c in range(cpus):
            prev = 0
            for k in range(1, 200):
                nxt = 0 if k % 4 == 0 else (100 if k % 2 else 200)
                rows.append({"ts_ns": k * run_ns, "cpu": c, "prev_pid": prev, "prev_comm": "x", "prev_prio": 120,
                             "prev_state": 1, "next_pid": nxt, "next_comm": "x", "next_prio": 120,
                             "next_wait_ns": 1000, "sample_weight": 1})
                prev = nxt
        w.append("switches", rows)
    return w.close("complete")


def test_a_cpu_bound_workload(tmp_path):
    p = profile_trace(_trace(tmp_path / "t", busy=0.95, vol=100, invol=900, wakeups=100))
    assert p["class"] == "cpu-bound" and not p["latency_sensitive"]
    assert p["voluntary_share"] == pytest.approx(0.1) and p["util_mean"] == pytest.approx(0.95)
    assert p["threads"] == 2 and p["processes"] == 1 and p["cpus"] == 2
    # 0.95 * 4 s * 2 CPUs on CPU over 1000 switches
    assert p["run_ns"]["mean"] == pytest.approx(0.95 * 4 * 2 * S / 1000, rel=1e-6)
    assert "p50_ns" not in p["run_ns"]  # no switch stream: no percentiles


def test_a_blocking_latency_sensitive_workload_with_exact_run_lengths(tmp_path):
    p = profile_trace(_trace(tmp_path / "t", busy=0.2, vol=99_000, invol=1_000, wakeups=100_000,
                             run_ns=50_000))
    assert p["class"] == "blocking" and p["latency_sensitive"]
    assert p["wakeups_per_s"] == pytest.approx(100_000 / 4)
    # every gap on a CPU is 50 us; the ones after idle (prev_pid 0) are not runs
    assert p["run_ns"]["p50_ns"] == p["run_ns"]["p99_ns"] == 50_000
    assert p["run_ns"]["count"] == 2 * (198 - 49)
    assert p["wait_ns"]["exact"] and p["wait_ns"]["p50_ns"] == 1000
    text = format_profile(p)
    assert "class: blocking (latency-sensitive)" in text and "20%" in text


@pytest.mark.parametrize("util,vol,expected", [
    (0.7, 0.49, "cpu-bound"), (0.69, 0.49, "mixed"), (0.49, 0.8, "blocking"), (0.5, 0.8, "mixed"),
    (None, 0.5, "unknown"), (0.5, None, "unknown")])
def test_the_class_rule_at_its_thresholds(util, vol, expected):
    assert classify(util, vol) == expected
