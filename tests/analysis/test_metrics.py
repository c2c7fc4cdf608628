"""aios-lab analyze / compare on synthetic traces with known numbers.

The traces are written with the real TraceWriter; every number the tests
expect is worked out by hand from what was written, so the SQL (duckdb),
the statistics and the HTML rendering are all checked against it.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aios_lab.analysis.compare import compare_traces, default_label, format_comparison
from aios_lab.analysis.metrics import trace_metrics
from aios_lab.analysis.report import format_metrics, render_report, write_report
from aios_lab.cli import main
from aios_lab.errors import AiosError, TraceError
from aios_lab.telemetry.schema import WAIT_HIST_BUCKETS
from aios_lab.telemetry.writer import TraceWriter

from tests.helpers.traces import US, S, garble_pages, metrics_trace, wait_hist

# -- metrics ------------------------------------------------------------------------------------

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


def test_report_shows_the_numbers(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t"))
    out = write_report(m, tmp_path / "r.html")
    doc = out.read_text()
    assert doc.startswith("<!DOCTYPE html>\n")        # no warning on a complete trace
    for text in ("500 us", "900 us", "990 us", "999 us", "1 ms", "500 us",  # p50..max
                 "task200", "6.12.0-test", "stress --cpu 4", "62.5 %"):
        assert text in doc, text
    assert '<td class="l">p99</td><td>990 us</td>' in doc
    assert '<td class="l">p99.9</td><td>999 us</td>' in doc
    # Self-contained: figures inline, nothing fetched.
    assert doc.count("data:image/png;base64,") >= 5
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", doc)
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


def test_truncated_trace_report_says_so_first(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t", status="truncated"))
    doc = render_report(m)
    first = doc.splitlines()[0]
    assert "TRUNCATED TRACE" in first
    body = doc[doc.index("<body>"):]
    assert body.index("TRUNCATED TRACE") < body.index("<h1>")
    res = CliRunner().invoke(main, ["analyze", str(tmp_path / "t")])
    assert res.exit_code == 0 and res.output.splitlines()[0].startswith("TRUNCATED TRACE")


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


def test_html_escapes_names(tmp_path):
    out = tmp_path / "t"
    w = TraceWriter(out, {})
    w.append("task_intervals", [{"interval_start_ns": 0, "interval_end_ns": S, "pid": 1, "tgid": 1,
                                 "comm": "<script>x", "wait_ns": 5, "wait_count": 1}])
    w.close()
    doc = render_report(trace_metrics(out))
    assert "<script>x" not in doc and "&lt;script&gt;x" in doc


def test_empty_and_proc_only_traces_render(tmp_path):
    w = TraceWriter(tmp_path / "t", {})
    w.close()
    m = trace_metrics(tmp_path / "t")
    assert m["wait"]["count"] == 0 and m["migrations"]["total"] == 0 and m["duration_s"] is None
    assert "No waits recorded" in render_report(m)


# -- compare ------------------------------------------------------------------------------------

def _runs(tmp_path: Path, name: str, durations: list[float], scale: int) -> list[Path]:
    return [metrics_trace(tmp_path / f"{name}-{i + 1}", duration_s=d,
                        waits_us=[scale * k for k in range(1, 101)]) for i, d in enumerate(durations)]


def test_compare_statistics(tmp_path):
    from scipy import stats

    a = _runs(tmp_path, "eevdf", [10, 11, 12], 1)
    b = _runs(tmp_path, "mllb", [20, 22, 24], 2)
    c, runs = compare_traces(a + b)
    assert c["labels"] == ["eevdf", "mllb"] and c["baseline"] == "eevdf"
    g0 = c["groups"][0]["stats"]["duration"]
    assert g0["n"] == 3 and g0["mean"] == pytest.approx(11.0) and g0["sd"] == pytest.approx(1.0)
    assert g0["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3))   # 2.484
    r = c["ratios"]["mllb"]["duration"]
    assert r["ratio"] == pytest.approx(2.0)
    # Welch by hand: t = 11 / sqrt(1/3 + 4/3), df by Welch-Satterthwaite.
    va, vb = 1 / 3, 4 / 3
    t = 11 / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert r["p_welch"] == pytest.approx(2 * stats.t.sf(t, df))
    # Ratio interval by hand: log-ratio variance = CV^2/n per group; the two are
    # equal here (sd/mean = 1/11 and 2/22), so df = 2 * 2 = 4.
    v = (1 / 11) ** 2 / 3 + (2 / 22) ** 2 / 3
    half = stats.t.ppf(0.975, 4) * math.sqrt(v)
    assert r["ci95"] == pytest.approx([2 * math.exp(-half), 2 * math.exp(half)])
    # Waits doubled exactly in every run: ratio 2, no spread.
    w = c["ratios"]["mllb"]["wait_p99"]
    assert w["ratio"] == pytest.approx(2.0) and w["ci95"] == pytest.approx([2.0, 2.0])
    assert w["p_welch"] == 0.0
    text = format_comparison(c)
    assert "x2.000" in text and "eevdf x3, mllb x3" in text
    # Adjusted for every test in the table, and said so; 3 runs per group is warned about.
    n_tests = sum(r is not None and r["p_welch"] is not None for r in c["ratios"]["mllb"].values())
    assert c["p_adjust"] == {"method": "Benjamini-Hochberg", "tests": n_tests} and n_tests > 1
    assert r["p"] >= r["p_welch"]
    assert f"adjusted for the {n_tests} comparisons" in text and "Benjamini-Hochberg" in text
    assert c["warnings"] == [w for w in c["warnings"] if "fewer than 5 runs in eevdf (3), mllb (3)" in w]
    assert len(c["warnings"]) == 1 and "warning: fewer than 5 runs" in text


def test_bh_adjust_matches_the_step_up_rule():
    from aios_lab.analysis.compare import bh_adjust

    # By hand: sorted p (0.01, 0.02, 0.03, 0.5), m = 4: p*m/rank = 0.04, 0.04, 0.04, 0.5,
    # then the running minimum from the top. None is outside the family.
    assert bh_adjust([0.03, None, 0.5, 0.01, 0.02]) == pytest.approx([0.04, None, 0.5, 0.04, 0.04])
    assert bh_adjust([None]) == [None] and bh_adjust([]) == []
    assert bh_adjust([0.9, 0.95]) == pytest.approx([0.95, 0.95])


def test_compare_five_runs_per_group_do_not_warn(tmp_path):
    a = _runs(tmp_path, "a", [10, 11, 12, 11, 10], 1)
    b = _runs(tmp_path, "b", [12, 13, 14, 13, 12], 1)
    c, runs = compare_traces(a + b)
    assert c["warnings"] == [] and "warning:" not in format_comparison(c)
    from aios_lab.analysis.compare import render_comparison

    assert "Benjamini-Hochberg" in render_comparison(c, runs)


def test_compare_single_runs_give_ratios_only(tmp_path):
    a = _runs(tmp_path, "a", [10], 1)
    b = _runs(tmp_path, "b", [15], 1)
    c, runs = compare_traces(a + b)
    r = c["ratios"]["b"]["duration"]
    assert r["ratio"] == pytest.approx(1.5) and r["ci95"] is None and r["p_welch"] is None
    assert "one run in some group" in format_comparison(c)
    from aios_lab.analysis.compare import render_comparison

    doc = render_comparison(c, runs)
    assert "Some groups have one run" in doc and 'alt="ratios"' in doc


def test_compare_labels_baseline_and_report(tmp_path):
    a = _runs(tmp_path, "x", [10, 10], 1)
    b = _runs(tmp_path, "y", [5, 5], 1)
    out = tmp_path / "cmp.html"
    res = CliRunner().invoke(main, ["compare", *map(str, a + b), "--label", "fifo", "--label", "fifo",
                                    "--label", "ml", "--label", "ml", "--baseline", "ml",
                                    "--report", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("baseline: ml")
    doc = out.read_text()
    assert "fifo (n=2)" in doc and "x2.000" in doc and doc.count("data:image/png") >= 2
    res = CliRunner().invoke(main, ["compare", str(a[0]), str(b[0]), "--label", "one"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "1 labels for 2 traces" in res.output
    res = CliRunner().invoke(main, ["compare", str(a[0]), str(b[0]), "--baseline", "zzz"])
    assert res.exit_code == 1 and "baseline 'zzz' is not one of the labels" in res.output
    with pytest.raises(AiosError, match="at least two traces"):
        compare_traces([a[0]])


def test_default_label_strips_the_run_number():
    assert default_label("/r/build-eevdf-12") == "build-eevdf"
    assert default_label("/r/mllb-model") == "mllb-model"


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


class _Db:
    """exact_quantiles needs only rows(); a bare duckdb connection serves."""

    def __init__(self, values: np.ndarray) -> None:
        import duckdb

        self.con = duckdb.connect()
        self.con.register("v", __import__("pandas").DataFrame({"w": values}))

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_quantiles_match_a_full_sort(seed):
    """Nearest rank on heavy-tailed data with ties, against numpy's sort."""
    from aios_lab.analysis.db import exact_quantiles

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50_000))
    v = np.concatenate([rng.lognormal(9, 2.5, n).astype(np.int64), rng.integers(0, 3, n // 10),
                        np.full(n // 7, 123_456)])
    qs = (0.0, 0.5, 0.9, 0.99, 0.999, 1.0)
    s = np.sort(v)
    want = [int(s[max(1, math.ceil(q * len(s))) - 1]) for q in qs]
    assert exact_quantiles(_Db(v), "v", "w", qs) == want
    assert exact_quantiles(_Db(np.array([7] * 5)), "v", "w", (0.5,)) == [7]
    assert exact_quantiles(_Db(np.array([], dtype=np.int64)), "v", "w", (0.5,)) == [None]


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
