"""Scheduler labels of a comparison, parsed into their registered types (the
policies are the repository's own manifests; attaching is tested in the VM:
tests/guest/test_upstream_guest.py and the demo)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from aios_lab.bench import spec
from aios_lab.bench.spec import (Baseline, CollectMode, LearningMode, ModelMode, PlainPolicy, SchedSpec,
                                 StayControl)
from aios_lab.errors import AiosError, PolicyError
from aios_lab.mllb.model import STAY


@pytest.mark.parametrize("label, want", [
    ("eevdf", Baseline("eevdf")),
    ("fifo", PlainPolicy("fifo", "fifo")),
    # a frequency-table policy has no learning modes here: it runs as a plain one
    ("freq", PlainPolicy("freq", "freq")),
    ("mllb", CollectMode("mllb", "mllb")),
    ("mllb-collect", CollectMode("mllb-collect", "mllb")),
    ("mllb-model", ModelMode("mllb-model", "mllb")),
    ("mllb-stay", StayControl("mllb-stay", "mllb")),
])
def test_each_label_parses_to_its_registered_type(label, want):
    got = SchedSpec.parse(label)
    assert got == want and type(got) is type(want)
    assert got.needs_sched_ext is (label != "eevdf")
    assert got.needs_model is (label == "mllb-model")


@pytest.mark.parametrize("label", ["fifo-collect", "freq-model", "fifo-stay"])
def test_modes_belong_to_decision_tree_policies_only(label):
    name, mode = label.rsplit("-", 1)
    with pytest.raises(AiosError, match=f"policy {name} has no {mode} mode"):
        SchedSpec.parse(label)


@pytest.mark.parametrize("label", ["nope", "nope-model", "mllb-model-model"])
def test_an_unknown_policy_is_refused(label):
    with pytest.raises(PolicyError, match="no policy named"):
        SchedSpec.parse(label)


def test_model_mode_without_a_model_is_refused_before_anything_attaches():
    with pytest.raises(AiosError, match="mllb-model needs a model") as err:
        SchedSpec.parse("mllb-model").start(None)
    assert "--model" in err.value.one_line()


def test_the_stay_control_runs_model_mode_with_a_model_that_never_migrates():
    mode, model, source = StayControl("mllb-stay", "mllb").run_args(None)
    assert mode == "model" and source == "never-migrate control"
    assert model is not None and set(model.tree.predict(np.zeros((4, model.tree.nr_features)))) == {STAY}
    # collect mode keeps a comparison's model loaded but lets the heuristic decide
    assert CollectMode("mllb", "mllb").run_args(None) == ("collect", None, "")
    assert CollectMode("mllb", "mllb").run_args(model) == ("collect", model, "experiment")


def test_a_new_mode_is_one_registered_class(monkeypatch):
    monkeypatch.setattr(spec.LEARNING_MODES, "_by_name", dict(spec.LEARNING_MODES._by_name))
    assert spec.LEARNING_MODES.names() == ["collect", "model", "stay"]

    @spec.learning_mode
    class Probe(LearningMode):
        name: ClassVar[str] = "probe"

    assert SchedSpec.parse("mllb-probe") == Probe("mllb-probe", "mllb")
