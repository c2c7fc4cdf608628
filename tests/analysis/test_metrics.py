"""analysis.metrics (`aios-lab analyze`) on synthetic traces with known numbers.

The traces are written with the real TraceWriter (tests.helpers.traces);
every number the tests expect is worked out by hand from what was written,
so the SQL (duckdb) is checked against it, and a damaged trace is one line.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from aios_lab.analysis.metrics import trace_metrics
from aios_lab.analysis.report import format_metrics, render_report
from aios_lab.cli import main
from aios_lab.errors import TraceError
from aios_lab.telemetry.schema import WAIT_HIST_BUCKETS
from aios_lab.telemetry.writer import TraceWriter

from tests.helpers.traces import US, S, garble_pages, metrics_trace, wait_hist


def test_exact_wait_percentiles_from_switches(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t"))
    w = m["wait"]
    assert w["source"] == "switches" and w["exact"]
    assert w["count"] == 1000
    # quantile_disc over 1..1000 us: the smallest value with >= q of the waits at or below it.
    assert (w["p50_ns"], w["p90_ns"], w["p99_ns"], w["p999_ns"]) == (500 * US, 900 * US, 990 * US, 999 * US)
    assert w["mean_ns"] == pytest.approx(500.5 * US)
    assert w["max_ns"] == 1000 * US
    assert w["hist"] == wait_hist([i * US for i in range(1, 1001)])


def test_wait_from_histograms_when_no_switch_stream(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t", switches=False))
    w = m["wait"]
    assert w["source"] == "histogram" and not w["exact"]
    assert w["count"] == 1000 and w["hist"] == wait_hist([i * US for i in range(1, 1001)])
    # 500 us lies in bucket 18 ([262144, 524288) ns): its upper bound is reported.
    assert w["p50_ns"] == 1 << 19
    assert w["p99_ns"] == 1 << 20   # 990 us in [524288, 1048576)
    assert w["mean_ns"] == pytest.approx(500.5 * US)


def test_a_sampled_switch_stream_gives_way_to_the_exact_aggregates(tmp_path):
    """Rows weighted above 1 hold only some waits and switches: waits then
    come from the per-task histograms (which count every wait), switch counts
    from cpu_intervals, and per-task p99s are flagged as estimates."""
    m = trace_metrics(metrics_trace(tmp_path / "t", sample_weight=4))
    w = m["wait"]
    assert w["source"] == "histogram" and not w["exact"] and w["sampled_stream"]
    assert w["count"] == 1000 and w["p50_ns"] == 1 << 19
    assert m["switches"]["source"] == "cpu_intervals" and m["switches"]["total"] == 10 * 10 * 4
    assert m["tasks"]["p99_approximate"]
    assert "sampled" in render_report(m)


def test_cpu_timeline_and_migrations(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t"))
    tl = m["time"]
    assert m["cpus"] == [0, 1, 2, 3] and m["duration_s"] == 10.0
    assert tl["bin_s"] == 1.0 and len(tl["t_s"]) == 10
    for row in tl["util"]:
        assert row == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert tl["util_by_cpu"] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(row == pytest.approx([1.0, 2.0, 3.0, 4.0]) for row in tl["rq_len"])
    assert tl["freq_khz"] is None
    mig = m["migrations"]
    assert mig["total"] == 6 and mig["rate_per_s"] == pytest.approx(0.6)
    assert mig["by_domain"] == {"same_llc": 4, "cross_llc": 0, "cross_node": 2, "unknown": 0}
    assert mig["matrix"]["cpus"] == [0, 1, 2, 3]
    assert mig["matrix"]["counts"] == [[0, 3, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    # ts 0.5, 1.0, ..., 3.0 s in 1 s bins: 1, 2, 2, 1.
    assert mig["per_bin"] == [1, 2, 2, 1]


def test_frequency_over_time_where_recorded(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t", freq=True))
    f = m["time"]["freq_khz"]
    assert len(f) == 10 and f[3] == [1_300_000, 1_300_001, 1_300_002, 1_300_003]
    doc = render_report(m)
    assert "No frequency recorded" not in doc and 'alt="frequency"' in doc
    assert "No frequency recorded" in render_report(trace_metrics(metrics_trace(tmp_path / "u")))


def test_long_traces_are_binned(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t", duration_s=50, migrations=False), max_bins=20)
    tl = m["time"]
    assert tl["bin_s"] == pytest.approx(2.5) and len(tl["t_s"]) == 20
    # Each 2.5 s bin holds whole 1 s intervals of the same busy fraction.
    assert tl["util"][0] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_task_tables(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t"))
    t = m["tasks"]
    assert t["count"] == 3
    top = t["top_by_wait"]
    assert [x["pid"] for x in top] == [200, 100, 300]   # odd waits sum higher
    assert top[0]["wait_ns"] == sum(range(2, 1001, 2)) * US
    assert top[0]["wait_mean_ns"] == pytest.approx(501 * US)
    # pid 200's waits are 2..1000 us (500 of them): p99 is the 495th = 990 us.
    assert top[0]["wait_p99_ns"] == 990 * US
    assert [x["pid"] for x in t["top_by_migrations"]] == [300, 200, 100]


def test_policy_counters_are_summed(tmp_path):
    out = tmp_path / "t"
    w = TraceWriter(out, {})
    w.append("policy_stats", [{"interval_start_ns": i * S, "interval_end_ns": (i + 1) * S, "cpu": c,
                               "policy": "fifo", "stat": stat, "value": v}
                              for i in range(3) for c in range(2)
                              for stat, v in (("QUEUED", 10 * c + i), ("DIRECT", 1))])
    w.close()
    m = trace_metrics(out)
    assert m["policy_stats"] == {"fifo": {"DIRECT": 6, "QUEUED": 36}}  # 10*c+i over c<2, i<3
    assert "policy fifo: DIRECT=6, QUEUED=36" in format_metrics(m)
    assert "<h2>Policy counters</h2>" in render_report(m)


# -- bad input ----------------------------------------------------------------------------------

def _cli_error(args: list[str]) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 3, res.output
    assert res.output.count("\n") == 1, res.output     # one line
    return res.output


def test_missing_trace(tmp_path):
    assert "no such directory" in _cli_error(["analyze", str(tmp_path / "nope")])


def test_corrupt_table_file(tmp_path):
    t = metrics_trace(tmp_path / "t")
    (t / "switches.parquet").write_bytes(b"not parquet at all")
    out = _cli_error(["analyze", str(t), "--report", str(tmp_path / "r.html")])
    assert "switches.parquet is not a Parquet file" in out
    assert not (tmp_path / "r.html").exists()


def test_truncated_table_file(tmp_path):
    t = metrics_trace(tmp_path / "t")
    f = t / "cpu_intervals.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert "cpu_intervals.parquet is not a Parquet file (truncated or corrupt)" in _cli_error(
        ["analyze", str(t)])


def test_damaged_data_pages(tmp_path):
    """A valid footer over garbage pages passes Trace.open; the query says so in one line."""
    t = metrics_trace(tmp_path / "t")
    garble_pages(t / "switches.parquet")
    with pytest.raises(TraceError, match="cannot be read"):
        trace_metrics(t)
    assert "re-collect it" in _cli_error(["analyze", str(t)])


def test_unknown_schema_version(tmp_path):
    t = metrics_trace(tmp_path / "t")
    md = json.loads((t / "metadata.json").read_text())
    md["schema_version"] = 99
    (t / "metadata.json").write_text(json.dumps(md))
    assert "schema_version 99 is newer than this aios-lab reads" in _cli_error(["analyze", str(t)])
    assert "schema_version 99" in _cli_error(["compare", str(t), str(metrics_trace(tmp_path / "u"))])


def test_report_to_a_missing_folder(tmp_path):
    t = metrics_trace(tmp_path / "t")
    out = _cli_error(["analyze", str(t), "--report", str(tmp_path / "no" / "r.html")])
    assert "report folder" in out and "does not exist" in out
    assert not list((tmp_path).glob("**/.r.html*"))


def test_json_output(tmp_path):
    t = metrics_trace(tmp_path / "t")
    res = CliRunner().invoke(main, ["analyze", str(t), "--json"])
    assert res.exit_code == 0
    assert json.loads(res.output)["wait"]["p99_ns"] == 990 * US


def test_open_last_bucket_has_no_upper_bound(tmp_path):
    """Waits of 2^31 ns and more share the last bucket: no bound to report."""
    m = trace_metrics(metrics_trace(tmp_path / "t", switches=False, waits_us=[3_000_000] * 10))
    assert m["wait"]["hist"][WAIT_HIST_BUCKETS - 1] == 10
    assert m["wait"]["p50_ns"] is None and m["wait"]["max_ns"] == 3_000_000 * US


def test_migrations_counted_per_task_when_no_events(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t", migrations=False))
    mig = m["migrations"]
    assert mig["source"] == "task_intervals" and mig["total"] == 6 and mig["matrix"] is None
    assert "no migration events in this trace" in render_report(m)
