"""The mllb decision tree: training wrapper, integer quantisation, model file.

BPF has no floating point, so the tree that runs in the kernel compares
integer features with integer thresholds (policies/mllb/intf.h,
``struct mllb_node``). ``QuantizedTree`` is that tree in numpy arrays, and
its ``predict`` walks it exactly as the BPF loop does, so what user space
evaluates is what the kernel will decide.

scikit-learn compares ``float32(x) <= t`` with a float64 threshold ``t``.
float32 rounding is monotone, so on integers that test is the same as
``x <= K`` for K = the largest integer with ``float32(K) <= t``; below 2**24
(where float32 holds every integer) K is simply ``floor(t)``. Using K keeps
the quantised tree equal to the float tree on every integer input.

The model file is JSON, versioned and checksummed (see ``ModelFile``); it is
written atomically and every load re-validates it, because a bad tree would
be loaded into the kernel.
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aios_lab.atomic import write_text_atomic
from aios_lab.errors import ModelError
from aios_lab.mllb.limits import limits
from aios_lab.safe_read import parse_json, read_bounded
from aios_lab.telemetry.schema import LB_FEATURES

# The decision trace's feature columns (telemetry.schema); the policy's own
# enum mllb_feature must list the same (tests/mllb/test_model.py). The
# tree's bounds come from the built policy's BTF: aios_lab.mllb.limits.
FEATURES: list[str] = list(LB_FEATURES)
# Features that may be negative; all others are clamped to 0..MLLB_FEATURE_MAX.
SIGNED_FEATURES = frozenset({"load_diff", "nr_diff", "wait_gain_us"})

FORMAT = "aios-lab-model"
FORMAT_VERSION = 1
POLICY = "mllb"
KIND = "tree"

MIGRATE, STAY = 1, 0
_F32_EXACT = 2 ** 24  # float32 holds every integer below this
_RETRAIN = "retrain it with `aios-lab train lb`"
MODEL_FILE_LIMIT = 4 << 20  # 511 nodes of JSON are ~100 KiB


# --------------------------------------------------------------------------- features

def feature_bounds(features: list[str] = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (low, high) clamp bounds, as BPF clamps them."""
    feature_max = limits().feature_max
    lo = np.array([-feature_max if f in SIGNED_FEATURES else 0 for f in features],
                  dtype=np.int64)
    hi = np.full(len(features), feature_max, dtype=np.int64)
    return lo, hi


# --------------------------------------------------------------------------- estimator

def int_threshold(t: float) -> int:
    """Largest integer K with float32(K) <= t: on integers, ``float32(x) <= t``
    (what scikit-learn evaluates) iff ``x <= K``. Equals floor(t) below 2**24."""
    if not math.isfinite(t):
        raise ModelError(f"tree threshold {t} is not finite; {_RETRAIN}")
    k = math.floor(t)
    if abs(k) < _F32_EXACT:
        return k
    # Beyond 2**24 a float32 step is at most 128 for |x| < 2**31, so these
    # loops run a few dozen times at most.
    while float(np.float32(k)) > t:
        k -= 1
    while float(np.float32(k + 1)) <= t:
        k += 1
    return k


