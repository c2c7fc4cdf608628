"""analysis.compare (`aios-lab compare`): groups of runs with known numbers,
their intervals, ratios and tests, checked against scipy.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from aios_lab.analysis.compare import compare_traces, default_label, format_comparison
from aios_lab.cli import main
from aios_lab.errors import AiosError

from tests.helpers.traces import metrics_trace


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
