"""Train the mllb decision tree from logged decisions (trace table lb_decisions).

Labelling rule
--------------
A migration is worth making when it saves the task more waiting than it
costs. Each logged decision carries its outcome, ``wait_after_ns`` (decision
-> the task next ran), and the estimates BPF made when deciding:
``src_wait_est_us``, how long the task would wait if it stayed (the rest of
src's current run, plus the work queued there unless the task would be
queued first) and ``dst_wait_est_us``, how long it would wait on dst (0 when
dst is idle). For each decision one side is observed and the other is the
estimate (the counterfactual):

* **migrated**: stay wait = ``src_wait_est``, move wait = ``wait_after``;
* **stayed**: stay wait = ``wait_after``, move wait = ``dst_wait_est``.

Moving a task onto an idle CPU gains at most the time that CPU would
otherwise have idled: if its own task comes back in 100 us, the moved task
then competes with it, and the gain was 100 us of CPU time, not the
milliseconds the moved task would have waited. BPF logs that horizon as
``dst_idle_est_us`` (the CPU's average idle period, or how long it has
idled already if longer; CFS's newidle balance uses the same ``avg_idle``
signal to skip pulling onto a CPU that is idle only briefly). So

    gain = stay wait - move wait, capped at dst_idle_est when dst is idle
           (always at a pull)

and the label is 1 ("migrating was right") when ``gain > cost``, else 0.
``cost`` is what a migration costs the task in lost cache warmth:
``migration_cost_ns`` (default 500 us, the default of CFS's
``sched_migration_cost_ns``, below which CFS calls a task cache-hot) within
an LLC, ``llc_factor`` (2) times that across LLCs of one NUMA node and
``node_factor`` (4) times that across nodes. The costs are parameters, not
measurements: under TCG there is no cache to lose, so on the VM they encode
what real hardware would charge. The rule and its parameters go into the
model file's training metadata.

Class weights
-------------
None by default: the label already weighs what a migration costs against
what it saves, and "balanced" weights bought recall of the rarer migrate
class with needless migrations (measured on one collect trace of the build
workload: balanced, held-out accuracy 0.878 and 4,555 migrate answers on a
model-mode trace of 17,173 decisions; unweighted, 0.940 and 1,635).

Split
-----
Decisions of one task close in time are correlated, so a random split would
flatter the model. The held-out set is the *last* ``test_size`` fraction of
each trace's decisions by ``ts_ns``: the model is judged on the future.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
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
MIN_SPLIT_ROWS = 5  # either side of the split; an accuracy on 1 held-out row says nothing

DEFAULT_MIGRATION_COST_NS = 500_000  # CFS's sched_migration_cost_ns default
DEFAULT_LLC_FACTOR = 2.0
DEFAULT_NODE_FACTOR = 4.0

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
    for c in ("ts_ns", "wait_after_ns", "run_after_ns"):  # times: a negative one is damage
        if len(out) and out[c].min() < 0:
            row = out.loc[out[c].idxmin()]
            raise TraceError(f"trace {row.get('trace', '?')}: {TABLE}.{c} holds {int(row[c])}, not a time "
                             "in ns; the trace was edited or damaged, re-collect it")
    out["migrate"] = out["migrate"].astype(bool)
    return out.reset_index(drop=True)


def feature_matrix(df: pd.DataFrame) -> np.ndarray:
    """(n, MLLB_NR_FEATURES) int64 features in enum order, clamped as BPF clamps them (so the
    training data covers exactly the values the kernel can produce)."""
    X = df[FEATURE_COLUMNS].to_numpy(dtype=np.int64)
    lo, hi = feature_bounds()
    return np.clip(X, lo, hi)


# --------------------------------------------------------------------------- labels

@dataclass(frozen=True)
class LabelRule:
    """The cost-aware labelling rule (module docstring)."""

    migration_cost_ns: int = DEFAULT_MIGRATION_COST_NS
    llc_factor: float = DEFAULT_LLC_FACTOR
    node_factor: float = DEFAULT_NODE_FACTOR

    def __post_init__(self) -> None:
        if self.migration_cost_ns < 0:
            raise ModelError(f"migration cost must be >= 0, not {self.migration_cost_ns} ns")
        for name in ("llc_factor", "node_factor"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 1):
                raise ModelError(f"{name} must be a finite number >= 1, not {v}")

    def cost_ns(self, df: pd.DataFrame) -> np.ndarray:
        same_llc = df["f_same_llc"].to_numpy() != 0
        same_node = df["f_same_node"].to_numpy() != 0
        factor = np.where(same_llc, 1.0, np.where(same_node, self.llc_factor, self.node_factor))
        return self.migration_cost_ns * factor

    def waits(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(stay wait, move wait) per decision, ns: observed for the choice
        taken, BPF's estimate for the other."""
        wait = df["wait_after_ns"].to_numpy(dtype=np.int64)
        migrate = df["migrate"].to_numpy(dtype=bool)
        src_est = df["f_src_wait_est_us"].to_numpy(dtype=np.int64) * 1000
        dst_est = df["f_dst_wait_est_us"].to_numpy(dtype=np.int64) * 1000
        return np.where(migrate, src_est, wait), np.where(migrate, wait, dst_est)

    def gain_ns(self, df: pd.DataFrame) -> np.ndarray:
        """What migrating saves (or saved), ns; the module docstring says how."""
        stay, move = self.waits(df)
        gain = stay - move
        to_idle = (df["f_site"].to_numpy() == 1) | (df["f_dst_idle"].to_numpy() != 0)
        horizon = df["f_dst_idle_est_us"].to_numpy(dtype=np.int64) * 1000
        return np.where(to_idle, np.minimum(gain, horizon), gain)

    def apply(self, df: pd.DataFrame) -> np.ndarray:
        return (self.gain_ns(df) > self.cost_ns(df)).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rule": "migrate iff min(stay_wait - move_wait, dst_idle_est if "
                "dst idle) > cost; the choice taken is observed, the other is BPF's estimate"}


