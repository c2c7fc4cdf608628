"""Train and evaluate frequency policies on recorded traces (SIMULATED).

The recorded traces ship in workloads/dvfs/traces (per-interval time) and
workloads/dvfs/traces-switches (with the whole switch stream, for the
per-activation demand; benchmarks/dvfs_record.sh records them again): three
kinds of demand, five runs each. Which folder and loader a run uses is its
demand unit (dvfs.units). By default run 3 of each kind is held out and the
other four train (`split(test_run)` holds out another run, for
cross-validation).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from . import units
from .demand import Demand
from .governors import BUILTIN, Governor, Static, table_governor_for
from .platform import Cluster
from .sim import SimResult, simulate
from .table import FreqTable

KINDS = ("bursty", "frames", "build")
RUNS = (1, 2, 3, 4, 5)
TEST_RUN = 3
SIMULATED = "SIMULATED: trace-driven DVFS simulator (no cpufreq or energy counters on this machine)"


def traces_dir(unit: str = units.DEFAULT) -> Path:
    return units.get(unit).traces_dir()


def split(test_run: int = TEST_RUN, unit: str = units.DEFAULT) -> tuple[list[Path], list[Path]]:
    """Run `test_run` of each kind held out, every other recorded run trains."""
    if test_run not in RUNS:
        raise ModelError(f"no recorded run {test_run}: the runs are {', '.join(map(str, RUNS))}")
    d = traces_dir(unit)
    train = [d / f"{k}-{r}" for k in KINDS for r in RUNS if r != test_run]
    test = [d / f"{k}-{test_run}" for k in KINDS]
    return train, test


# Issue 5's target: at least 20 % less energy than schedutil at no more than
# 5 % more deadline misses, on held-out traces.
TARGET_ENERGY_X = 0.80
TARGET_MISSES_X = 1.05


def target_verdict(governor: str, totals: dict, schedutil: dict, where: str = "") -> str:
    """One line judging `totals` ({"energy_j", "misses"} over held-out traces)
    against schedutil's over the same traces, by the target above."""
    e = totals["energy_j"] / schedutil["energy_j"]
    m = totals["misses"] / max(schedutil["misses"], 1)
    met = e <= TARGET_ENERGY_X and m <= TARGET_MISSES_X
    return (f"target ({governor}: >= 20% less energy than schedutil at <= 5% more misses){where}: "
            f"energy x{e:.3f}, misses x{m:.3f} -> {'MET' if met else 'NOT MET'}")


# Issue 22's second target: at least 80 % of the clairvoyant planner's saving
# (dvfs.bounds, 600 ms of foresight) captured, at the same miss allowance.
TARGET_CAPTURE = 0.80


def capture_verdict(governor: str, totals: dict, schedutil: dict, clairvoyant: dict, where: str = "") -> str:
    """One line: the share of the clairvoyant planner's energy saving over
    schedutil that `totals` captures, judged at <= TARGET_MISSES_X misses."""
    saving = schedutil["energy_j"] - clairvoyant["energy_j"]
    share = (schedutil["energy_j"] - totals["energy_j"]) / saving if saving > 0 else float("nan")
    m = totals["misses"] / max(schedutil["misses"], 1)
    met = share >= TARGET_CAPTURE and m <= TARGET_MISSES_X
    return (f"target ({governor}: >= 80% of the clairvoyant's saving at <= 5% more misses){where}: "
            f"{100 * share:.0f} % captured, misses x{m:.3f} -> {'MET' if met else 'NOT MET'}")


def load_demands(traces: list[Path], unit: str = units.DEFAULT) -> list[Demand]:
    load = units.get(unit).load
    return [load(p) for p in traces]


def evaluate(cluster: Cluster, demands: list[Demand], governors: list[Governor], *,
             mem_share: float = 0.3) -> list[SimResult]:
    return [simulate(cluster, d, g, mem_share=mem_share) for d in demands for g in governors]


def oracle_static(cluster: Cluster, demand: Demand, *, miss_budget: int, mem_share: float = 0.3) -> SimResult:
    """The best fixed OPP for this very demand (an oracle: it sees the test trace):
    least energy among OPPs that miss no more than `miss_budget`, else fewest misses."""
    runs = [simulate(cluster, demand, Static(o), mem_share=mem_share) for o in range(cluster.nr_opps)]
    ok = [r for r in runs if r.misses <= miss_budget]
    best = min(ok, key=lambda r: r.energy_j) if ok else min(runs, key=lambda r: (r.misses, r.energy_j))
    best.governor = "oracle-static"
    return best


def builtin_governors() -> list[Governor]:
    return [cls() for cls in BUILTIN.values()]


def table_governor(table: FreqTable, name: str) -> Governor:
    return table_governor_for(table, name=name)


def save_curve_png(curve: list[dict], path: Path, title: str) -> Path:
    """Learning curve: training reward per episode and held-out energy/misses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import open_atomic

    import numpy as np

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    eps = [r["episode"] for r in curve]
    rewards = np.array([r["reward"] for r in curve], dtype=float)
    a1.plot(eps, rewards, lw=0.5, alpha=0.5, label="per episode (a random window)")
    k = min(25, len(rewards))
    if k > 1:  # episodes replay different windows, so the raw reward is noisy: show a running mean too
        a1.plot(eps[k - 1:], np.convolve(rewards, np.ones(k) / k, mode="valid"), lw=1.5,
                label=f"mean of {k}")
    a1.set_ylabel("training reward")
    a1.legend(loc="lower right", fontsize=8)
    a1.set_title(f"{title} (simulated)")
    a3 = a2.twinx()
    for key_e, key_m, label, style in (("train_energy_j", "train_misses", "training traces", "-"),
                                       ("test_energy_j", "test_misses", "held-out traces", "--")):
        pts = [r for r in curve if key_e in r]
        if pts:
            x = [r["episode"] for r in pts]
            a2.plot(x, [r[key_e] for r in pts], "o" + style, color="tab:blue", label=f"energy, {label}")
            a3.plot(x, [r[key_m] for r in pts], "s" + style, color="tab:red", label=f"misses, {label}")
    a3.set_ylabel("deadline misses (greedy table)")
    a2.legend(loc="upper left", fontsize=8)
    a3.legend(loc="upper right", fontsize=8)
    a2.set_xlabel("episode")
    a2.set_ylabel("energy, J (greedy table)")
    fig.tight_layout()
    path = Path(path)
    try:
        with open_atomic(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
