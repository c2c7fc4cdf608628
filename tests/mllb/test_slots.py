"""mllb's model slots on the host kernel: the real maps, created from the
policy's object without its programs (the host has no sched_ext).

Checks the double-buffered push: the live slot is never written, a bad
model leaves both slots and the control word exactly as they were, and the
layouts come from the object's BTF and agree with the C header.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from aios_lab import build
from aios_lab.sched import policy
from aios_lab.bpf import BpfObject
from aios_lab.errors import ModelError
from aios_lab.mllb.model import QuantizedTree, constant_model
from aios_lab.mllb.session import check_model_fits
from aios_lab.mllb.slots import ModelSlots
from aios_lab.telemetry.schema import LB_FEATURES

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create BPF maps"),
    pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="kernel has no BTF"),
]


@pytest.fixture
def slots():
    pol = policy.get("mllb")
    path = build.object_path(pol.source_path)
    assert path.exists(), "run `aios-lab build`"
    obj = BpfObject.open(path)
    try:
        obj.load_maps_only()
        yield ModelSlots(obj, pol.model)
    finally:
        obj.close()


def _raw(slots: ModelSlots) -> tuple[bytes, bytes, bytes]:
    return (slots.slots.lookup_u32_key(0), slots.slots.lookup_u32_key(1), slots.ctl.lookup_u32_key(0))


def test_limits_and_feature_names_come_from_btf(slots):
    assert slots.limits.feature_names == LB_FEATURES
    assert slots.limits.nr_features == 20 and slots.limits.max_nodes == 511 and slots.limits.max_depth == 16


def test_push_writes_the_inactive_slot_then_flips(slots):
    assert slots.read_ctl() == {"active": 0, "mode": 0, "version": 0, "swaps": 0}
    assert slots.active_model() is None
    live_before = slots.slots.lookup_u32_key(0)
    a = constant_model(1, model_version=7)
    assert slots.push(a.tree, a.version, a.checksum64()) == 1
    assert slots.slots.lookup_u32_key(0) == live_before, "the slot that was live must not be written"
    assert slots.read_ctl() == {"active": 1, "mode": 0, "version": 7, "swaps": 1}
    assert slots.active_model()["checksum"] == a.checksum64()
    b = constant_model(0, model_version=8)
    assert slots.push(b.tree, b.version, b.checksum64()) == 0
    ctl = slots.read_ctl()
    assert ctl["active"] == 0 and ctl["version"] == 8 and ctl["swaps"] == 2
    m = slots.read_slot(0)
    assert m.nr_nodes == 1 and m.nodes[0].feature == -1 and m.nodes[0].leaf == 0
    assert slots.read_slot(1).nodes[0].leaf == 1, "the previous model stays intact in the other slot"


def test_mode_switch_keeps_the_model(slots):
    a = constant_model(1, model_version=3)
    slots.push(a.tree, a.version, a.checksum64())
    slots.set_mode("model")
    assert slots.read_ctl() == {"active": 1, "mode": 1, "version": 3, "swaps": 1}
    with pytest.raises(ModelError, match="unknown mode"):
        slots.set_mode("sometimes")


def _chain(depth: int) -> QuantizedTree:
    """A chain `depth` tests deep: node 2d tests feature 0 and goes left to
    the next test, right to leaf 2d+1 (migrate); the last node says stay."""
    nodes = []
    for d in range(depth):
        nodes += [(0, 5, 2 * d + 2, 2 * d + 1, 0), (-1, 0, 0, 0, 1)]
    nodes.append((-1, 0, 0, 0, 0))
    a = np.array(nodes, dtype=np.int64)
    return QuantizedTree(feature=a[:, 0].astype(np.int32), threshold=a[:, 1], left=a[:, 2].astype(np.uint32),
                         right=a[:, 3].astype(np.uint32), leaf=a[:, 4].astype(np.uint32), max_depth=depth)


def test_a_deep_chain_is_accepted_up_to_the_bound(slots):
    t = _chain(16)
    t.validate()
    slots.push(t, 1, 1)
    assert slots.active_model()["max_depth"] == 16


def test_bad_models_leave_everything_unchanged(slots):
    good = constant_model(1, model_version=5)
    slots.push(good.tree, good.version, good.checksum64())
    before = _raw(slots)
    too_deep = _chain(17)
    with pytest.raises(ModelError):
        slots.push(too_deep, 2, 2)
    nan = constant_model(0)
    nan.tree.float_threshold = np.array([np.nan])
    with pytest.raises(ModelError, match="NaN"):
        check_model_fits(nan, slots, "nan.model")
    wrong = constant_model(0)
    wrong.features = list(reversed(wrong.features))
    with pytest.raises(ModelError, match="features"):
        check_model_fits(wrong, slots, "wrong.model")
    assert _raw(slots) == before
