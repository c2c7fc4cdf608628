"""Train the mllb decision tree from logged decisions (trace table lb_decisions).

Labelling rule
--------------
Each logged decision carries its outcome: ``wait_after_ns`` (decision -> the
task next ran) and ``run_after_ns`` (how long that run lasted). The label is
1 when *migrating was the right answer* and 0 when staying was:

* a decision that **migrated** is labelled 1 when the task ran soon,
  ``wait_after_ns <= wait_good_ns``, and its next run was not cache-cold;
  otherwise 0. A run counts as cache-cold when it was inflated well beyond
  the task's usual run length: ``run_after_ns > cold_factor *
  max(task_runtime_us * 1000, cold_min_ns)`` (the same work taking twice as
  long points at refilling caches). Tasks with no run history
  (``task_runtime_us == 0``) are never called cold; ``cold_factor=None``
  turns the check off.
* a decision that **stayed** is labelled 1 when the task waited long,
  ``wait_after_ns > wait_bad_ns`` (moving it would have been better), else 0.

Default thresholds are relative to the data, because absolute waits depend
on the machine and the workload. Each decision is judged against the typical
outcome of the *other* choice (its counterfactual), measured in the training
split only, so the held-out set does not shape its own labels:

* ``wait_good_ns`` = the median wait of the decisions that **stayed**
  (``good_quantile=0.5``): a migration paid off if the task ran at least as
  soon as a typical task that stayed;
* ``wait_bad_ns`` = the 90th percentile of the waits of the decisions that
  **migrated** (``bad_quantile=0.9``): staying was wrong if the task waited
  longer than nine in ten migrated tasks did.

A quantile of the stays' own waits would force about a tenth of the stays to
be "wrong" whatever the machine did; the cross reference does not. When one
side has fewer than ``MIN_SIDE`` decisions, its quantile comes from all
waits instead. ``cold_factor`` defaults to 2 and ``cold_min_ns`` to 50 us
(below that, run length noise from interrupts and ticks dwarfs cache
refill). The thresholds used, and how each was chosen, go into the model
file's training metadata.

Split
-----
Decisions of one task close in time are correlated, so a random split would
flatter the model. The held-out set is the *last* ``test_size`` fraction of
each trace's decisions by ``ts_ns``: the model is judged on the future.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from aios_lab.errors import ModelError, TraceError
from aios_lab.mllb.estimator import TreeModel
from aios_lab.mllb.model import FEATURES, ModelFile, feature_bounds
from aios_lab.telemetry.schema import METADATA_FILE, table_file

TABLE = "lb_decisions"
OUTCOME_COLUMNS = ["ts_ns", "migrate", "wait_after_ns", "run_after_ns"]
FEATURE_COLUMNS = [f"f_{n}" for n in FEATURES]
MIN_ROWS = 20  # fewer usable decisions than this cannot say anything held-out
MIN_SIDE = 10  # a quantile of fewer waits than this is noise

DEFAULT_GOOD_QUANTILE = 0.5
DEFAULT_BAD_QUANTILE = 0.9
DEFAULT_COLD_FACTOR = 2.0
DEFAULT_COLD_MIN_NS = 50_000

_COLLECT_HINT = ("collect a trace while the mllb policy runs with decision logging; "
                 "its collect mode logs every decision")


# --------------------------------------------------------------------------- loading

def load_decisions(trace_dirs: Iterable[Path | str]) -> pd.DataFrame:
    """Concatenate the lb_decisions tables of ``trace_dirs``, with a ``trace``
    column naming the source directory (the split is per trace)."""
    from aios_lab.telemetry.trace import Trace

    frames = []
    for d in trace_dirs:
        path = Path(d)
        if (path / METADATA_FILE).is_file() and not (path / table_file(TABLE)).is_file():
            raise TraceError(f"trace {path} has no {TABLE} table (collected by an aios-lab "
                             f"without decision logging)", hint=_COLLECT_HINT)
        trace = Trace.open(path)
        if trace.rows(TABLE) == 0:
            raise ModelError(f"trace {path} holds no load-balancing decisions ({TABLE} is "
                             f"empty), so there is nothing to train on", hint=_COLLECT_HINT)
        df = trace.table(TABLE)
        df["trace"] = str(path)
        frames.append(df)
    if not frames:
        raise ModelError("no traces given to train on", hint="pass --trace DIR")
    return pd.concat(frames, ignore_index=True)


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a known outcome and every feature, with integer columns.

    Nullable integer columns come back from Parquet as float (NaN for null),
    so they are converted back once the nulls are gone."""
    missing = [c for c in OUTCOME_COLUMNS + FEATURE_COLUMNS if c not in df.columns]
    if missing:
        raise ModelError(f"decisions lack column(s) {', '.join(missing)}; they are not an "
                         f"{TABLE} table of this aios-lab")
    out = df.dropna(subset=OUTCOME_COLUMNS + FEATURE_COLUMNS).copy()
    for c in ["ts_ns", "wait_after_ns", "run_after_ns"] + FEATURE_COLUMNS:
        out[c] = out[c].astype(np.int64)
    out["migrate"] = out["migrate"].astype(bool)
    return out.reset_index(drop=True)


