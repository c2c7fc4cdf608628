"""The performance stage's statistics on given numbers (the stage itself
runs in the VM: tests/control/verify/test_performance_vm.py)."""
import math
import random

import pytest
from click.testing import CliRunner

from aios_lab import exit_codes
from aios_lab.bench.verdict import _u_counts, ratio_interval
from aios_lab.cli import main
from aios_lab.control.entry import Sample
from aios_lab.control.verify import Case, criteria, performance, verify_many
from aios_lab.control.verify.report import Check, StageReport, VerifyReport
from aios_lab.errors import InputError


def test_u_distribution_counts_every_ordering():
    for n, m in [(1, 1), (5, 5), (3, 7), (6, 4)]:
        c = _u_counts(n, m)
        assert len(c) == n * m + 1 and sum(c) == math.comb(n + m, n)
        assert c == c[::-1]  # U is symmetric about nm/2
    assert _u_counts(5, 5)[:4] == [1, 1, 2, 3]


def test_the_ratio_interval_inverts_the_exact_mann_whitney_test():
    from scipy.stats import mannwhitneyu

    rng = random.Random(7)
    for _ in range(200):
        n, m = rng.randint(3, 8), rng.randint(3, 8)
        shift = rng.choice([1.0, 1.1, 1.5, 2.0])
        a = [shift * rng.lognormvariate(0, 0.2) for _ in range(n)]
        b = [rng.lognormvariate(0, 0.2) for _ in range(m)]
        alpha = rng.choice([0.05, 0.025, 0.0125])
        lo, hi = ratio_interval(a, b, alpha)
        p = mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue
        # 1 is outside the interval exactly when the exact test rejects at alpha
        assert (not lo <= 1 <= hi) == (p <= alpha), (a, b, alpha, lo, hi, p)


def test_too_few_runs_give_no_interval_rather_than_a_false_one():
    assert ratio_interval([2.0], [1.0, 1.1]) is None
    # 3 vs 3: the smallest two-sided p is 0.1, so no interval at 0.05
    assert ratio_interval([3.0, 3.1, 3.2], [1.0, 1.1, 1.2], 0.05) == (0.0, math.inf)


def _runs(arms: dict[str, list[tuple[float, float]]]) -> list[dict]:
    out = []
    for i in range(max(len(v) for v in arms.values())):
        for arm, vals in arms.items():
            ms, wait = vals[i]
            out.append({"scheduler": arm, "makespan_s": ms, "runq_wait_s": wait, "migrate": 10 + i,
                        "switch": 100, "runq_wait_per_slice_us": 5.0})
    return out


EEVDF = [(2.0, 4.0), (2.1, 4.2), (1.9, 3.9), (2.05, 4.1), (2.2, 4.3)]


def test_twice_as_slow_is_worse_and_the_reason_says_where():
    runs = _runs({"eevdf": EEVDF, "candidate": [(4.0, 12.0), (4.3, 12.5), (3.9, 11.8), (4.1, 12.1), (4.4, 13.0)]})
    comparisons, verdict = performance.judge(runs, ["eevdf", "candidate"])
    assert verdict == "worse"
    assert [c["verdict"] for c in comparisons] == ["worse", "worse"]
    assert all(c["level"] == pytest.approx(1 - criteria.PERF_ALPHA / 2) for c in comparisons)
    assert "worse than eevdf on makespan_s: x2.00" in performance._reason(comparisons)


def test_overlapping_runs_are_not_called_worse():
    # 3 % slower in the median, with the usual spread: inconclusive at 5 runs, never "worse"
    cand = [(2.06, 4.1), (2.0, 4.0), (2.2, 4.4), (2.1, 4.2), (2.25, 4.3)]
    comparisons, verdict = performance.judge(_runs({"eevdf": EEVDF, "candidate": cand}), ["eevdf", "candidate"])
    assert verdict == "no-worse"
    assert {c["verdict"] for c in comparisons} <= {"inconclusive", "no-worse"}


def test_better_needs_the_primary_metric_better_against_every_reference():
    fast = [(1.0, 2.0), (1.05, 2.1), (0.95, 1.9), (1.02, 2.0), (1.1, 2.2)]
    deployed = [(1.0, 2.0), (1.1, 2.1), (0.9, 1.9), (1.0, 2.0), (1.05, 2.2)]
    _, verdict = performance.judge(_runs({"eevdf": EEVDF, "candidate": fast}), ["eevdf", "candidate"])
    assert verdict == "better"
    comparisons, verdict = performance.judge(_runs({"eevdf": EEVDF, "candidate": fast, "deployed": deployed}),
                                             ["eevdf", "candidate", "deployed"])
    assert verdict == "no-worse" and len(comparisons) == 2 * len(criteria.PERF_MARGINS)
    # Bonferroni over the four pairs
    assert all(c["level"] == pytest.approx(1 - criteria.PERF_ALPHA / 4) for c in comparisons)


def test_every_run_becomes_a_registry_sample_of_the_report():
    runs = _runs({"eevdf": EEVDF, "candidate": EEVDF})
    check = Check("verdict", True, "c", {"samples": performance.samples(runs)})
    rep = VerifyReport("fifo", {}, {}, {}, [StageReport("performance", True, 41.5, [check]),
                                             StageReport("liveness", False, 0.0, [], skipped="x")])
    samples = rep.samples()
    assert Sample("performance", "seconds", 0, 41.5, "s", "candidate") in samples
    assert Sample("performance", "makespan_s", 4, 2.2, "s", "eevdf") in samples
    assert Sample("performance", "migrate", 2, 12.0, "count", "candidate") in samples
    keys = [(s.stage, s.arm, s.metric, s.run_index) for s in samples]
    assert len(keys) == len(set(keys)) == 1 + 2 * 5 * 5


def test_bad_performance_arguments_fail_before_any_boot():
    with pytest.raises(InputError, match="too few"):
        verify_many([Case("fifo", stages=("performance",), runs=3)])
    res = CliRunner().invoke(main, ["verify", "fifo", "--stages", "performance", "--runs", "2"])
    assert res.exit_code == exit_codes.USAGE
    res = CliRunner().invoke(main, ["verify", "fifo", "--stages", "performance", "--workload", "nope"])
    assert res.exit_code == exit_codes.BAD_INPUT, res.output
    assert "no workload named 'nope'" in res.output


def test_the_recorded_html_shows_each_stage_and_the_comparison():
    from aios_lab.control.verification import render_html

    runs = _runs({"eevdf": EEVDF, "candidate": EEVDF})
    comparisons, verdict = performance.judge(runs, ["eevdf", "candidate"])
    check = Check("verdict", True, "c", {"samples": performance.samples(runs), "comparisons": comparisons,
                                         "verdict": verdict, "workload": {"name": "batch-small"}})
    rep = VerifyReport("fifo", {}, {}, {}, [StageReport("performance", True, 41.5, [check])])
    doc = render_html(rep.to_dict())
    assert doc.startswith("<!DOCTYPE html>") and "aios-lab verify fifo: passed" in doc
    assert "Performance on batch-small" in doc and "makespan_s" in doc and "eevdf" in doc
    assert doc.count("<tr>") >= 1 + len(comparisons)
