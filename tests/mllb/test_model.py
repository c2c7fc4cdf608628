"""mllb decision tree: quantisation, BPF walk semantics, validation, model file."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.tree import DecisionTreeClassifier

from aios_lab.errors import ModelError
from aios_lab.mllb import model as m
from aios_lab.mllb.estimator import TreeModel
from aios_lab.mllb.limits import TreeLimits, limits
from aios_lab.mllb.model import (
    FEATURES,
    ModelFile,
    QuantizedTree,
    constant_model,
    int_threshold,
    load_model,
    save_model,
)
from aios_lab.telemetry.schema import LB_DECISIONS, LB_FEATURES

from tests.helpers.mllb import small_tree

# The built policy's own limits (its BTF): what every model here must fit.
MLLB_MAX_DEPTH = limits().max_depth
MLLB_NR_FEATURES = limits().nr_features


def _data(seed: int, n: int = 4000, lo: int = 0, hi: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(lo, hi, size=(n, MLLB_NR_FEATURES), dtype=np.int64)
    y = (((X[:, 0] > X[:, 1]) & (X[:, 7] % 2 == 1)) | (X[:, 4] * 3 > hi)).astype(np.int64)
    y ^= (rng.random(n) < 0.05)  # some noise, so the tree grows deep
    return X, y


def _fitted(seed: int = 0, **kw) -> tuple[TreeModel, np.ndarray]:
    X, y = _data(seed, **kw)
    return TreeModel(max_depth=10, min_samples_leaf=5).fit(X, y), X


def _rewrite(path, mutate) -> None:
    """Apply ``mutate`` to the saved document and fix up its checksum, so that
    only the content check under test can reject it."""
    doc = json.loads(path.read_text())
    doc.pop("sha256")
    mutate(doc)
    doc["sha256"] = hashlib.sha256(m._canonical(doc)).hexdigest()
    path.write_text(json.dumps(doc, allow_nan=True))


def _one_line_error(exc: pytest.ExceptionInfo) -> str:
    msg = exc.value.one_line()
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- features

def test_lb_features_match_the_policy_btf():
    assert limits().feature_names == LB_FEATURES == FEATURES
    assert len(FEATURES) == 20
    cols = [f.name for f in LB_DECISIONS if f.name.startswith("f_")]
    assert cols == [f"f_{n}" for n in FEATURES]


def test_limits_come_from_the_objects_btf():
    """intf.h's enum mllb_limit, as the compiled object carries it."""
    lim = limits()
    assert isinstance(lim, TreeLimits)
    assert (lim.max_nodes, lim.max_depth, lim.feature_max, lim.magic, lim.max_cpus) == \
        (511, 16, 1_000_000_000, 0x424C4C4D, 64)
    assert limits() is lim   # parsed once


# --------------------------------------------------------------------------- quantisation

@pytest.mark.parametrize("seed", range(5))
def test_quantized_agrees_with_float_tree_on_random_integers(seed):
    est, X = _fitted(seed, lo=-20, hi=60)
    q = est.quantize()
    q.validate()
    assert q.nr_nodes > 15
    rng = np.random.default_rng(100 + seed)
    Xt = rng.integers(-100, 200, size=(20000, MLLB_NR_FEATURES))
    assert (q.predict(Xt) == est.predict(Xt)).mean() == 1.0
    assert (q.predict(X) == est.predict(X)).mean() == 1.0


def test_quantized_agrees_at_half_boundaries():
    # Integer training data puts thresholds at midpoints: k + 0.5 between
    # neighbours, k itself between k - 1 and k + 1 when no row at that node
    # had k. Probe each inner node on both sides of its split.
    est, X = _fitted(7)
    t = est.estimator_.tree_
    q = est.quantize()
    inner = np.flatnonzero(t.children_left >= 0)
    frac = t.threshold[inner] % 1
    assert np.all((frac == 0.5) | (frac == 0)) and (frac == 0.5).any()
    assert np.all(q.threshold[inner] == np.floor(t.threshold[inner]))
    probes = []
    for i in inner:
        k = np.floor(t.threshold[i])
        for v in (k - 1, k, k + 1):
            row = X[len(probes) % len(X)].copy()
            row[t.feature[i]] = int(v)
            probes.append(row)
    P = np.array(probes)
    assert (q.predict(P) == est.predict(P)).all()


def test_quantized_agrees_beyond_float32_precision():
    # Above 2**24 sklearn compares float32(x); floor(t) alone would disagree.
    rng = np.random.default_rng(3)
    X = rng.integers(0, 10 ** 9, size=(3000, MLLB_NR_FEATURES))
    y = ((X[:, 3] > 5 * 10 ** 8) ^ (X[:, 5] % 3 == 0)).astype(int)
    est = TreeModel(max_depth=12, min_samples_leaf=1).fit(X, y)
    q = est.quantize()
    t = est.estimator_.tree_
    probes = []
    for i in np.flatnonzero(t.children_left >= 0):
        for off in range(-40, 41):
            row = X[0].copy()
            row[t.feature[i]] = int(np.floor(t.threshold[i])) + off
            probes.append(row)
    P = np.array(probes)
    assert (q.predict(P) == est.predict(P)).all()


