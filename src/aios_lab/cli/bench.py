"""Benchmarks and sweeps: `aios-lab demo` (the whole loop in the VM),
`aios-lab bench-schedulers` (one kernel, every scheduler) and `aios-lab
sweep` (plan, run, watch and read experiment grids, aios_lab.sweep).

`sweep run` exits 7 when cells still failed after their retries (they are
listed), and 130 when interrupted (Ctrl-C or SIGTERM; the cells in flight are
stopped); other failures take the root group's one line and exit code.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from aios_lab import exit_codes

from .group import AiosGroup
from .options import migration_cost_option
from .types import InputFile

EXIT_CELLS_FAILED = exit_codes.CELLS_FAILED  # distinct from bad input (3)
EXIT_INTERRUPTED = exit_codes.INTERRUPTED


@click.command()
@click.option("--cpus", default=None, type=click.IntRange(1, 256),
              help="vCPUs of the VM (default: 4, or the host's CPU count if smaller: more vCPUs than host "
                   "cores reward consolidation, not balancing).")
@click.option("--numa", default=None, type=click.IntRange(1, 64),
              help="NUMA nodes of the VM (default: 2 with 4 vCPUs, else 1).")
@click.option("--workload", default="build", show_default=True, help="Workload name (see workloads/).")
@click.option("--repeat", default=2, show_default=True, type=click.IntRange(1, 1000),
              help="Runs per scheduler, interleaved.")
@click.option("--policies", default="eevdf,fifo,mllb-collect,mllb-model,mllb-stay", show_default=True,
              help="Schedulers to compare; <policy>-model trains a model first; <policy>-stay is the "
                   "never-migrate control.")
@click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the JSON result.")
@click.option("--nice", type=click.IntRange(-20, 19), default=None,
              help="Host priority of QEMU (env AIOS_LAB_VM_NICE), e.g. -10 on a shared host.")
@click.option("--rt", is_flag=True, default=None,
              help="Run QEMU under SCHED_RR (env AIOS_LAB_VM_RT=1), so that host load moves the guest less.")
@click.option("--json", "as_json", is_flag=True,
              help="Progress on stderr; the full result as JSON on stdout.")
def demo(cpus, numa, workload, repeat, policies, out, nice, rt, as_json) -> None:
    """The whole loop in the VM: collect with mllb, train, deploy the model, compare.

    Boots the pinned sched_ext kernel, runs the workload once under mllb's
    collect mode and trains a model on its logged decisions, then runs it
    under each scheduler in turn (a trace of every run), and prints the
    comparison of makespan, migrations and BPF decision cost. Ends by writing
    the HTML comparison report of all its traces (`aios-lab compare`) and
    printing its path.

    Example: aios-lab demo --cpus 4 --numa 2 --repeat 2
    """
    from aios_lab.bench.demo import run_demo
    from aios_lab.safe_output import check_folder

    check_folder(out, what="--out")
    from aios_lab.bench.demo import demo_topology

    cpus, numa = demo_topology(cpus, numa)
    result = run_demo(cpus=cpus, numa=numa, workload=workload, repeat=repeat, out_dir=Path(out),
                      echo=lambda m: click.echo(m, err=as_json),
                      policies=[p for p in policies.split(",") if p], nice=nice, realtime=rt,
                      stream=sys.stdout)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))


@click.command("bench-schedulers", hidden=False)
@click.option("--workload", default="cpu-spin", show_default=True, help="Workload name (see workloads/).")
@click.option("--policies", default="eevdf,fifo", show_default=True,
              help="Comma-separated; 'eevdf' means no sched_ext policy (the kernel's fair class).")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 1000),
              help="Runs per scheduler, interleaved.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write results here.")
@click.option("--trace-dir", type=click.Path(file_okay=False), default=None,
              help="Collect a telemetry trace of every run into this directory.")
@click.option("--model", "model_path", type=InputFile(exists=True), default=None,
              help="Model for <policy>-model runs (default: train one here first).")
@click.option("--model-out", type=click.Path(dir_okay=False), default=None,
              help="Where to save the model trained here (default: results/<policy>-<workload>.model).")
@click.option("--train-runs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Runs to train the model on: the first in collect mode, each later one under "
                   "the model trained so far; the model is trained on all of them.")
@migration_cost_option
@click.option("--control/--no-control", default=True, show_default=True,
              help="First run the placement control (CPU-bound spinners pinned to one CPU vs free); "
                   "without it no load-balancing verdict is judged.")
@click.option("--control-loops", type=click.IntRange(min=1000), default=None,
              help="Work per control spinner (shell loop iterations; default 60000).")
@click.option("--control-repeat", type=click.IntRange(min=1), default=None,
              help="Interleaved runs of each control arm (default 3).")
@click.option("--json", "as_json", is_flag=True,
              help="Progress on stderr; the results as JSON on stdout.")
def bench_schedulers(workload, policies, repeat, json_out, trace_dir, model_path, model_out, train_runs,
                     migration_cost_us, control, control_loops, control_repeat, as_json) -> None:
    """Run a workload under each scheduler in turn on this (sched_ext) kernel.

    Measures makespan and migrations (counted by a BPF program on
    sched_migrate_task), and with --trace-dir the work-conservation loss and
    wait percentiles of every run. First, the placement control says whether
    this platform can reward a good placement at all (ratio >= 1.5); every
    ratio comes with a Mann-Whitney U test. `<policy>-stay` is the
    never-migrate control. Runs inside the VM; `aios-lab demo` calls it there.

    Example: aios-lab vm run --cpus 4 -- aios-lab bench-schedulers --repeat 3
    """
    from aios_lab.bench.run import bench_schedulers as bench
    from aios_lab.safe_output import check_folder, check_output

    # Outputs are checked before an hour of benchmarking, not after it.
    inputs = [model_path] if model_path else []
    for out, what in ((json_out, "--json-out"), (model_out, "--model-out")):
        if out:
            check_output(out, inputs=inputs, what=what)
    if trace_dir:
        check_folder(trace_dir, what="--trace-dir")
    res = bench(workload=workload, policies=[p for p in policies.split(",") if p], repeat=repeat,
                echo=lambda m: click.echo(m, err=as_json),
                trace_dir=Path(trace_dir) if trace_dir else None,
                model_path=Path(model_path) if model_path else None,
                model_out=Path(model_out) if model_out else None, train_runs=train_runs,
                migration_cost_ns=int(migration_cost_us * 1000), control=control,
                control_loops=control_loops, control_repeat=control_repeat)
    from aios_lab.bench.summary import format_summary

    click.echo(json.dumps(res, indent=2, default=str) if as_json else format_summary(res))
    if json_out:
        from aios_lab.atomic import write_json_atomic

        write_json_atomic(Path(json_out), res)


@click.group("sweep", cls=AiosGroup)
def sweep() -> None:
    """Experiment sweeps: a grid of cells, run idempotently, locally or on Ray.

    See docs/sweep.md.

    Example: aios-lab sweep plan sweeps/dvfs-governors.toml --out results/sweeps/gov
    """


@sweep.command("plan")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The sweep folder (default: results/sweeps/<name>).")
@click.option("--seed", type=click.IntRange(0, 2 ** 32 - 1), default=None, help="Seed of the cell order (default: the spec's, else random).")
@click.option("--json", "as_json", is_flag=True, help="Print every cell as JSON.")
def plan(spec: Path, out: Path | None, seed: int | None, as_json: bool) -> None:
    """Expand SPEC (TOML) into cells with content hashes, in a shuffled, recorded order.

    Planning the same spec into its folder again changes nothing.

    Example: aios-lab sweep plan sweeps/dvfs-governors.toml --out results/sweeps/gov
    """
    from aios_lab import paths
    from aios_lab.sweep.runner import plan_sweep
    from aios_lab.sweep.spec import SweepSpec

    if out is None:
        out = paths.project_root() / "results" / "sweeps" / SweepSpec.load(spec).name
    p = plan_sweep(spec, out, seed)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in p.cells], indent=2))
        return
    click.echo(f"{'planned' if p.created else 'already planned'}: {len(p.cells)} cells in {p.sweep.root} "
               f"(order seed {p.seed})")
    for c in p.cells[:5]:
        click.echo(f"  {c.hash}  {c.label()}")
    if len(p.cells) > 5:
        click.echo(f"  ... {len(p.cells) - 5} more")
    click.echo(f"run it: aios-lab sweep run {p.sweep.root}")


@sweep.command("run")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process per cell on this host; ray: a Ray task per cell.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Host cores to use (local; default: all), or the CPUs of the local Ray cluster started "
                   "when there is no --address.")
@click.option("--address", default=None,
              help="Ray cluster to use (e.g. ray://head:10001, or auto for the one on this host).")
@click.option("--retries", type=click.IntRange(min=0), default=None,
              help="Extra attempts per failing cell (default: the spec's).")
@click.option("--max-cells", type=click.IntRange(min=1), default=None,
              help="Run at most this many unfinished cells, then stop (the rest stay pending).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="No progress bar; the run's summary as JSON.")
def run(folder: Path, executor: str, jobs: int | None, address: str | None, retries: int | None,
        max_cells: int | None, quiet: bool, as_json: bool) -> None:
    """Run the planned sweep in FOLDER: finished cells are skipped, so it resumes.

    Exit status 7 when cells failed after their retries (they are listed and
    run again by the next `sweep run`).

    Example: aios-lab sweep run results/sweeps/gov --executor ray --address auto
    """
    from aios_lab.errors import AiosError
    from aios_lab.sweep import executors
    from aios_lab.sweep.layout import SweepDir
    from aios_lab.sweep.runner import run_sweep

    if address and executor != "ray":
        raise AiosError("--address is a Ray cluster's address", hint="add --executor ray")
    import signal

    from aios_lab.sweep.runner import request_stop

    sd = SweepDir(folder)
    sd.load_plan()  # a folder that is not a sweep fails before any executor starts

    def on_sigterm(signum, frame):
        # Stop the cells (and a Ray cluster started here) as Ctrl-C does; the
        # flag survives where the raise is swallowed (sweep.runner._STOP).
        request_stop()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    ex = executors.get(executor)(jobs=jobs, address=address)
    try:
        with _progress_bar(quiet or as_json) as tell:
            rep = run_sweep(sd, ex, retries=retries, max_cells=max_cells, progress=tell)
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished cells are kept; `aios-lab sweep run {folder}` resumes", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if as_json:
        click.echo(json.dumps({"ran": rep.ran, "skipped": rep.skipped, "retried": rep.retried,
                               "wall_s": round(rep.wall_s, 3), "executor": executor,
                               "stopped_early": rep.stopped_early, "cleared_staging": rep.cleared_staging,
                               "failed": [{"cell": c.hash, "label": c.label(), "error": str(e)}
                                          for c, e in rep.failed]}, indent=2))
        if rep.failed:
            sys.exit(EXIT_CELLS_FAILED)
        return
    click.echo(f"{rep.ran} cells run, {rep.skipped} already done, {len(rep.failed)} failed, "
               f"{rep.retried} retried, in {rep.wall_s:.1f} s ({executor})"
               + (f"; {rep.cleared_staging} half-run cells of a stopped run discarded" if rep.cleared_staging else "")
               + ("; stopped at --max-cells" if rep.stopped_early else ""))
    if rep.failed:
        for cell, err in rep.failed:
            click.echo(f"failed: {cell.hash} {cell.label()}: {err}", err=True)
        click.echo(f"Error: {len(rep.failed)} cells failed; `aios-lab sweep run {folder}` tries them again",
                   err=True)
        sys.exit(EXIT_CELLS_FAILED)


class _progress_bar:
    """A rich progress bar on stderr fed by the runner's events (nothing when quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet or not sys.stderr.isatty()

    def __enter__(self):
        if self.quiet:
            return lambda event, cell, counts: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[extra]}"), TimeRemainingColumn(),
                            console=Console(stderr=True), auto_refresh=False)
        # refreshed on each event, not by rich's thread: the local executor forks this process
        self.bar.__enter__()
        self.task = None

        def tell(event, cell, counts):
            if self.task is None:
                self.task = self.bar.add_task("sweep", total=counts.total, extra="")
            extra = f"{counts.running} running" + (f", {counts.failed} failed" if counts.failed else "")
            self.bar.update(self.task, completed=counts.done, extra=extra, refresh=True)
            if event in ("retry", "failed"):
                self.bar.console.print(f"{event}: {cell.label()}")
        return tell

    def __exit__(self, *exc):
        if not self.quiet:
            self.bar.__exit__(*exc)
        return False


