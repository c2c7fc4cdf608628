"""Learning: `aios-lab train` learns models from collected traces (mllb's
decision tree) and from the DVFS simulator (frequency tables)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .group import AiosGroup
from .options import migration_cost_option, simulator_options, unit_option
from .types import SEED, finite


@click.group("train", cls=AiosGroup)
def train() -> None:
    """Learn models from collected traces.

    Example: aios-lab train lb --trace traces/run1 --out models/lb.json
    """


@train.command("lb")
@click.option("--trace", "traces", multiple=True, required=True,
              type=click.Path(path_type=Path),
              help="Trace directory with lb_decisions (repeat for several).")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Model file to write (JSON; replaced atomically).")
@click.option("--max-depth", default=8, show_default=True, type=click.IntRange(1, 16),
              help="Tree depth (mllb walks at most 16).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Tree random_state.")
@click.option("--test-size", default=0.25, show_default=True,
              type=finite(0, 1, min_open=True, max_open=True),
              help="Fraction of each trace, the latest decisions, held out for evaluation.")
@migration_cost_option
@click.option("--json", "as_json", is_flag=True, help="Print the training report as JSON.")
def lb(traces: tuple[Path, ...], out: Path, max_depth: int, seed: int,
       test_size: float, migration_cost_us: float, as_json: bool) -> None:
    """Train the mllb load-balancing decision tree from logged decisions.

    Prints held-out accuracy, the confusion matrix and the agreement between
    the float tree and the integer tree the kernel runs.

    Example: aios-lab train lb --trace traces/run1 --trace traces/run2 --out lb.json
    """
    from aios_lab.mllb.model import save_model
    from aios_lab.mllb.train import load_decisions, train as train_model
    from aios_lab.safe_output import check_output

    check_output(out, inputs=traces, what="model file")
    df = load_decisions(traces)
    model_file, report = train_model(df, test_size=test_size, seed=seed, max_depth=max_depth,
                                     migration_cost_ns=int(migration_cost_us * 1000))
    path = save_model(out, model_file)
    if as_json:
        click.echo(json.dumps({"model": str(path), "version": model_file.version,
                               "sha256": model_file.sha256, "report": report.to_dict()},
                              indent=2, default=str))
        return
    for line in report.lines():
        click.echo(line)
    click.echo(f"model written to {path} (version {model_file.version}, "
               f"sha256 {model_file.sha256[:16]}...)")


@train.command("freq")
@click.option("--method", type=click.Choice(["rl", "sweep"]), default="rl", show_default=True,
              help="rl: tabular Q-learning on the simulator (MobiRL-style); sweep: sample every OPP per "
                   "state bucket and keep the best (CRAVE-style table governor).")
@click.option("--trace", "traces", multiple=True, type=click.Path(path_type=Path),
              help="Training trace (repeat). Default: the recorded traces in workloads/dvfs/traces, every run but 3.")
@click.option("--test-trace", "test_traces", multiple=True, type=click.Path(path_type=Path),
              help="Held-out trace (repeat). Default: the recorded run 3 of each kind.")
@unit_option
@simulator_options
@click.option("--episodes", default=300, show_default=True, type=click.IntRange(1, None), help="RL episodes.")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="RL: the Q-learning agent's random seed (recorded in the table).")
@click.option("--refine-passes", default=1, show_default=True, type=click.IntRange(0, 10),
              help="Sweep: coordinate-descent passes on whole training runs after the sampled choice "
                   "(each costs ~100 simulations).")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Frequency table to write (JSON; replaced atomically).")
@click.option("--curve", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="RL: write the learning curve as a PNG here (default: next to --out).")
@click.option("--json", "as_json", is_flag=True,
              help="Progress on stderr; the table path and held-out results as JSON on stdout.")
def freq(method, traces, test_traces, unit, cluster, mem_share, episodes, seed, refine_passes, out, curve,
         as_json) -> None:
    """Learn a frequency table (state -> perf level) on the DVFS simulator.

    Every figure printed is SIMULATED: these machines have no cpufreq or
    energy counters. Deploy the table with `aios-lab deploy freq --model OUT`.

    Example: aios-lab train freq --method sweep --out freq.json
    """
    from aios_lab.dvfs import experiment as ex, learners
    from aios_lab.dvfs.governors import Schedutil
    from aios_lab.dvfs.platform import load_cluster
    from aios_lab.dvfs.table import save_table

    from aios_lab.safe_output import check_output

    cl = load_cluster(cluster)
    d_train, d_test = ex.split(unit=unit)
    train_paths = list(traces) or d_train
    test_paths = list(test_traces) or ([] if traces else d_test)
    check_output(out, inputs=train_paths + test_paths, what="frequency table")
    same = {os.path.realpath(p) for p in train_paths} & {os.path.realpath(p) for p in test_paths}
    if same:
        click.echo(f"WARNING: {len(same)} held-out trace(s) are also training traces ({sorted(same)[0]} ...): "
                   "the held-out figures below are not held out", err=True)
    if curve is not None:
        check_output(curve, inputs=train_paths + test_paths + [out], what="learning curve")
    train_d = ex.load_demands(train_paths, unit)
    test_d = ex.load_demands(test_paths, unit)
    echo = lambda m: click.echo(m, err=as_json)  # noqa: E731  (stdout is the JSON then)
    echo(f"{ex.SIMULATED}\ncluster {cl.platform}:{cl.name} ({cl.nr_cpus}x {cl.core}, {cl.nr_opps} OPPs, "
               f"{cl.freqs_khz[0] // 1000}-{cl.max_khz // 1000} MHz); {len(train_d)} training, "
               f"{len(test_d)} held-out traces ({unit} demand); method {method}")
    learner = learners.make(method, cluster=cl, seed=seed, episodes=episodes, mem_share=mem_share,
                            refine_passes=refine_passes).fit(train_d, test=test_d, progress=echo)
    learner.table_.meta.update(train_traces=[str(p) for p in train_paths], test_traces=[str(p) for p in test_paths],
                               seed=seed, unit=unit)
    save_table(out, learner.table_)
    echo(f"table written: {out}")
    result: dict = {"simulated": True, "method": method, "table": str(out), "curve": None,
                    "held_out": []}
    if learner.curve_:
        png = curve or out.with_suffix(".curve.png")
        ex.save_curve_png(learner.curve_, png, f"RL frequency policy, seed {seed}")
        echo(f"learning curve: {png}")
        result["curve"] = str(png)
    if test_d:
        gov = ex.table_governor(learner.table_, method)
        for d in test_d:
            base = ex.evaluate(cl, [d], [Schedutil()], mem_share=mem_share)[0]
            mine = ex.evaluate(cl, [d], [gov], mem_share=mem_share)[0]
            echo(f"held-out {d.name:10} {method}: {mine.energy_j:7.2f} J ({mine.energy_j / base.energy_j:5.2f}x "
                 f"schedutil), misses {mine.misses}/{mine.items} (schedutil {base.misses}) [simulated]")
            result["held_out"].append({"trace": d.name, "energy_j": mine.energy_j,
                                       "schedutil_energy_j": base.energy_j, "misses": mine.misses,
                                       "schedutil_misses": base.misses, "items": mine.items})
    if as_json:
        click.echo(json.dumps(result, indent=2))
