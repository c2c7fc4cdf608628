"""mllb training: labels, time split, train(), and `aios-lab train lb`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from aios_lab.cli_train import train as train_group
from aios_lab.errors import ModelError, TraceError
from aios_lab.mllb.model import FEATURES, load_model
from aios_lab.mllb.train import (
    LabelRule,
    feature_matrix,
    label,
    label_rule,
    load_decisions,
    prepare,
    split_by_time,
    train,
)
from aios_lab.telemetry.writer import TraceWriter

US = 1000


def decisions(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Synthetic lb_decisions whose outcomes follow one known rule: moving a
    task is right exactly when its CPU has >= 2 waiting and the other is idle.
    Right moves run within 4 us, wrong ones wait 50-200 us; right stays wait
    5-20 us, wrong ones 1-5 ms. Runs keep the task's usual length (not cold)."""
    rng = np.random.default_rng(seed)
    src_q, dst_q = rng.integers(0, 6, n), rng.integers(0, 6, n)
    src_load, dst_load = rng.integers(0, 1025, n), rng.integers(0, 1025, n)
    runtime_us = rng.integers(10, 5000, n)
    f = {
        "src_nr_queued": src_q, "dst_nr_queued": dst_q, "src_load": src_load,
        "dst_load": dst_load, "load_diff": src_load - dst_load, "nr_diff": src_q - dst_q,
        "src_idle": rng.integers(0, 2, n), "dst_idle": rng.integers(0, 2, n),
        "same_llc": rng.integers(0, 2, n), "same_node": rng.integers(0, 2, n),
        "task_runtime_us": runtime_us, "task_since_ran_us": rng.integers(0, 100_000, n),
        "task_weight": np.full(n, 100), "task_wait_us": rng.integers(0, 1000, n),
        "task_recent_migrations": rng.integers(0, 6, n), "site": rng.integers(0, 2, n),
    }
    good = (src_q >= 2) & (f["dst_idle"] == 1)
    migrate = rng.random(n) < 0.5
    wait = np.where(migrate, np.where(good, rng.integers(1, 4, n), rng.integers(50, 200, n)),
                    np.where(good, rng.integers(1000, 5000, n), rng.integers(5, 20, n))) * US
    df = pd.DataFrame({
        "ts_ns": np.arange(n, dtype=np.int64) * 10_000 + 1_000_000,
        "pid": rng.integers(100, 140, n).astype(np.int32),
        "src_cpu": rng.integers(0, 4, n), "dst_cpu": rng.integers(0, 4, n),
        "site": np.where(f["site"] == 1, "pull", "wakeup"),
        "migrate": migrate, "by_model": np.zeros(n, dtype=bool),
        "wait_after_ns": wait,
        "run_after_ns": (runtime_us * US * rng.uniform(0.8, 1.2, n)).astype(np.int64),
        **{f"f_{k}": np.asarray(v, dtype=np.int64) for k, v in f.items()},
    })
    df["ran_cpu"] = np.where(migrate, df["dst_cpu"], df["src_cpu"])
    return df


def write_trace(path, df: pd.DataFrame | None) -> None:
    with TraceWriter(path, {"test": True}) as w:
        if df is not None:
            w.append("lb_decisions", df.to_dict("records"))


# --------------------------------------------------------------------------- labels

def test_default_rule_recovers_the_known_rule():
    df = prepare(decisions())
    rule = label_rule(df)
    good = ((df["f_src_nr_queued"] >= 2) & (df["f_dst_idle"] == 1)).to_numpy()
    assert (label(df, rule).to_numpy() == good).all()
    # Counterfactual thresholds: between the two outcome bands of each side.
    assert 4 * US <= rule.wait_good_ns <= 20 * US
    assert 50 * US <= rule.wait_bad_ns <= 1000 * US
    assert "stays" in rule.derived["wait_good_ns"]
    assert "migrations" in rule.derived["wait_bad_ns"]


def test_label_rule_cases():
    rows = pd.DataFrame({
        "migrate":       [True, True, True, True, False, False],
        "wait_after_ns": [5, 50, 5, 5, 50, 101],
        "run_after_ns":  [1000_000, 0, 250_000, 90_000, 0, 0],
        "f_task_runtime_us": [1000, 10, 100, 0, 10, 10],
    })
    rule = LabelRule(wait_good_ns=10, wait_bad_ns=100, cold_factor=2.0, cold_min_ns=50_000)
    # fast migration; slow migration; cold migration (2.5x runtime);
    # no history -> never cold; short stay; long stay.
    assert rule.apply(rows).tolist() == [1, 0, 0, 1, 0, 1]
    warm = LabelRule(wait_good_ns=10, wait_bad_ns=100, cold_factor=None)
    assert warm.apply(rows).tolist() == [1, 0, 1, 1, 0, 1]


def test_label_rule_given_thresholds_and_small_sides():
    df = prepare(decisions(200))
    r = label_rule(df, wait_good_ns=7, wait_bad_ns=9)
    assert (r.wait_good_ns, r.wait_bad_ns) == (7, 9)
    assert r.derived == {"wait_good_ns": "given", "wait_bad_ns": "given"}
    only_stays = df.assign(migrate=False)
    assert "all decisions" in label_rule(only_stays).derived["wait_bad_ns"]


