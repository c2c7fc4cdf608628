"""`aios-lab train`: learn models from collected traces.

cli.py registers the group with one line (``main.add_command(train)``);
handle_errors is imported inside the command because cli.py imports this
module, so importing cli.py at module level here would be circular.
"""
from __future__ import annotations

from pathlib import Path

import click


# Shared by `train lb` and `bench-schedulers` (which trains in the boot).
migration_cost_option = click.option(
    "--migration-cost-us", default=500.0, show_default=True, type=click.FloatRange(0, None),
    help="What a migration within an LLC costs the task (x2 across LLCs, x4 across NUMA "
         "nodes): a migration is labelled right when it saves more wait than this.")


@click.group("train")
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
@click.option("--seed", default=0, show_default=True, type=int, help="Tree random_state.")
@click.option("--test-size", default=0.25, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Fraction of each trace, the latest decisions, held out for evaluation.")
@migration_cost_option
def lb(traces: tuple[Path, ...], out: Path, max_depth: int, seed: int,
       test_size: float, migration_cost_us: float) -> None:
    """Train the mllb load-balancing decision tree from logged decisions.

    Prints held-out accuracy, the confusion matrix and the agreement between
    the float tree and the integer tree the kernel runs.

    Example: aios-lab train lb --trace traces/run1 --trace traces/run2 --out lb.json
    """
    from aios_lab.cli import handle_errors

    handle_errors(_train_lb)(traces, out, max_depth, seed, test_size, migration_cost_us)


def _train_lb(traces: tuple[Path, ...], out: Path, max_depth: int, seed: int,
              test_size: float, migration_cost_us: float) -> None:
    from aios_lab.mllb.model import save_model
    from aios_lab.mllb.train import load_decisions, train as train_model

    df = load_decisions(traces)
    model_file, report = train_model(df, test_size=test_size, seed=seed, max_depth=max_depth,
                                     migration_cost_ns=int(migration_cost_us * 1000))
    for line in report.lines():
        click.echo(line)
    path = save_model(out, model_file)
    click.echo(f"model written to {path} (version {model_file.version}, "
               f"sha256 {model_file.sha256[:16]}...)")
