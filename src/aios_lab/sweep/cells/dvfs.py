"""DVFS cells (SIMULATED: the trace-driven simulator of aios_lab.dvfs).

dvfs-sim    one governor on one recorded trace (or a window of it)
dvfs-train  train a frequency table (rl or sweep) on the recorded runs but
            one, and evaluate it and schedutil on the held-out run of each kind

Traces are named as in workloads/dvfs/traces (resolved on the node that
runs the cell, in its own checkout) or given as paths.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CellError
from . import CellKind, Param, register

PRELOAD = ("aios_lab.dvfs.demand", "aios_lab.dvfs.sim", "aios_lab.dvfs.governors", "aios_lab.dvfs.platform",
           "aios_lab.telemetry.trace", "aios_lab.dvfs.experiment", "pandas", "pyarrow.dataset")


def trace_path(name: str) -> Path:
    from ...dvfs.experiment import traces_dir

    p = Path(name)
    return p if p.is_absolute() or "/" in name else traces_dir() / name


def _governor(spec: str):
    from ...dvfs.governors import BUILTIN, TableGovernor
    from ...dvfs.table import load_table

    if spec.startswith("table:"):
        path = spec.removeprefix("table:")
        return TableGovernor(load_table(path), name=Path(path).stem)
    return BUILTIN[spec]()


@register
class DvfsSim(CellKind):
    name = "dvfs-sim"
    summary = "one governor on one recorded trace in the DVFS simulator (simulated)"
    layout = ("governor", "trace")
    preload = PRELOAD
    params = {
        "governor": Param(None, str, "a built-in governor (schedutil, ondemand, ...) or table:PATH"),
        "trace": Param(None, str, "a trace under workloads/dvfs/traces, or a path"),
        "cluster": Param("gs101:big", str, "platform:cluster of the simulated CPUs"),
        "mem_share": Param(0.3, float, "share of the work that does not scale with frequency"),
        "start_s": Param(0.0, float, "replay the trace from this second"),
        "window_s": Param(0.0, float, "replay this many seconds of it (0: to its end)"),
    }

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        from ...dvfs.governors import BUILTIN

        g = p["governor"]
        if not g.startswith("table:") and g not in BUILTIN:
            raise CellError(f"dvfs-sim: unknown governor {g!r}",
                            hint=f"built-in: {', '.join(BUILTIN)}; or table:PATH for a learned table")
        if not 0 <= p["mem_share"] < 1:
            raise CellError(f"dvfs-sim: mem_share={p['mem_share']} must be in [0, 1)")
        if p["start_s"] < 0 or p["window_s"] < 0:
            raise CellError("dvfs-sim: start_s and window_s must be >= 0")
        if not (trace_path(p["trace"]) / "metadata.json").is_file():
            raise CellError(f"dvfs-sim: no trace {p['trace']} ({trace_path(p['trace'])})",
                            hint="name one under workloads/dvfs/traces, or give a trace folder's path")

    def run(self, p: dict[str, Any], rep: int, out: Path) -> dict[str, Any]:
        from ...dvfs.demand import from_trace
        from ...dvfs.platform import load_cluster
        from ...dvfs.sim import simulate

        cluster = load_cluster(p["cluster"])
        demand = from_trace(trace_path(p["trace"]))
        if p["window_s"] or p["start_s"]:
            demand = demand.window(p["start_s"], p["window_s"] or demand.duration_s)
        res = simulate(cluster, demand.fold(cluster.nr_cpus), _governor(p["governor"]), mem_share=p["mem_share"])
        return res.as_dict()


@register
class DvfsTrain(CellKind):
    name = "dvfs-train"
    summary = "train a frequency table on the recorded traces, evaluate it on held-out runs (simulated)"
    layout = ("method", "test_run", "seed")
    preload = PRELOAD + ("aios_lab.dvfs.learners", "aios_lab.dvfs.rl", "aios_lab.dvfs.sweep")
    params = {
        "method": Param(None, str, "rl (tabular Q-learning) or sweep", ("rl", "sweep")),
        "test_run": Param(3, int, "the recorded run of each kind held out for evaluation"),
        "seed": Param(0, int, "RL seed"),
        "episodes": Param(300, int, "RL episodes"),
        "refine_passes": Param(1, int, "sweep: coordinate-descent passes"),
        "cluster": Param("gs101:big", str, "platform:cluster of the simulated CPUs"),
        "mem_share": Param(0.3, float, "share of the work that does not scale with frequency"),
    }

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        from ...dvfs.experiment import RUNS

        if p["test_run"] not in RUNS:
            raise CellError(f"dvfs-train: test_run={p['test_run']}: the recorded runs are "
                            f"{', '.join(map(str, RUNS))}")
        if p["episodes"] < 1 or p["refine_passes"] < 0:
            raise CellError("dvfs-train: episodes must be >= 1 and refine_passes >= 0")

    def run(self, p: dict[str, Any], rep: int, out: Path) -> dict[str, Any]:
        from ...dvfs import learners
        from ...dvfs.experiment import evaluate, load_demands, split
        from ...dvfs.governors import Schedutil, TableGovernor
        from ...dvfs.platform import load_cluster
        from ...dvfs.table import save_table

        cluster = load_cluster(p["cluster"])
        train_paths, test_paths = split(p["test_run"])
        train = [d.fold(cluster.nr_cpus) for d in load_demands(train_paths)]
        test = [d.fold(cluster.nr_cpus) for d in load_demands(test_paths)]
        table = learners.make(p["method"], cluster=cluster, seed=p["seed"], episodes=p["episodes"],
                              mem_share=p["mem_share"], refine_passes=p["refine_passes"]).fit(train).table_
        save_table(out / "table.json", table)
        learned = evaluate(cluster, test, [TableGovernor(table, name="learned")], mem_share=p["mem_share"])
        base = evaluate(cluster, test, [Schedutil()], mem_share=p["mem_share"])
        e, m = float(sum(r.energy_j for r in learned)), int(sum(r.misses for r in learned))
        be, bm = float(sum(r.energy_j for r in base)), int(sum(r.misses for r in base))
        return {"energy_j": e, "misses": m, "schedutil_energy_j": be, "schedutil_misses": bm,
                "energy_x": e / be, "misses_x": m / max(bm, 1), "test": [d.name for d in test],
                "table": "table.json", "simulated": True}
