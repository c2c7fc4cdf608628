"""mllb inputs with known contents, for the mllb tests and the bad-input tests."""
from __future__ import annotations

import numpy as np
import pandas as pd

from aios_lab.mllb.model import QuantizedTree
from aios_lab.telemetry.writer import TraceWriter

US = 1000


def small_tree(**kw) -> QuantizedTree:
    """Root tests feature 0 <= 5: left leaf stay; right tests load_diff <= -3:
    left leaf migrate, right leaf stay."""
    base = dict(feature=[0, -1, 4, -1, -1], threshold=[5, 0, -3, 0, 0], left=[1, 0, 3, 0, 0],
                right=[2, 0, 4, 0, 0], leaf=[0, 0, 0, 1, 0], max_depth=2,
                float_threshold=[5.5, 0, -2.5, 0, 0], proba=[0.5, 0, 0.5, 1, 0])
    base.update(kw)
    return QuantizedTree(**base)


def decisions(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Synthetic lb_decisions whose outcomes follow one known rule: moving a
    task is right exactly when its CPU has >= 2 waiting and the other is idle.
    There, staying means a 3-10 ms wait and moving none; elsewhere staying
    waits at most 200 us and moving 0-300 us. The logged estimates are the
    true waits; the observed wait adds up to 50 us of noise. The smallest
    right gain (2.9 ms) beats the largest cost (2 ms, across nodes); the
    largest wrong gain (250 us) is below the smallest cost (500 us)."""
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
        "task_recent_migrations": rng.integers(0, 6, n),
    }
    good = (src_q >= 2) & (f["dst_idle"] == 1)
    src_est = np.where(good, rng.integers(3000, 10_000, n), rng.integers(0, 200, n))
    dst_est = np.where(good, 0, rng.integers(0, 300, n))
    f.update(src_wait_est_us=src_est, dst_wait_est_us=dst_est, wait_gain_us=src_est - dst_est,
             dst_idle_est_us=np.where(f["dst_idle"] == 1, rng.integers(5000, 50_000, n), 0),
             site=np.where(f["dst_idle"] == 1, rng.integers(0, 2, n), 0))
    migrate = rng.random(n) < 0.5
    wait = (np.where(migrate, dst_est, src_est) + rng.integers(0, 50, n)) * US
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


def write_decisions(path, df: pd.DataFrame | None) -> None:
    with TraceWriter(path, {"test": True}) as w:
        if df is not None:
            w.append("lb_decisions", df.to_dict("records"))
