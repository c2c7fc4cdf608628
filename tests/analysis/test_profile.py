"""analysis.profile: a workload's character from a trace with known contents."""
from __future__ import annotations

import pytest

from aios_lab.analysis.profile import classify, format_profile, profile_trace

from tests.helpers.traces import S, workload_trace


def test_a_cpu_bound_workload(tmp_path):
    p = profile_trace(workload_trace(tmp_path / "t", busy=0.95, vol=100, invol=900, wakeups=100))
    assert p["class"] == "cpu-bound" and not p["latency_sensitive"]
    assert p["voluntary_share"] == pytest.approx(0.1) and p["util_mean"] == pytest.approx(0.95)
    assert p["threads"] == 2 and p["processes"] == 1 and p["cpus"] == 2
    # 0.95 * 4 s * 2 CPUs on CPU over 1000 switches
    assert p["run_ns"]["mean"] == pytest.approx(0.95 * 4 * 2 * S / 1000, rel=1e-6)
    assert "p50_ns" not in p["run_ns"]  # no switch stream: no percentiles


def test_a_blocking_latency_sensitive_workload_with_exact_run_lengths(tmp_path):
    p = profile_trace(workload_trace(tmp_path / "t", busy=0.2, vol=99_000, invol=1_000, wakeups=100_000,
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
