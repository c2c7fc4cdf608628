"""The frequency learners as estimators (dvfs.learners): registered by name,
scikit-learn's parameter conventions, fit returns the learner.

No learner is trained to convergence here: tests/dvfs/test_env.py checks what
they learn; these check the contract every learner keeps.
"""
from __future__ import annotations

import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_get_params_invariance, check_no_attributes_set_in_init

from aios_lab.dvfs import demand, learners
from aios_lab.dvfs.platform import PlatformError, load_cluster
from aios_lab.dvfs.rl import QLearner
from aios_lab.dvfs.sweep import SweepLearner
from aios_lab.errors import ModelError

LEARNERS = [QLearner, SweepLearner]


def test_the_cli_method_names_are_the_registered_learners():
    assert learners.names() == ["rl", "sweep"]
    assert learners.get("rl") is QLearner and learners.get("sweep") is SweepLearner


def test_the_cli_and_the_sweep_cell_offer_exactly_the_registered_learners():
    # both list the names without importing the learners (scikit-learn, gymnasium)
    from aios_lab.cli import main
    from aios_lab.sweep.cells import get

    method = next(p for p in main.commands["train"].commands["freq"].params if p.name == "method")
    assert sorted(method.type.choices) == learners.names()
    assert sorted(get("dvfs-train").params["method"].choices) == learners.names()


def test_an_unknown_learner_is_a_model_error_naming_the_known_ones():
    with pytest.raises(ModelError, match="unknown training method 'mpc'") as e:
        learners.get("mpc")
    assert e.value.hint == "use rl, sweep"


def test_make_passes_each_learner_only_the_options_it_takes():
    opts = dict(cluster="gs101:mid", seed=4, episodes=7, mem_share=0.2, refine_passes=2)
    rl = learners.make("rl", **opts)
    sw = learners.make("sweep", **opts)
    assert (rl.seed, rl.episodes, rl.mem_share, rl.cluster) == (4, 7, 0.2, "gs101:mid")
    assert (sw.refine_passes, sw.mem_share, sw.cluster) == (2, 0.2, "gs101:mid")
    assert "episodes" not in sw.get_params() and "refine_passes" not in rl.get_params()


@pytest.mark.parametrize("cls", LEARNERS, ids=lambda c: c.name)
def test_parameters_follow_scikit_learns_conventions(cls):
    # scikit-learn's own checks: __init__ sets exactly its parameters, nothing
    # ending in "_"; get_params(deep=False) is a subset of get_params()
    check_no_attributes_set_in_init(cls.__name__, cls())
    check_get_params_invariance(cls.__name__, cls())
    est = cls(mem_share=0.1)
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert est.set_params(mem_share=0.2) is est and est.mem_share == 0.2
    assert not [k for k in vars(est) if k.endswith("_")], "fitted state before fit"


@pytest.mark.parametrize("cls", LEARNERS, ids=lambda c: c.name)
def test_init_does_no_work_and_fit_checks(cls):
    est = cls(cluster="gs101:huge")          # not looked at until fit
    with pytest.raises(PlatformError, match="huge"):
        est.fit([demand.periodic(duration_s=0.2)])
    with pytest.raises(ModelError, match="no training demand"):
        cls().fit([])


def test_fit_returns_the_learner_with_its_table():
    big = load_cluster("gs101:big")
    train = [demand.periodic(duration_s=0.3)]
    sw = SweepLearner(big, lambdas=(1.0,), bisect_steps=0)
    assert sw.fit(train) is sw and sw.table_.method == "sweep" and sw.curve_ == []
    rl = QLearner("gs101:big", episodes=1, window_s=0.3, select_every=0)
    assert rl.fit(train) is rl and rl.table_.method == "rl" and len(rl.curve_) == 1
    # a fitted learner clones to an unfitted one with the same parameters
    assert not hasattr(clone(rl), "table_")


def test_a_sweep_given_an_earlier_fits_samples_does_not_sample_again_and_chooses_the_same():
    big = load_cluster("gs101:big")
    train = [demand.periodic(duration_s=0.3)]
    first = SweepLearner(big, lambdas=(1.0, 16.0), bisect_steps=0).fit(train)
    again = SweepLearner(big, lambdas=(1.0, 16.0), bisect_steps=0).fit(train, samples=first.samples_)
    assert again.samples_ is first.samples_
    assert (again.table_.perf == first.table_.perf).all()