@sweep.command("status")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(folder: Path, as_json: bool) -> None:
    """Progress of a sweep: finished, failed, pending and running cells.

    Example: aios-lab sweep status results/sweeps/gov
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from aios_lab.sweep.layout import SweepDir
    from aios_lab.sweep.status import describe_failures, status as sweep_status

    st = sweep_status(SweepDir(folder))
    if as_json:
        click.echo(json.dumps(st.to_dict(), indent=2))
        return
    console = Console(force_terminal=sys.stdout.isatty(), width=100)
    bar = Progress(TextColumn(f"{st.name} ({st.kind})"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), console=console, auto_refresh=False)
    bar.add_task("", total=st.total, completed=st.done)
    console.print(bar.get_renderable())
    click.echo(f"{st.done} done, {len(st.failed)} failed, {st.pending} pending; "
               + ("a driver is running" if st.driver_running else "no driver running"))
    for r in st.running:
        click.echo(f"  running: {r['cell']} on {r.get('hostname', '?')} pid {r.get('pid', '?')}")
    for line in describe_failures(st):
        click.echo(f"  failed: {line}")
    if len(st.revisions) > 1:
        click.echo(f"  results come from {len(st.revisions)} code revisions: {', '.join(st.revisions)}")
    if st.last_run:
        lr = st.last_run
        click.echo(f"last run: {lr.get('event')} on {lr.get('executor')}, {lr.get('ran', 0)} cells run"
                   + (f" in {lr['wall_s']:.1f} s" if lr.get("wall_s") is not None else ""))


@sweep.command("results")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--by", default=None, help="Comma-separated parameters to group by (mean, sd, n per group).")
@click.option("--metric", "metrics", multiple=True, help="Metrics to show (repeatable; default: all numeric).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write one row per cell to this CSV file.")
@click.option("--json", "as_json", is_flag=True, help="The rows (or the groups with --by) as JSON records.")
def results(folder: Path, by: str | None, metrics: tuple[str, ...], csv_out: Path | None, as_json: bool) -> None:
    """The finished cells' results, read through the folder layout with duckdb.

    Example: aios-lab sweep results results/sweeps/gov --by governor --metric energy_j --metric misses
    """
    import pandas as pd

    from aios_lab.atomic import write_text_atomic
    from aios_lab.sweep.layout import SweepDir
    from aios_lab.sweep.status import results_frame, summarise

    df = results_frame(SweepDir(folder))
    if csv_out is not None:
        write_text_atomic(csv_out, df.to_csv(index=False))
    if as_json:
        table = (summarise(df, [b for b in by.split(",") if b], list(metrics) or None).reset_index()
                 if by else df)
        click.echo(table.to_json(orient="records", indent=2))
        return
    with pd.option_context("display.max_columns", None, "display.width", 200):
        if by:
            click.echo(summarise(df, [b for b in by.split(",") if b], list(metrics) or None).to_string())
        else:
            cols = [c for c in df.columns if c not in ("host", "git_revision")]
            if metrics:
                cols = [c for c in cols if c not in df.select_dtypes("number").columns or c in metrics
                        or c == "rep"]
            click.echo(df[cols].to_string(index=False))


@sweep.command("compare")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--by", default="policy", show_default=True,
              help="Parameters whose values label the groups (comma-separated).")
@click.option("--where", "wheres", multiple=True, help="Keep cells with KEY=VALUE (repeatable).")
@click.option("--baseline", default=None, help="Group to compare against (default: the first).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the HTML comparison report here.")
@click.option("--memory-limit", default="1GB", show_default=True, help="duckdb's memory limit.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(folder, by, wheres, baseline, report, memory_limit, as_json) -> None:
    """`aios-lab compare` over the traces of a sweep's cells, grouped by parameters.

    Example: aios-lab sweep compare results/sweeps/sched --by policy --where workload=build --report cmp.html
    """
    from aios_lab.analysis.compare import compare_traces, format_comparison, write_comparison
    from aios_lab.sweep.errors import SweepError
    from aios_lab.sweep.layout import SweepDir
    from aios_lab.sweep.status import traces

    where = {}
    for w in wheres:
        k, sep, v = w.partition("=")
        if not sep:
            raise SweepError(f"--where {w}: expected KEY=VALUE")
        where[k] = v
    found = traces(SweepDir(folder), [b for b in by.split(",") if b], where)
    if len(found) < 2:
        raise SweepError(f"{folder}: {len(found)} finished cell(s) with a trace match; compare needs two",
                        hint="vm-bench cells record traces; check --where")
    c, runs = compare_traces([t for _, t in found], [lab for lab, _ in found], baseline, memory_limit)
    click.echo(json.dumps(c, indent=2, default=str) if as_json else format_comparison(c))
    if report is not None:
        click.echo(f"report written: {write_comparison(c, runs, report)}", err=as_json)
