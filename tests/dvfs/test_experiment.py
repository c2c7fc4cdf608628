"""The train/held-out split of the recorded DVFS traces."""
import pytest

from aios_lab.dvfs import experiment as ex
from aios_lab.errors import ModelError


def test_the_default_split_holds_out_run_3_and_trains_on_every_other_run():
    train, test = ex.split()
    assert [p.name for p in test] == [f"{k}-3" for k in ex.KINDS]
    assert {p.name for p in train} == {f"{k}-{r}" for k in ex.KINDS for r in ex.RUNS if r != 3}
    assert all(p.is_dir() for p in train + test), "every recorded run ships in workloads/dvfs/traces"


@pytest.mark.parametrize("run", ex.RUNS)
def test_each_run_can_be_held_out_and_never_trains_then(run):
    train, test = ex.split(run)
    assert {p.name.rsplit("-", 1)[1] for p in test} == {str(run)}
    assert not set(train) & set(test)
    assert len(train) == len(ex.KINDS) * (len(ex.RUNS) - 1)


def test_an_unrecorded_run_is_refused():
    with pytest.raises(ModelError, match="no recorded run 9"):
        ex.split(9)


def test_the_target_verdict_is_met_only_within_both_bounds():
    base = {"energy_j": 100.0, "misses": 200}
    assert ex.target_verdict("rl", {"energy_j": 80.0, "misses": 210}, base).endswith("-> MET")
    assert ex.target_verdict("rl", {"energy_j": 80.1, "misses": 100}, base).endswith("-> NOT MET")
    assert ex.target_verdict("rl", {"energy_j": 50.0, "misses": 211}, base).endswith("-> NOT MET")
    line = ex.target_verdict("table", {"energy_j": 90.0, "misses": 0}, base, where=", pooled")
    assert line.startswith("target (table: ") and "), pooled: energy x0.900, misses x0.000 -> NOT MET" in line
