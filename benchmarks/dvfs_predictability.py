"""How predictable is a task's next activation from its own past? (issue 22)

Per kind of recorded demand (workloads/dvfs/traces-switches, all five runs),
over the workload's tasks (at least 5 activations and 50 ms of run), it
prints:
- the lag-1 correlation of consecutive activation lengths of one task
  (pooled over tasks): near 0, the next length is not in the past ones;
- their mean and coefficient of variation;
- the per-task rule's error: |next - estimate| summed over activations, as a
  share of their work, for the kernel's util_est rule (what the freq policy
  and dvfs.task_signal compute) and for an oracle constant, the task's own
  median over the whole trace (the best a fixed per-task number could do
  in absolute error, with hindsight).
This is what bounds the per-task rung of the ladder: where the lengths are
uncorrelated, no estimator over a task's history can know a queued
activation's work, which the "queued work read" rung reads exactly.

    .venv/bin/python benchmarks/dvfs_predictability.py
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from aios_lab.dvfs import experiment as ex
from aios_lab.dvfs.activation import activations
from aios_lab.dvfs.task_signal import util_est_rule
from aios_lab.telemetry.trace import Trace

MIN_ACTIVATIONS, MIN_RUN_MS = 5, 50.0


def task_lengths(path) -> list[np.ndarray]:
    """Per workload task of one trace, its activation lengths (ms) in arrival order."""
    tr = Trace.open(path)
    collector = (tr.metadata.get("collector") or {}).get("pid")
    a = activations(tr.arrow("switches").to_pandas(), chunk_ns=int((tr.metadata.get("interval_ms") or 10) * 1e6),
                    drop_tgid=collector)
    df = (pd.DataFrame({"act": a.activation, "task": a.task, "t": a.arrival_ns})
          .groupby("act").agg(task=("task", "first"), t=("t", "min")))
    df["ms"] = a.lengths_ns()[df.index] / 1e6
    out = []
    for _, g in df.sort_values("t").groupby("task"):
        lengths = g["ms"].to_numpy()
        if len(lengths) >= MIN_ACTIVATIONS and lengths.sum() >= MIN_RUN_MS:
            out.append(lengths)
    return out


def main() -> int:
    print("activation lengths per task, workloads/dvfs/traces-switches, runs "
          f"{', '.join(map(str, ex.RUNS))} (tasks with >= {MIN_ACTIVATIONS} activations and >= {MIN_RUN_MS:g} ms)")
    for kind in ex.KINDS:
        prev, nxt = [], []
        err_rule = err_median = work = 0.0
        for run in ex.RUNS:
            for lengths in task_lengths(ex.traces_dir("activation") / f"{kind}-{run}"):
                prev += lengths[:-1].tolist()
                nxt += lengths[1:].tolist()
                est = lengths[0]
                for x in lengths[1:]:
                    err_rule += abs(x - est)
                    est = util_est_rule(est, x)
                err_median += float(np.abs(lengths[1:] - np.median(lengths)).sum())
                work += float(lengths[1:].sum())
        y = np.array(nxt)
        print(f"{kind:7} {len(y):6} activations  lag-1 correlation {np.corrcoef(prev, nxt)[0, 1]:+.3f}  "
              f"mean {y.mean():.2f} ms  CV {y.std() / y.mean():.2f}  |error| / work: util_est "
              f"{err_rule / work:.2f}, own median {err_median / work:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
