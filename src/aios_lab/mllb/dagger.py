"""Train mllb's model over runs of a workload, each run under the model so far (DAgger).

What `bench-schedulers` (and so `make demo`) does before a `<policy>-model`
run when no model is given: the first run is in collect mode (the heuristic
decides), and every later one deploys the model trained so far and logs
*its* decisions. Each model is trained on every run's decisions (data
aggregation, as in DAgger): a model trained only on the heuristic's
decisions meets states in deployment that the heuristic never led to, and
the counterfactual labels make the model's own decisions usable as
training data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..sched import policy as pol
from ..workloads import Workload
from .model import ModelFile, save_model
from .session import LearningRun
from .train import label_rule, train


def train_model(policy_name: str, wl: Workload, runs: int, out: Path,
                echo: Callable[[str], None] = lambda m: None,
                migration_cost_ns: int | None = None) -> tuple[ModelFile, dict]:
    """Train the policy's model on `runs` runs of `wl`, save it to `out`.
    `migration_cost_ns` is the labelling rule's cost (None: its default)."""
    import pandas as pd

    rule = label_rule() if migration_cost_ns is None else label_rule(migration_cost_ns=migration_cost_ns)
    frames, mf, report = [], None, None
    for r in range(runs):
        mode = "collect" if mf is None else "model"
        with LearningRun(policy=pol.get(policy_name), mode=mode, model=mf,
                         model_source=f"training round {r}") as run:
            wl.run()
            run.poll()
            stats = run.dep.read_stats()
            frames.append(run.window().assign(trace=f"{mode}-{r + 1}"))
        echo(f"training run {r + 1}/{runs} ({mode} mode): {len(frames[-1])} decisions logged, "
             f"{stats.get('MIGRATIONS', 0)} migrations")
        mf, report = train(pd.concat(frames, ignore_index=True), rule=rule)
        if r + 1 < runs:
            echo(f"  model {r + 1}: held-out accuracy {report.accuracy:.3f}")
    assert mf is not None and report is not None
    save_model(out, mf)
    for line in report.lines():
        echo(f"  {line}")
    echo(f"model written to {out}")
    return mf, report.to_dict()
