"""Verdicts: significance, runs needed, targets, and 'not judged'."""
import pytest

from aios_lab.bench.verdict import compare, format_verdicts, judge, mann_whitney_p, runs_needed

JUDGED = {"ratio": 2.1, "threshold": 1.5}
BLIND = {"ratio": 1.1, "threshold": 1.5}


def _runs(sched, makespans, migrations):
    return [{"scheduler": sched, "makespan_s": m, "migrate": g} for m, g in zip(makespans, migrations)]


def test_mann_whitney_needs_two_runs_a_side_and_separates_clear_cases():
    assert mann_whitney_p([1.0], [2.0, 3.0]) is None
    assert mann_whitney_p([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert mann_whitney_p([1, 2, 3, 4, 5], [10, 11, 12, 13, 14]) < 0.05
    assert mann_whitney_p([1, 10, 3, 12, 5], [2, 11, 4, 13, 6]) > 0.3


def test_runs_needed_grows_with_the_spread():
    tight = runs_needed([100, 101, 99, 100, 100])
    loose = runs_needed([100, 120, 85, 110, 90])
    assert tight == 2 and loose > 20
    assert runs_needed([100]) is None


def test_a_model_that_meets_every_target_is_judged_met():
    runs = (_runs("eevdf", [100, 102, 98, 101, 99], [1000] * 5)
            + _runs("mllb-model", [90, 91, 89, 90, 92], [100] * 5)
            + _runs("mllb-collect", [99, 100, 101, 98, 102], [900] * 5)
            + _runs("mllb-stay", [120, 118, 121, 119, 122], [1] * 5))
    v = judge(runs, ["eevdf", "mllb-model", "mllb-collect", "mllb-stay"], "eevdf", JUDGED)
    assert v["judged"]
    status = {t["target"]: t["status"] for t in v["targets"]}
    assert set(status.values()) == {"met"}, status
    assert any("never-migrate" in k for k in status)


def test_the_same_figures_on_a_blind_platform_are_not_judged():
    runs = _runs("eevdf", [100, 102, 98], [1000] * 3) + _runs("mllb-model", [90, 91, 89], [100] * 3)
    v = judge(runs, ["eevdf", "mllb-model"], "eevdf", BLIND)
    assert not v["judged"] and {t["status"] for t in v["targets"]} == {"not judged"}
    text = "\n".join(format_verdicts(v, BLIND))
    assert "CANNOT JUDGE" in text and "[NOT JUDGED]" in text
    assert judge(runs, ["eevdf", "mllb-model"], "eevdf", None)["judged"] is False


def test_a_never_migrating_model_that_is_not_slower_misses_its_target():
    runs = _runs("eevdf", [100, 130, 90, 115, 95], [1000] * 5) + _runs("mllb-stay", [101, 125, 92, 110, 99], [1] * 5)
    v = judge(runs, ["eevdf", "mllb-stay"], "eevdf", JUDGED)
    (t,) = v["targets"]
    assert t["status"] == "missed" and t["verdict"] == "no significant difference"
    assert "TOO FEW" in "\n".join(format_verdicts(v, JUDGED))


def test_compare_is_a_ratio_of_medians():
    runs = _runs("a", [1, 2, 3], [0] * 3) + _runs("b", [2, 4, 6], [0] * 3)
    c = compare(runs, "a", "b", "makespan_s")
    assert c.ratio == pytest.approx(0.5)