def feature_matrix(df: pd.DataFrame) -> np.ndarray:
    """(n, 16) int64 features in enum order, clamped as BPF clamps them (so the
    training data covers exactly the values the kernel can produce)."""
    X = df[FEATURE_COLUMNS].to_numpy(dtype=np.int64)
    lo, hi = feature_bounds()
    return np.clip(X, lo, hi)


# --------------------------------------------------------------------------- labels

@dataclass(frozen=True)
class LabelRule:
    """The thresholds of the labelling rule (module docstring)."""

    wait_good_ns: int
    wait_bad_ns: int
    cold_factor: float | None = DEFAULT_COLD_FACTOR
    cold_min_ns: int = DEFAULT_COLD_MIN_NS
    derived: dict[str, str] = field(default_factory=dict)  # how each was chosen

    def apply(self, df: pd.DataFrame) -> np.ndarray:
        wait = df["wait_after_ns"].to_numpy(dtype=np.int64)
        migrate = df["migrate"].to_numpy(dtype=bool)
        good_migration = migrate & (wait <= self.wait_good_ns) & ~self.cold(df)
        bad_stay = ~migrate & (wait > self.wait_bad_ns)
        return (good_migration | bad_stay).astype(np.int64)

    def cold(self, df: pd.DataFrame) -> np.ndarray:
        """Rows whose next run was inflated beyond the task's usual run length."""
        if self.cold_factor is None:
            return np.zeros(len(df), dtype=bool)
        usual_ns = df["f_task_runtime_us"].to_numpy(dtype=np.int64) * 1000
        run = df["run_after_ns"].to_numpy(dtype=np.int64)
        limit = self.cold_factor * np.maximum(usual_ns, self.cold_min_ns)
        return (usual_ns > 0) & (run > limit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_rule(df: pd.DataFrame, *, wait_good_ns: int | None = None,
               wait_bad_ns: int | None = None, good_quantile: float = DEFAULT_GOOD_QUANTILE,
               bad_quantile: float = DEFAULT_BAD_QUANTILE,
               cold_factor: float | None = DEFAULT_COLD_FACTOR,
               cold_min_ns: int = DEFAULT_COLD_MIN_NS) -> LabelRule:
    """The rule's thresholds: given ones as they are, others from ``df``'s waits."""
    if len(df) == 0:
        raise ModelError("no decisions to derive labelling thresholds from")
    migrated = df["migrate"].astype(bool)

    def waits_of(mask: pd.Series, name: str) -> tuple[pd.Series, str]:
        if int(mask.sum()) >= MIN_SIDE:
            return df.loc[mask, "wait_after_ns"], name
        return df["wait_after_ns"], f"all decisions (fewer than {MIN_SIDE} {name})"

    derived = {}
    if wait_good_ns is None:
        waits, of = waits_of(~migrated, "stays")
        wait_good_ns = int(waits.quantile(good_quantile))
        derived["wait_good_ns"] = f"q{good_quantile:g} of wait_after_ns of {of}"
    else:
        derived["wait_good_ns"] = "given"
    if wait_bad_ns is None:
        waits, of = waits_of(migrated, "migrations")
        wait_bad_ns = int(waits.quantile(bad_quantile))
        derived["wait_bad_ns"] = f"q{bad_quantile:g} of wait_after_ns of {of}"
    else:
        derived["wait_bad_ns"] = "given"
    return LabelRule(int(wait_good_ns), int(wait_bad_ns),
                     None if cold_factor is None else float(cold_factor), int(cold_min_ns),
                     derived)


def label(df: pd.DataFrame, rule: LabelRule | None = None, **kwargs: Any) -> pd.Series:
    """Labels (1 = migrating was right) of prepared decisions; ``kwargs`` go to
    ``label_rule`` when no rule is given."""
    rule = rule or label_rule(df, **kwargs)
    return pd.Series(rule.apply(df), index=df.index, name="label")


# --------------------------------------------------------------------------- training

def split_by_time(df: pd.DataFrame, test_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row positions: the last ``test_size`` of each trace by ts_ns."""
    if not 0 < test_size < 1:
        raise ModelError(f"test_size must be between 0 and 1, not {test_size}")
    groups = df["trace"] if "trace" in df.columns else pd.Series(0, index=df.index)
    train, test = [], []
    for _, g in df.groupby(groups, sort=False):
        order = g.sort_values("ts_ns", kind="stable").index.to_numpy()
        k = int(math.ceil(len(order) * test_size))
        train.append(order[:len(order) - k])
        test.append(order[len(order) - k:])
    return np.concatenate(train), np.concatenate(test)


@dataclass
class TrainReport:
    traces: list[str]
    rows_total: int
    rows_used: int
    rows_train: int
    rows_test: int
    split: str
    label_rule: dict[str, Any]
    class_balance: dict[str, dict[str, int]]
    accuracy: float
    balanced_accuracy: float
    baseline_accuracy: float  # always answering the training split's majority class
    confusion: list[list[int]]  # rows: true stay/migrate; columns: predicted stay/migrate
    agreement: float  # quantised tree == float tree on the held-out set
    agreement_train: float
    importances: dict[str, float]
    nr_nodes: int
    depth: int
    params: dict[str, Any]

    @property
    def rows_dropped(self) -> int:
        return self.rows_total - self.rows_used

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_dropped"] = self.rows_dropped
        return d

    def lines(self) -> list[str]:
        """Plain-text report for the CLI."""
        r, (tn, fp), (fn, tp) = self.label_rule, *self.confusion
        cb = self.class_balance
        top = [f"{k} {v:.2f}" for k, v in self.importances.items() if v > 0][:6]
        cold = ("cold check off" if r["cold_factor"] is None
                else f"not cold: run <= {r['cold_factor']:g}x max(task runtime, "
                     f"{r['cold_min_ns'] / 1e3:g} us)")
        return [
            f"decisions: {self.rows_total} from {len(self.traces)} trace(s), {self.rows_used} "
            f"usable ({self.rows_dropped} without outcome or features)",
            f"labels: migrate good if wait <= {r['wait_good_ns'] / 1e3:.1f} us and {cold}; "
            f"stay bad if wait > {r['wait_bad_ns'] / 1e3:.1f} us",
            f"split: {self.split}: {self.rows_train} train, {self.rows_test} held out",
            f"class balance: train stay {cb['train']['stay']} / migrate {cb['train']['migrate']}, "
            f"held-out stay {cb['test']['stay']} / migrate {cb['test']['migrate']}",
            f"held-out accuracy: {self.accuracy:.3f} (balanced {self.balanced_accuracy:.3f}, "
            f"majority baseline {self.baseline_accuracy:.3f})",
            "confusion (rows true, columns predicted):",
            "             stay  migrate",
            f"  stay    {tn:7d}  {fp:7d}",
            f"  migrate {fn:7d}  {tp:7d}",
            f"quantized vs float tree agreement: held-out {self.agreement:.4f}, "
            f"train {self.agreement_train:.4f}",
            f"tree: {self.nr_nodes} nodes, depth {self.depth}",
            f"top features: {', '.join(top) if top else 'none (constant tree)'}",
        ]


def _balance(y: np.ndarray) -> dict[str, int]:
    return {"stay": int((y == 0).sum()), "migrate": int((y == 1).sum())}


def train(df: pd.DataFrame, *, test_size: float = 0.25, seed: int = 0, max_depth: int = 8,
          min_samples_leaf: int = 20, class_weight: Any = "balanced",
          rule: LabelRule | None = None, model_version: int | None = None,
          **label_kwargs: Any) -> tuple[ModelFile, TrainReport]:
    """Label, split by time, fit a TreeModel, quantise it and evaluate both trees
    on the held-out decisions. ``label_kwargs`` go to ``label_rule``."""
    rows_total = len(df)
    data = prepare(df)
    if len(data) < MIN_ROWS:
        raise ModelError(f"only {len(data)} usable decisions (of {rows_total}); training needs "
                         f"at least {MIN_ROWS}", hint="collect a longer trace")
    train_idx, test_idx = split_by_time(data, test_size)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise ModelError(f"test_size {test_size} leaves an empty train or test set")
    tr, te = data.loc[train_idx], data.loc[test_idx]
    rule = rule or label_rule(tr, **label_kwargs)
    X_tr, X_te = feature_matrix(tr), feature_matrix(te)
    y_tr, y_te = rule.apply(tr), rule.apply(te)

    model = TreeModel(max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                      class_weight=class_weight, random_state=seed).fit(X_tr, y_tr)
    tree = model.quantize()
    pred = model.predict(X_te).astype(np.int64)
    agreement = float((tree.predict(X_te) == pred).mean())
    agreement_train = float((tree.predict(X_tr) == model.predict(X_tr)).mean())

    cm = [[int(((y_te == t) & (pred == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    recalls = [cm[t][t] / sum(cm[t]) for t in (0, 1) if sum(cm[t])]
    majority = int(y_tr.mean() > 0.5)
    imp = np.nan_to_num(model.feature_importances_)
    importances = dict(sorted(((n, float(v)) for n, v in zip(FEATURES, imp)),
                              key=lambda kv: -kv[1]))
    traces = (list(dict.fromkeys(data["trace"].astype(str))) if "trace" in data.columns
              else [])
    report = TrainReport(
        traces=traces, rows_total=rows_total, rows_used=len(data),
        rows_train=len(tr), rows_test=len(te),
        split=f"by time, last {test_size:.0%} of each trace's decisions held out",
        label_rule=rule.to_dict(),
        class_balance={"train": _balance(y_tr), "test": _balance(y_te)},
        accuracy=float((pred == y_te).mean()),
        balanced_accuracy=float(np.mean(recalls)),
        baseline_accuracy=float((y_te == majority).mean()),
        confusion=cm, agreement=agreement, agreement_train=agreement_train,
        importances=importances, nr_nodes=tree.nr_nodes, depth=tree.max_depth,
        params={"max_depth": max_depth, "min_samples_leaf": min_samples_leaf,
                "class_weight": class_weight, "seed": seed, "test_size": test_size},
    )
    mf = ModelFile(tree=tree, training=report.to_dict())
    if model_version is not None:
        mf.model_version = int(model_version)
    return mf, report