@dataclass
class QuantizedTree:
    """The tree as ``struct mllb_node`` arrays: node i is an inner node when
    feature[i] >= 0 (go to left[i] when x[feature[i]] <= threshold[i], else
    right[i]) and a leaf answering leaf[i] (1 migrate, 0 stay) otherwise.

    ``float_threshold`` and ``proba`` keep the float model it came from (the
    trained thresholds and P(migrate) per node) for inspection and NaN checks.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray
    max_depth: int
    nr_features: int = field(default_factory=lambda: limits().nr_features)
    float_threshold: np.ndarray | None = None
    proba: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.feature = np.asarray(self.feature, dtype=np.int32)
        self.threshold = np.asarray(self.threshold, dtype=np.int64)
        self.left = np.asarray(self.left, dtype=np.uint32)
        self.right = np.asarray(self.right, dtype=np.uint32)
        self.leaf = np.asarray(self.leaf, dtype=np.uint32)
        self.max_depth = int(self.max_depth)
        self.nr_features = int(self.nr_features)
        if self.float_threshold is not None:
            self.float_threshold = np.asarray(self.float_threshold, dtype=np.float64)
        if self.proba is not None:
            self.proba = np.asarray(self.proba, dtype=np.float64)

    @property
    def nr_nodes(self) -> int:
        return int(self.feature.shape[0])

    @classmethod
    def from_sklearn(cls, tree: Any) -> "QuantizedTree":
        """From a fitted DecisionTreeClassifier (or TreeModel) with classes in {0, 1}."""
        # A TreeModel wraps the fitted tree (duck-typed: no sklearn import here).
        if hasattr(tree, "estimator_") and not hasattr(tree, "tree_"):
            tree = tree.estimator_
        t = tree.tree_
        classes = [int(c) for c in tree.classes_]
        if not set(classes) <= {STAY, MIGRATE}:
            raise ModelError(f"tree classes are {classes}, expected 0 (stay) and 1 (migrate)")
        n = t.node_count
        is_leaf = t.children_left < 0
        value = t.value[:, 0, :]
        # Leaves answer the class sklearn would predict there (argmax; a tie
        # goes to the first class, as in sklearn).
        leaf = np.array([classes[int(np.argmax(v))] for v in value], dtype=np.uint32)
        total = value.sum(axis=1)
        p1 = (value[:, classes.index(MIGRATE)] if MIGRATE in classes else np.zeros(n))
        proba = np.divide(p1, total, out=np.zeros(n), where=total > 0)
        fthr = np.where(is_leaf, 0.0, t.threshold)
        feature_max = limits().feature_max
        thr = np.array([0 if is_leaf[i] else
                        min(max(int_threshold(float(t.threshold[i])), -feature_max),
                            feature_max) for i in range(n)], dtype=np.int64)
        return cls(
            feature=np.where(is_leaf, -1, t.feature),
            threshold=thr,
            left=np.where(is_leaf, 0, t.children_left),
            right=np.where(is_leaf, 0, t.children_right),
            leaf=np.where(is_leaf, leaf, 0),
            max_depth=int(t.max_depth),
            nr_features=int(tree.n_features_in_),
            float_threshold=fthr,
            proba=proba,
        )

    @classmethod
    def constant(cls, answer: int, nr_features: int | None = None) -> "QuantizedTree":
        """A single leaf that always answers ``answer`` (1 migrate, 0 stay)."""
        if answer not in (STAY, MIGRATE):
            raise ModelError(f"a constant model answers 0 (stay) or 1 (migrate), not {answer!r}")
        return cls(feature=[-1], threshold=[0], left=[0], right=[0], leaf=[answer],
                   max_depth=0, nr_features=limits().nr_features if nr_features is None else nr_features,
                   float_threshold=[0.0],
                   proba=[float(answer)])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The BPF walk, vectorised: from node 0, at most MLLB_MAX_DEPTH + 1
        nodes; a walk that does not reach a leaf in time, or meets a feature or
        child index out of range, answers 0 (stay). validate() rejects every
        tree where that can happen."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.nr_features:
            raise ModelError(f"features must have shape (n, {self.nr_features}), "
                             f"not {X.shape}")
        if not np.issubdtype(X.dtype, np.integer):
            if not np.all(np.isfinite(X)) or np.any(X != np.floor(X)):
                raise ModelError("QuantizedTree.predict takes integer features")
        X = X.astype(np.int64)
        n, nodes = X.shape[0], self.nr_nodes
        out = np.full(n, STAY, dtype=np.int64)
        idx = np.zeros(n, dtype=np.int64)
        active = np.ones(n, dtype=bool)
        for _ in range(limits().max_depth + 1):
            rows = np.flatnonzero(active)
            if rows.size == 0:
                break
            node = idx[rows]
            f = self.feature[node].astype(np.int64)
            at_leaf = f < 0
            out[rows[at_leaf]] = self.leaf[node[at_leaf]]
            active[rows[at_leaf]] = False
            inner = ~at_leaf & (f < self.nr_features)
            active[rows[~at_leaf & ~inner]] = False  # bad feature index: stay
            rows, node, f = rows[inner], node[inner], f[inner]
            go_left = X[rows, f] <= self.threshold[node]
            nxt = np.where(go_left, self.left[node], self.right[node]).astype(np.int64)
            ok = nxt < nodes
            active[rows[~ok]] = False  # child out of range: stay
            idx[rows[ok]] = nxt[ok]
        return out

    def depth(self) -> int:
        """Depth of the deepest node reachable from the root (root = 0)."""
        n = self.nr_nodes
        depth = np.full(n, -1, dtype=np.int64)
        depth[0] = 0
        for i in range(n):  # children point forward, so parents come first
            if depth[i] < 0 or self.feature[i] < 0:
                continue
            for c in (int(self.left[i]), int(self.right[i])):
                if i < c < n:
                    depth[c] = max(depth[c], depth[i] + 1)
        return int(depth.max())

    def validate(self, nr_features: int | None = None, max_nodes: int | None = None,
                 max_depth: int | None = None, feature_max: int | None = None) -> None:
        """Raise ModelError (one line: what is wrong, what to do) unless the
        kernel can run this tree safely and as user space evaluates it.
        Limits not given are the built mllb's (aios_lab.mllb.limits)."""
        if None in (nr_features, max_nodes, max_depth, feature_max):
            lim = limits()
            nr_features = lim.nr_features if nr_features is None else nr_features
            max_nodes = lim.max_nodes if max_nodes is None else max_nodes
            max_depth = lim.max_depth if max_depth is None else max_depth
            feature_max = lim.feature_max if feature_max is None else feature_max
        if self.nr_features != nr_features:
            raise ModelError(f"model uses {self.nr_features} features but mllb has "
                             f"{nr_features}; {_RETRAIN} on a trace from this mllb")
        n = self.nr_nodes
        arrays = {"feature": self.feature, "threshold": self.threshold, "left": self.left,
                  "right": self.right, "leaf": self.leaf}
        for opt in ("float_threshold", "proba"):
            if getattr(self, opt) is not None:
                arrays[opt] = getattr(self, opt)
        for name, arr in arrays.items():
            if arr.ndim != 1 or arr.shape[0] != n:
                raise ModelError(f"model array {name} has shape {arr.shape}, expected ({n},); "
                                 f"the model is corrupt, {_RETRAIN}")
        if n < 1:
            raise ModelError(f"model has no nodes; {_RETRAIN}")
        if n > max_nodes:
            raise ModelError(f"model has {n} nodes, more than the {max_nodes} a slot holds; "
                             f"retrain with a smaller --max-depth")
        for name in ("float_threshold", "proba"):
            arr = arrays.get(name)
            if arr is not None and not np.all(np.isfinite(arr)):
                i = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise ModelError(f"float model {name}[{i}] is {arr[i]} (NaN or infinite); "
                                 f"the model is corrupt, {_RETRAIN}")
        for i in range(n):
            f = int(self.feature[i])
            if f < 0:
                if int(self.leaf[i]) not in (STAY, MIGRATE):
                    raise ModelError(f"model leaf {i} answers {int(self.leaf[i])}, expected "
                                     f"0 (stay) or 1 (migrate); {_RETRAIN}")
                continue
            if f >= nr_features:
                raise ModelError(f"model node {i} tests feature {f}, but features are "
                                 f"0..{nr_features - 1}; {_RETRAIN}")
            thr = int(self.threshold[i])
            if not -feature_max <= thr <= feature_max:
                raise ModelError(f"model node {i} threshold {thr} is outside "
                                 f"-{feature_max}..{feature_max}; {_RETRAIN}")
            for side, c in (("left", int(self.left[i])), ("right", int(self.right[i]))):
                if not i < c < n:
                    # Children after their parent make the walk acyclic.
                    raise ModelError(f"model node {i} {side} child {c} is not in {i + 1}..{n - 1} "
                                     f"(children must come after their parent); the model is "
                                     f"corrupt, {_RETRAIN}")
        depth = self.depth()
        if depth > max_depth:
            raise ModelError(f"model tree is {depth} deep, deeper than the {max_depth} mllb "
                             f"walks; retrain with --max-depth {max_depth} or less")
        if depth != self.max_depth:
            raise ModelError(f"model records max_depth {self.max_depth} but its tree is {depth} "
                             f"deep; the model is corrupt, {_RETRAIN}")
        self._check_agreement(feature_max)

    def _check_agreement(self, feature_max: int) -> None:
        """The integer tree must be the quantisation of the float tree it
        carries: each threshold int_threshold() of its float threshold, each
        leaf the float tree's majority answer. The sha256 of a model file only
        detects accidents (anyone can recompute it); this catches a file whose
        kernel tree was edited to decide differently from the tree it reports."""
        if self.float_threshold is None or self.proba is None:
            return
        for i in range(self.nr_nodes):
            if int(self.feature[i]) < 0:
                want = MIGRATE if float(self.proba[i]) > 0.5 else STAY
                if int(self.leaf[i]) != want:
                    raise ModelError(f"model leaf {i} answers {int(self.leaf[i])} but its float tree says "
                                     f"P(migrate) = {float(self.proba[i]):.3f}; the two trees disagree, "
                                     f"the model was edited, {_RETRAIN}")
                continue
            t = float(self.float_threshold[i])
            want_t = min(max(int_threshold(t), -feature_max), feature_max)
            if int(self.threshold[i]) != want_t:
                raise ModelError(f"model node {i} threshold {int(self.threshold[i])} is not the quantised "
                                 f"float threshold {t} (expected {want_t}); the two trees disagree, "
                                 f"the model was edited, {_RETRAIN}")

    def to_dict(self) -> tuple[dict, dict]:
        """(quantized, float_tree) sections of the model file."""
        q = {"nr_features": self.nr_features, "max_depth": self.max_depth,
             "nr_nodes": self.nr_nodes,
             "feature": self.feature.tolist(), "threshold": self.threshold.tolist(),
             "left": self.left.tolist(), "right": self.right.tolist(),
             "leaf": self.leaf.tolist()}
        ft = self.float_threshold if self.float_threshold is not None else np.zeros(self.nr_nodes)
        pr = self.proba if self.proba is not None else self.leaf.astype(np.float64)
        return q, {"threshold": [float(v) for v in ft], "proba_migrate": [float(v) for v in pr]}


