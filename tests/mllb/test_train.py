"""mllb training: labels, time split, train(), and `aios-lab train lb`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.errors import ModelError, TraceError
from aios_lab.mllb.model import FEATURES, load_model
from aios_lab.mllb.train import (
    LabelRule,
    calibration,
    feature_matrix,
    label,
    label_rule,
    load_decisions,
    prepare,
    split_by_time,
    train,
)

from tests.helpers.mllb import decisions, write_decisions

US = 1000


# --------------------------------------------------------------------------- labels

def test_default_rule_recovers_the_known_rule():
    df = prepare(decisions())
    good = ((df["f_src_nr_queued"] >= 2) & (df["f_dst_idle"] == 1)).to_numpy()
    assert (label(df, label_rule()).to_numpy() == good).all()


def test_label_rule_cases():
    ms = 1_000_000
    rows = pd.DataFrame({
        "migrate":           [True, True, True, False, False, False, True, True, False],
        "wait_after_ns":     [0, 0, 2 * ms, 3 * ms, 300_000, 3 * ms, 0, 0, 3 * ms],
        "f_src_wait_est_us": [1000, 400, 3000, 0, 0, 0, 1500, 5000, 0],
        "f_dst_wait_est_us": [0, 0, 0, 0, 0, 2000, 0, 0, 0],
        "f_dst_idle":        [1, 1, 1, 1, 1, 0, 1, 1, 1],
        "f_dst_idle_est_us": [9000, 9000, 9000, 9000, 9000, 0, 9000, 200, 200],
        "f_site":            [0, 0, 0, 0, 1, 0, 1, 1, 0],
        "f_same_llc":        [1, 1, 1, 1, 1, 1, 0, 1, 1],
        "f_same_node":       [1, 1, 1, 1, 1, 1, 1, 1, 1],
    })
    rule = LabelRule()  # 500 us, x2 across LLCs, x4 across nodes
    # moved, saved 1 ms; moved, saved 0.4 ms (< cost); moved but waited 2 ms
    # of the 3 it saved; stayed 3 ms where dst was free; stayed 0.3 ms;
    # stayed 3 ms where busy dst would have taken 2; pulled across LLCs
    # saving 1.5 ms (> 1 ms); pulled saving 5 ms onto a CPU that idles
    # 200 us; stayed 3 ms where dst idles 200 us.
    assert rule.apply(rows).tolist() == [1, 0, 1, 1, 0, 1, 1, 0, 0]
    assert rule.gain_ns(rows).tolist()[7:] == [200_000, 200_000]
    assert LabelRule(migration_cost_ns=800_000).apply(rows).tolist() == [1, 0, 1, 1, 0, 1, 0, 0, 0]
    assert rule.to_dict()["migration_cost_ns"] == 500_000


def test_calibration_compares_each_side_with_its_estimate():
    rows = pd.DataFrame({
        "migrate": [False, False, False, True],
        "wait_after_ns": [1_000_000, 3_000_000, 2_000_000, 400_000],
        "f_src_wait_est_us": [0, 100, 200, 9999],
        "f_dst_wait_est_us": [9999, 9999, 9999, 100],
    })
    c = calibration(rows)
    assert c["stay"] == {"n": 3, "observed_p50_us": 2000.0, "estimate_p50_us": 100.0,
                         "observed_mean_us": 2000.0, "estimate_mean_us": 100.0}
    assert c["move"]["n"] == 1 and c["move"]["observed_p50_us"] == 400.0
    assert c["move"]["estimate_mean_us"] == 100.0
    assert calibration(rows[rows["migrate"]])["stay"] == {"n": 0}


def test_label_rule_rejects_bad_costs():
    with pytest.raises(ModelError, match="migration cost"):
        label_rule(migration_cost_ns=-1)
    with pytest.raises(ModelError, match="llc_factor"):
        label_rule(llc_factor=float("nan"))
    with pytest.raises(ModelError, match="node_factor"):
        label_rule(node_factor=0.5)


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
    assert X.dtype == np.int64 and X.shape == (98, len(FEATURES))
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
    # The waits BPF estimated carry the rule.
    assert list(rep.importances)[0] in {"src_wait_est_us", "wait_gain_us", "dst_wait_est_us"}
    assert "by time" in rep.split
    # The thresholds used travel with the model.
    assert mf.training["label_rule"]["migration_cost_ns"] == rep.label_rule["migration_cost_ns"] == 500_000
    assert mf.version == 5 and mf.tree.max_depth <= 6
    mf.validate()
    assert any("held-out accuracy" in ln for ln in rep.lines())
    # Estimates equal the true waits here; observed adds 0-49 us of noise.
    for side in ("stay", "move"):
        c = rep.calibration[side]
        assert c["n"] > 1000 and 0 <= c["observed_mean_us"] - c["estimate_mean_us"] < 50
    assert any("that stayed: observed median" in ln for ln in rep.lines())


def test_train_rejects_too_little_data():
    with pytest.raises(ModelError, match="usable decisions"):
        train(decisions(10))


# --------------------------------------------------------------------------- traces and CLI

def test_load_decisions(tmp_path):
    write_decisions(tmp_path / "t1", decisions(50, seed=1))
    write_decisions(tmp_path / "t2", decisions(30, seed=2))
    df = load_decisions([tmp_path / "t1", tmp_path / "t2"])
    assert len(df) == 80 and df["trace"].nunique() == 2
    write_decisions(tmp_path / "empty", None)
    with pytest.raises(ModelError, match="no load-balancing decisions"):
        load_decisions([tmp_path / "t1", tmp_path / "empty"])
    (tmp_path / "t2" / "lb_decisions.parquet").unlink()
    with pytest.raises(TraceError, match="no lb_decisions table"):
        load_decisions([tmp_path / "t2"])
    with pytest.raises(ModelError, match="no traces"):
        load_decisions([])


def test_cli_train_lb_writes_a_loadable_model(tmp_path):
    write_decisions(tmp_path / "trace", decisions(1200))
    out = tmp_path / "models" / "lb.json"
    out.parent.mkdir()
    res = CliRunner().invoke(main, ["train", "lb", "--trace", str(tmp_path / "trace"),
                                    "--out", str(out), "--max-depth", "5",
                                    "--seed", "3", "--migration-cost-us", "250"])
    assert res.exit_code == 0, res.output
    assert "held-out accuracy" in res.output and "agreement" in res.output
    assert f"model written to {out}" in res.output
    mf = load_model(out)
    assert mf.training["params"]["seed"] == 3 and mf.tree.max_depth <= 5
    assert mf.training["label_rule"]["migration_cost_ns"] == 250_000


def test_cli_train_lb_clean_error_without_decisions(tmp_path):
    write_decisions(tmp_path / "trace", None)
    out = tmp_path / "lb.json"
    res = CliRunner().invoke(main, ["train", "lb", "--trace", str(tmp_path / "trace"),
                                    "--out", str(out)])
    assert res.exit_code == 3
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: trace ")
    assert "no load-balancing decisions" in lines[0]
    assert not out.exists()


def test_cli_train_lb_missing_trace(tmp_path):
    res = CliRunner().invoke(main, ["train", "lb", "--trace", str(tmp_path / "nope"),
                                    "--out", str(tmp_path / "lb.json")])
    assert res.exit_code == 3 and "Error: trace" in res.output
    assert "Traceback" not in res.output