def calibration(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """How BPF's wait estimates compare with the waits observed, per side:
    on the decisions that stayed (observed wait vs ``src_wait_est``) and on
    those that moved (vs ``dst_wait_est``). The labels trust the estimate
    for the choice not taken, so a side whose observed waits run far above
    its estimates tilts them towards the other choice; this says by how much."""
    out: dict[str, dict[str, float]] = {}
    migrate = df["migrate"].to_numpy(dtype=bool)
    for side, mask, col in (("stay", ~migrate, "f_src_wait_est_us"),
                            ("move", migrate, "f_dst_wait_est_us")):
        obs = df["wait_after_ns"].to_numpy(dtype=np.int64)[mask] / 1e3
        est = df[col].to_numpy(dtype=np.int64)[mask].astype(float)
        if len(obs) == 0:
            out[side] = {"n": 0}
            continue
        out[side] = {"n": int(len(obs)),
                     "observed_p50_us": float(np.median(obs)),
                     "estimate_p50_us": float(np.median(est)),
                     "observed_mean_us": float(obs.mean()),
                     "estimate_mean_us": float(est.mean())}
    return out


def label_rule(*, migration_cost_ns: int = DEFAULT_MIGRATION_COST_NS,
               llc_factor: float = DEFAULT_LLC_FACTOR,
               node_factor: float = DEFAULT_NODE_FACTOR) -> LabelRule:
    """The rule with the given costs (it takes nothing from the data)."""
    return LabelRule(int(migration_cost_ns), float(llc_factor), float(node_factor))


def label(df: pd.DataFrame, rule: LabelRule | None = None, **kwargs: Any) -> pd.Series:
    """Labels (1 = migrating was right) of prepared decisions; ``kwargs`` go to
    ``label_rule`` when no rule is given."""
    rule = rule or label_rule(**kwargs)
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
    calibration: dict[str, dict[str, float]]  # observed waits vs BPF's estimates, per side
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
        return [
            f"decisions: {self.rows_total} from {len(self.traces)} trace(s), {self.rows_used} "
            f"usable ({self.rows_dropped} without outcome or features)",
            f"labels: migrate iff the wait it saves exceeds the migration cost "
            f"({r['migration_cost_ns'] / 1e3:g} us in an LLC, x{r['llc_factor']:g} across LLCs, "
            f"x{r['node_factor']:g} across nodes)",
            f"split: {self.split}: {self.rows_train} train, {self.rows_test} held out",
            f"class balance: train stay {cb['train']['stay']} / migrate {cb['train']['migrate']}, "
            f"held-out stay {cb['test']['stay']} / migrate {cb['test']['migrate']}",
            *self._calibration_lines(),
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

    def _calibration_lines(self) -> list[str]:
        out = []
        for side, what in (("stay", "stayed"), ("move", "moved")):
            c = self.calibration.get(side, {})
            if c.get("n"):
                out.append(f"waits of the {c['n']} decisions that {what}: observed median "
                           f"{c['observed_p50_us']:.0f} us / mean {c['observed_mean_us']:.0f} us, "
                           f"BPF estimated {c['estimate_p50_us']:.0f} / {c['estimate_mean_us']:.0f}")
        return out


def _balance(y: np.ndarray) -> dict[str, int]:
    return {"stay": int((y == 0).sum()), "migrate": int((y == 1).sum())}


def train(df: pd.DataFrame, *, test_size: float = 0.25, seed: int = 0, max_depth: int = 8,
          min_samples_leaf: int = 20, class_weight: Any = None,
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
    if len(train_idx) < MIN_SPLIT_ROWS or len(test_idx) < MIN_SPLIT_ROWS:
        # An accuracy on one held-out row is not a result.
        raise ModelError(f"--test-size {test_size} leaves {len(train_idx)} training and {len(test_idx)} "
                         f"held-out decisions; each needs at least {MIN_SPLIT_ROWS}",
                         hint="use a --test-size nearer 0.25, or collect a longer trace")
    tr, te = data.loc[train_idx], data.loc[test_idx]
    rule = rule or label_rule(**label_kwargs)
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
        calibration=calibration(data),
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