# --------------------------------------------------------------------------- model file

def _canonical(obj: Any) -> bytes:
    # NaN is allowed here so that a damaged file still gets a checksum and is
    # then rejected by the NaN check with a clear message.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=True).encode("ascii")


def _jsonable(obj: Any) -> Any:
    """Training metadata often holds numpy scalars; JSON wants Python ones."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelFile:
    """A model as stored on disk. ``version`` (a u64 the kernel echoes in its
    stats) defaults to the creation time in Unix seconds, so later models
    have larger versions; ``checksum64()`` is what the kernel slot records."""

    tree: QuantizedTree
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    training: dict = field(default_factory=dict)
    created: str = field(default_factory=_now_iso)
    model_version: int = field(default_factory=lambda: int(time.time()))
    policy: str = POLICY
    kind: str = KIND

    @property
    def version(self) -> int:
        return self.model_version

    def payload(self) -> dict:
        """Everything in the file except ``sha256``."""
        quantized, float_tree = self.tree.to_dict()
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "policy": self.policy,
                "kind": self.kind, "model_version": int(self.model_version),
                "created": self.created, "features": list(self.features),
                "quantized": quantized, "float_tree": float_tree,
                "training": _jsonable(self.training)}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(_canonical(self.payload())).hexdigest()

    def to_dict(self) -> dict:
        d = self.payload()
        d["sha256"] = hashlib.sha256(_canonical(d)).hexdigest()
        return d

    def checksum64(self) -> int:
        """First 8 bytes of the sha256, as a little-endian u64."""
        return int.from_bytes(bytes.fromhex(self.sha256)[:8], "little")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.tree.predict(X)

    def validate(self) -> None:
        if list(self.features) != FEATURES:
            raise ModelError(f"model features {self.features} differ from this mllb's "
                             f"{FEATURES}; {_RETRAIN} on a trace from this mllb")
        if not 1 <= int(self.model_version) < 2 ** 64:
            raise ModelError(f"model_version {self.model_version} is not a u64 >= 1")
        self.tree.validate(nr_features=len(FEATURES))


def constant_model(answer: int, *, model_version: int | None = None) -> ModelFile:
    """A one-leaf model that always says migrate (1) or stay (0), for tests."""
    mf = ModelFile(tree=QuantizedTree.constant(answer),
                   training={"constant": int(answer)})
    if model_version is not None:
        mf.model_version = int(model_version)
    return mf


def save_model(path: Path | str, model_file: ModelFile) -> Path:
    """Validate and write ``model_file`` atomically: a temporary file in the
    same directory, fsync, rename. On any error nothing new is left behind
    (an older file at ``path`` is untouched)."""
    path = Path(path)
    model_file.validate()
    try:
        text = json.dumps(model_file.to_dict(), indent=1, sort_keys=True, allow_nan=False)
    except ValueError:
        raise ModelError("model metadata holds NaN or infinity; it cannot be saved") from None
    try:
        write_text_atomic(path, text + "\n")
    except OSError as e:
        # a missing or read-only folder fails before anything is written; the
        # rest (a full disk) fails while writing the temporary file
        hint = ("check that the folder exists and is writable"
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS)
                else "check free disk space and permissions")
        raise ModelError(f"cannot write model file {path}: {e.strerror or e}", hint=hint) from None
    return path


def _ints(where: str, values: Any, lo: int, hi: int) -> list[int]:
    if not isinstance(values, list):
        raise ModelError(f"{where} must be a list of integers")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ModelError(f"{where}[{i}] is {v!r}, not an integer")
        if not lo <= v <= hi:
            raise ModelError(f"{where}[{i}] = {v} is outside {lo}..{hi}")
    return values


def _int(where: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ModelError(f"{where} is {v!r}, not an integer; the model is corrupt")
    if not lo <= v <= hi:
        raise ModelError(f"{where} = {v} is outside {lo}..{hi}; the model is corrupt")
    return v


def _floats(where: str, values: Any) -> list[float]:
    if not isinstance(values, list):
        raise ModelError(f"{where} must be a list of numbers")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ModelError(f"{where}[{i}] is {v!r}, not a number")
        if not math.isfinite(v):
            raise ModelError(f"{where}[{i}] is {v} (NaN or infinite)")
    return [float(v) for v in values]


def load_model(path: Path | str) -> ModelFile:
    """Read, verify and validate a model file; ModelError says what is wrong."""
    path = Path(path)
    where = f"model file {path}"
    if not path.exists():
        raise ModelError(f"{where} does not exist", hint="train one with `aios-lab train lb`")
    # Bounded and non-blocking: --model /dev/zero or a FIFO is refused, not read forever.
    raw = read_bounded(path, limit=MODEL_FILE_LIMIT, error=ModelError, what="model file")
    # NaN stays parseable so the NaN check below names the array and index.
    doc = parse_json(raw, error=ModelError, what=where, fix=_RETRAIN, parse_constant=float)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f"{where} is not an aios-lab model file (no \"format\": \"{FORMAT}\")")
    fv = doc.get("format_version")
    if isinstance(fv, bool) or not isinstance(fv, int):
        raise ModelError(f"{where} has no integer format_version; it is corrupt, {_RETRAIN}")
    if fv != FORMAT_VERSION:
        if fv > FORMAT_VERSION:
            raise ModelError(f"{where} has format_version {fv}, newer than this aios-lab "
                             f"reads ({FORMAT_VERSION})", hint="upgrade aios-lab")
        raise ModelError(f"{where} has format_version {fv}, no longer supported; {_RETRAIN}")
    sha = doc.pop("sha256", None)
    if not isinstance(sha, str):
        raise ModelError(f"{where} has no sha256; it is corrupt, {_RETRAIN}")
    if hashlib.sha256(_canonical(doc)).hexdigest() != sha.lower():
        raise ModelError(f"{where}: checksum mismatch, the file was modified or damaged; "
                         f"{_RETRAIN}")
    try:
        mf = _from_doc(where, doc)
    except ModelError as e:
        raise ModelError(f"{where}: {e}", hint=e.hint) from None
    if mf.sha256 != sha.lower():
        # Only a hand-written file gets here: right values, wrong JSON types.
        raise ModelError(f"{where} is not in canonical form (a value has the wrong JSON "
                         f"type); {_RETRAIN}")
    return mf


def _from_doc(where: str, doc: dict) -> ModelFile:
    if doc.get("policy") != POLICY or doc.get("kind") != KIND:
        raise ModelError(f"model is for policy {doc.get('policy')!r} kind {doc.get('kind')!r}, "
                         f"expected {POLICY!r} {KIND!r}")
    features = doc.get("features")
    if features != FEATURES:
        raise ModelError(f"model was trained on features {features} but this mllb has "
                         f"{FEATURES}; {_RETRAIN} on a trace from this mllb")
    q, ft = doc.get("quantized"), doc.get("float_tree")
    if not isinstance(q, dict) or not isinstance(ft, dict):
        raise ModelError("model lacks its quantized or float_tree section; it is corrupt")
    for key in ("nr_features", "max_depth", "nr_nodes"):
        _int(f"quantized.{key}", q.get(key), 0, 2 ** 32 - 1)
    n = q["nr_nodes"]
    arrays = {
        "feature": _ints("quantized.feature", q.get("feature"), -2 ** 31, 2 ** 31 - 1),
        "threshold": _ints("quantized.threshold", q.get("threshold"), -2 ** 63, 2 ** 63 - 1),
        "left": _ints("quantized.left", q.get("left"), 0, 2 ** 32 - 1),
        "right": _ints("quantized.right", q.get("right"), 0, 2 ** 32 - 1),
        "leaf": _ints("quantized.leaf", q.get("leaf"), 0, 2 ** 32 - 1),
        "float_threshold": _floats("float_tree.threshold", ft.get("threshold")),
        "proba": _floats("float_tree.proba_migrate", ft.get("proba_migrate")),
    }
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ModelError(f"model array {name} has {len(arr)} entries but nr_nodes is {n}; "
                             f"it is corrupt, {_RETRAIN}")
    tree = QuantizedTree(max_depth=q["max_depth"], nr_features=q["nr_features"], **arrays)
    mv = _int("model_version", doc.get("model_version"), 1, 2 ** 64 - 1)
    training = doc.get("training", {})
    created = doc.get("created", "")
    if not isinstance(training, dict) or not isinstance(created, str):
        raise ModelError("model training/created fields have the wrong type; it is corrupt")
    mf = ModelFile(tree=tree, features=list(features), training=training, created=created,
                   model_version=mv)
    mf.validate()
    return mf