def test_int_threshold():
    assert int_threshold(2.5) == 2
    assert int_threshold(-2.5) == -3
    assert int_threshold(7.0) == 7
    big = 2 ** 30 + 0.5  # float32 step here is 128
    k = int_threshold(big)
    assert float(np.float32(k)) <= big < float(np.float32(k + 1))
    with pytest.raises(ModelError):
        int_threshold(float("nan"))


def test_from_sklearn_single_class_and_plain_estimator():
    X = np.zeros((10, MLLB_NR_FEATURES), dtype=np.int64)
    q = QuantizedTree.from_sklearn(DecisionTreeClassifier().fit(X, np.ones(10, dtype=int)))
    q.validate()
    assert q.nr_nodes == 1 and q.predict(X).tolist() == [1] * 10
    with pytest.raises(ModelError, match="classes"):
        QuantizedTree.from_sklearn(DecisionTreeClassifier().fit(X, np.full(10, 3)))


def test_tree_model_is_sklearn_compatible():
    est, X = _fitted(1)
    c = clone(est)
    assert c.get_params()["max_depth"] == 10 and not hasattr(c, "estimator_")
    assert est.predict_proba(X[:5]).shape == (5, 2)
    assert 0.5 < est.score(X, _data(1)[1]) <= 1.0
    assert est.feature_importances_.shape == (MLLB_NR_FEATURES,)
    with pytest.raises(ValueError):
        TreeModel(max_depth=17).fit(X, _data(1)[1])


# --------------------------------------------------------------------------- BPF walk

def test_predict_follows_bpf_semantics():
    q = small_tree()
    q.validate()
    X = np.zeros((5, MLLB_NR_FEATURES), dtype=np.int64)
    X[:, 0] = [5, 6, 6, 6, -7]
    X[:, 4] = [0, -3, -2, -1000, 0]
    # x <= threshold goes left, at the boundary too.
    assert q.predict(X).tolist() == [0, 1, 0, 1, 0]


def test_walk_that_does_not_reach_a_leaf_answers_stay():
    # A chain deeper than MLLB_MAX_DEPTH: every node goes left when x0 <= 0.
    n = MLLB_MAX_DEPTH + 3
    feature = [0] * (n - 1) + [-1]
    left = list(range(1, n)) + [0]
    q = QuantizedTree(feature=feature, threshold=[0] * n, left=left, right=left,
                      leaf=[0] * (n - 1) + [1], max_depth=n - 1)
    assert q.predict(np.zeros((1, MLLB_NR_FEATURES), dtype=np.int64)).tolist() == [0]
    with pytest.raises(ModelError, match="deep"):
        q.validate()


def test_predict_rejects_wrong_shape_and_non_integers():
    q = small_tree()
    with pytest.raises(ModelError, match="shape"):
        q.predict(np.zeros((2, 15), dtype=np.int64))
    with pytest.raises(ModelError, match="integer"):
        q.predict(np.full((1, MLLB_NR_FEATURES), 0.5))


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kw, match", [
    (dict(nr_features=15), "15 features"),
    (dict(left=[1, 0, 1, 0, 0]), "left child 1 is not in 3..4"),
    (dict(right=[2, 0, 9, 0, 0]), "right child 9"),
    (dict(left=[0, 0, 3, 0, 0]), "left child 0"),
    (dict(feature=[20, -1, 4, -1, -1]), "feature 20"),
    (dict(threshold=[10 ** 9 + 1, 0, -3, 0, 0]), "threshold"),
    (dict(leaf=[0, 0, 0, 2, 0]), "leaf 3 answers 2"),
    (dict(float_threshold=[5.5, 0, float("nan"), 0, 0]), "NaN"),
    (dict(proba=[0.5, 0, float("inf"), 1, 0]), "NaN or infinite"),
    (dict(max_depth=3), "records max_depth 3"),
    (dict(leaf=[0, 0, 0, 1]), "shape"),
])
def test_validate_rejects(kw, match):
    with pytest.raises(ModelError, match=match) as exc:
        small_tree(**kw).validate()
    _one_line_error(exc)


def test_validate_rejects_too_many_nodes_and_too_deep():
    n = 513  # a full tree of depth 8 has 511 nodes; add one more level's worth
    feature = [0] * 256 + [-1] * 257
    left = [2 * i + 1 for i in range(256)] + [0] * 257
    right = [2 * i + 2 for i in range(256)] + [0] * 257
    q = QuantizedTree(feature=feature, threshold=[0] * n, left=left, right=right,
                      leaf=[0] * n, max_depth=9)
    with pytest.raises(ModelError, match="513 nodes"):
        q.validate()
    q.validate(max_nodes=1000)
    with pytest.raises(ModelError, match="9 deep"):
        q.validate(max_nodes=1000, max_depth=8)


