"""The train/held-out split of the recorded DVFS traces."""
import pytest

from aios_lab.dvfs import experiment as ex
from aios_lab.errors import ModelError


def test_default_split_holds_out_run_3_and_trains_on_every_other_run():
    train, test = ex.default_split()
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