# --------------------------------------------------------------------------- data

def test_prepare_drops_unknown_outcomes_and_clamps():
    df = decisions(100)
    df["wait_after_ns"] = df["wait_after_ns"].astype(float)
    df.loc[[3, 7], "wait_after_ns"] = np.nan
    df.loc[0, "f_task_since_ran_us"] = 10 ** 12
    df.loc[1, "f_load_diff"] = -(10 ** 12)
    p = prepare(df)
    assert len(p) == 98 and p["wait_after_ns"].dtype == np.int64
    X = feature_matrix(p)
    assert X.dtype == np.int64 and X.shape == (98, 16)
    assert X[0, FEATURES.index("task_since_ran_us")] == 10 ** 9
    assert X[1, FEATURES.index("load_diff")] == -(10 ** 9)
    with pytest.raises(ModelError, match="lack column"):
        prepare(df.drop(columns=["f_site"]))


def test_split_is_by_time_per_trace():
    a, b = decisions(40, seed=1), decisions(80, seed=2)
    a["trace"], b["trace"] = "a", "b"
    df = prepare(pd.concat([a, b.iloc[::-1]], ignore_index=True))  # b out of order
    tr, te = split_by_time(df, 0.25)
    assert len(te) == 10 + 20 and len(tr) == 30 + 60
    for name in ("a", "b"):
        g_tr = df.loc[tr][df.loc[tr, "trace"] == name]
        g_te = df.loc[te][df.loc[te, "trace"] == name]
        assert g_tr["ts_ns"].max() < g_te["ts_ns"].min()


# --------------------------------------------------------------------------- train

def test_train_learns_the_known_rule():
    mf, rep = train(decisions(4000), max_depth=6, model_version=5)
    assert rep.accuracy >= 0.97 and rep.accuracy > rep.baseline_accuracy
    assert rep.agreement == 1.0 and rep.agreement_train == 1.0
    assert rep.rows_train == 3000 and rep.rows_test == 1000 and rep.rows_dropped == 0
    assert sum(map(sum, rep.confusion)) == 1000
    assert sum(rep.class_balance["test"].values()) == 1000
    top2 = list(rep.importances)[:2]
    assert set(top2) == {"src_nr_queued", "dst_idle"}
    assert "by time" in rep.split
    # The thresholds used travel with the model.
    assert mf.training["label_rule"]["wait_good_ns"] == rep.label_rule["wait_good_ns"]
    assert mf.version == 5 and mf.tree.max_depth <= 6
    mf.validate()
    assert any("held-out accuracy" in ln for ln in rep.lines())


def test_train_rejects_too_little_data():
    with pytest.raises(ModelError, match="usable decisions"):
        train(decisions(10))


# --------------------------------------------------------------------------- traces and CLI

def test_load_decisions(tmp_path):
    write_trace(tmp_path / "t1", decisions(50, seed=1))
    write_trace(tmp_path / "t2", decisions(30, seed=2))
    df = load_decisions([tmp_path / "t1", tmp_path / "t2"])
    assert len(df) == 80 and df["trace"].nunique() == 2
    write_trace(tmp_path / "empty", None)
    with pytest.raises(ModelError, match="no load-balancing decisions"):
        load_decisions([tmp_path / "t1", tmp_path / "empty"])
    (tmp_path / "t2" / "lb_decisions.parquet").unlink()
    with pytest.raises(TraceError, match="no lb_decisions table"):
        load_decisions([tmp_path / "t2"])
    with pytest.raises(ModelError, match="no traces"):
        load_decisions([])


def test_cli_train_lb_writes_a_loadable_model(tmp_path):
    write_trace(tmp_path / "trace", decisions(1200))
    out = tmp_path / "models" / "lb.json"
    out.parent.mkdir()
    res = CliRunner().invoke(train_group, ["lb", "--trace", str(tmp_path / "trace"),
                                           "--out", str(out), "--max-depth", "5",
                                           "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "held-out accuracy" in res.output and "agreement" in res.output
    assert f"model written to {out}" in res.output
    mf = load_model(out)
    assert mf.training["params"]["seed"] == 3 and mf.tree.max_depth <= 5


def test_cli_train_lb_clean_error_without_decisions(tmp_path):
    write_trace(tmp_path / "trace", None)
    out = tmp_path / "lb.json"
    res = CliRunner().invoke(train_group, ["lb", "--trace", str(tmp_path / "trace"),
                                           "--out", str(out)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: trace ")
    assert "no load-balancing decisions" in lines[0]
    assert not out.exists()


def test_cli_train_lb_missing_trace(tmp_path):
    res = CliRunner().invoke(train_group, ["lb", "--trace", str(tmp_path / "nope"),
                                           "--out", str(tmp_path / "lb.json")])
    assert res.exit_code == 1 and "Error: trace" in res.output
    assert "Traceback" not in res.output