# --------------------------------------------------------------------------- model file

def test_save_load_roundtrip(tmp_path):
    est, X = _fitted(2)
    mf = ModelFile(tree=est.quantize(), training={"accuracy": np.float64(0.9)},
                   model_version=42)
    p = save_model(tmp_path / "lb.json", mf)
    doc = json.loads(p.read_text())
    assert doc["format"] == "aios-lab-model" and doc["format_version"] == 1
    assert doc["policy"] == "mllb" and doc["kind"] == "tree" and doc["features"] == FEATURES
    back = load_model(p)
    assert back.version == 42 and back.sha256 == doc["sha256"] == mf.sha256
    assert back.checksum64() == int.from_bytes(bytes.fromhex(doc["sha256"])[:8], "little")
    assert back.training == {"accuracy": 0.9}
    assert (back.predict(X) == est.predict(X)).all()
    assert sorted(os.listdir(tmp_path)) == ["lb.json"]


@pytest.mark.parametrize("answer", [0, 1])
def test_constant_models_predict_constants(tmp_path, answer):
    mf = load_model(save_model(tmp_path / "c.json", constant_model(answer, model_version=7)))
    X = np.random.default_rng(0).integers(-10 ** 9, 10 ** 9, size=(500, MLLB_NR_FEATURES))
    assert mf.predict(X).tolist() == [answer] * 500
    assert mf.tree.nr_nodes == 1 and mf.tree.max_depth == 0 and mf.version == 7


def test_constant_model_rejects_other_answers():
    with pytest.raises(ModelError):
        constant_model(2)


def test_checksum_mismatch_rejected(tmp_path):
    p = save_model(tmp_path / "lb.json", ModelFile(tree=small_tree()))
    doc = json.loads(p.read_text())
    doc["quantized"]["threshold"][0] = 6  # a one-value edit, checksum left as it was
    p.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="checksum mismatch") as exc:
        load_model(p)
    _one_line_error(exc)


def test_nan_threshold_in_file_rejected(tmp_path):
    p = save_model(tmp_path / "lb.json", ModelFile(tree=small_tree()))
    _rewrite(p, lambda d: d["float_tree"]["threshold"].__setitem__(2, float("nan")))
    with pytest.raises(ModelError, match="NaN") as exc:
        load_model(p)
    _one_line_error(exc)


def test_save_refuses_invalid_model(tmp_path):
    with pytest.raises(ModelError, match="NaN"):
        save_model(tmp_path / "lb.json",
                   ModelFile(tree=small_tree(float_threshold=[float("nan"), 0, 0, 0, 0])))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.__setitem__("features", FEATURES[:-1]), "trained on features"),
    (lambda d: d["quantized"].__setitem__("nr_features", 15), "15 features"),
    (lambda d: d.__setitem__("format_version", 2), "newer than this aios-lab"),
    (lambda d: d.__setitem__("policy", "other"), "policy 'other'"),
    (lambda d: d["quantized"]["leaf"].pop(), "has 4 entries"),
    (lambda d: d["quantized"]["threshold"].__setitem__(0, 5.5), "not an integer"),
    (lambda d: d["quantized"]["left"].__setitem__(0, 0), "left child 0"),
    (lambda d: d.__setitem__("model_version", 0), "model_version"),
])
def test_bad_content_rejected(tmp_path, mutate, match):
    p = save_model(tmp_path / "lb.json", ModelFile(tree=small_tree()))
    _rewrite(p, mutate)
    with pytest.raises(ModelError, match=match) as exc:
        load_model(p)
    assert str(p) in _one_line_error(exc)


@pytest.mark.parametrize("damage, match", [
    (lambda t: t[: len(t) // 2], "not valid JSON"),
    (lambda t: "", "not valid JSON"),
    (lambda t: "[1, 2]", "not an aios-lab model file"),
    (lambda t: t.replace('"sha256"', '"sha"'), "no sha256"),
])
def test_corrupt_file_rejected_with_one_line(tmp_path, damage, match):
    p = save_model(tmp_path / "lb.json", ModelFile(tree=small_tree()))
    p.write_text(damage(p.read_text()))
    with pytest.raises(ModelError, match=match) as exc:
        load_model(p)
    _one_line_error(exc)


def test_missing_and_binary_files_rejected(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ModelError, match="UTF-8"):
        load_model(tmp_path / "bin.json")


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_save_is_atomic(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "lb.json"

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(ModelError, match="cannot write model file") as exc:
        save_model(target, ModelFile(tree=small_tree()))
    _one_line_error(exc)
    assert list(tmp_path.iterdir()) == []  # no model, no temporary file


def test_failed_save_keeps_the_old_model(tmp_path, monkeypatch):
    target = save_model(tmp_path / "lb.json", constant_model(0))
    before = target.read_bytes()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(target, constant_model(1))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["lb.json"]
