"""The placement control: its verdict logic, and one real (tiny) run."""
import pytest

from aios_lab.bench.control import THRESHOLD, ControlResult, judges, not_judged_banner, run_control


def test_the_threshold_separates_judging_from_not_judging():
    assert THRESHOLD == 1.5
    assert judges(2.2) and judges(1.5)
    assert not judges(1.49) and not judges(1.2) and not judges(None) and not judges(float("nan"))


def test_ratio_is_median_pinned_over_median_free():
    c = ControlResult(cpus=2, loops=1000, pinned_s=[14.1, 13.8, 30.0], free_s=[6.5, 6.4, 1.0])
    assert c.ratio == pytest.approx(14.1 / 6.4)
    d = c.to_dict()
    assert d["judged"] and d["ideal_ratio"] == 2 and d["ratio"] == pytest.approx(2.203, abs=1e-3)
    assert "CANNOT JUDGE" not in c.line() and "x2.20" in c.line()


def test_single_threaded_tcg_figures_are_not_judged_and_say_so_loudly():
    c = ControlResult(cpus=2, loops=1000, pinned_s=[12.2, 11.3], free_s=[10.1, 9.6])
    assert not c.judged
    assert "CANNOT JUDGE LOAD BALANCING" in c.line() and "NOT JUDGED" in c.line()
    assert "not measured" in not_judged_banner(None)


def test_a_real_control_run_times_both_arms():
    """Tiny work: only that both arms ran and were timed, not their ratio
    (this host may be busy; the ratio is the benchmark's business)."""
    c = run_control(loops=2000, repeat=1)
    assert c.cpus >= 1 and len(c.pinned_s) == len(c.free_s) == 1
    assert all(t > 0 for t in c.pinned_s + c.free_s)
