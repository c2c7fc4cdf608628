"""Data: `aios-lab collect` (telemetry traces), and offline `analyze`,
`compare` and `export` over them (aios_lab.telemetry, aios_lab.analysis)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .group import AiosGroup
from .options import command_argument, deprecated_ms_option
from .types import POSITIVE, finite

MEMORY_HELP = "duckdb's memory limit for the analysis (it spills to disk beyond it)."


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--duration", type=POSITIVE, default=None, help="Stop after this many seconds.")
@click.option("--interval", type=finite(0.01, 60), default=1.0, show_default=True,
              help="Seconds per task/CPU interval row (it used to take milliseconds; "
                   "values above 60 are refused, so an old `--interval 500` cannot silently mean 500 s).")
@deprecated_ms_option("--interval-ms", "--interval")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Trace directory to create (default: results/traces/<timestamp>).")
@click.option("--no-wakeups", is_flag=True, help="Do not record individual wakeup events (they are frequent).")
@click.option("--wakeup-sample", type=click.IntRange(min=1), default=1, show_default=True,
              help="Record 1 in N wakeup events, at random (per-task wakeup counts and waits still see all).")
@click.option("--no-switches", is_flag=True,
              help="Do not record each context switch (the switches table: Perfetto lanes, exact "
                   "wait percentiles); the heaviest stream.")
# = telemetry.collect.DEFAULT_STREAM_BUDGET (not imported: it pulls in pyarrow; a test checks)
@click.option("--stream-budget", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Records/s per CPU the switch and wakeup streams each keep; above it they are sampled by "
                   "whole 16.8 ms windows, each row weighted (docs/trace-format.md). 0: record every event.")
@click.option("--no-bpf", is_flag=True, help="Only sample /proc (what a collection without root gets).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the trace's path and metrics as JSON (as `analyze --json`).")
@command_argument
def collect(duration, interval, interval_ms, out, no_wakeups, wakeup_sample, no_switches, stream_budget, no_bpf,
            as_json, command) -> None:
    """Record per-task and per-CPU scheduler telemetry into a trace directory.

    Runs COMMAND (after --) and stops when it exits, or stops after
    --duration, or at Ctrl-C. BPF collectors need root; without it only
    /proc is sampled and the trace says so. See docs/trace-format.md.
    When COMMAND fails the trace is still written and the exit status is 6.

    Example: aios-lab collect --interval 0.5 --out /tmp/t1 -- hackbench -p -g 4 -l 100
    """
    from aios_lab.analysis.metrics import trace_metrics
    from aios_lab.analysis.report import format_metrics
    from aios_lab.telemetry.collect import CollectOptions, collect as run_collect
    from aios_lab.errors import CommandFailed
    from aios_lab.safe_output import check_output
    from aios_lab.telemetry.trace import Trace

    if out:
        check_output(out, folder=True, what="trace")
    seconds = interval if interval_ms is None else interval_ms / 1000
    opts = CollectOptions(out=Path(out) if out else None, duration_s=duration,
                          interval_ms=max(1, round(seconds * 1000)),
                          command=list(command), wakeup_events=not no_wakeups,
                          wakeup_sample=wakeup_sample, switch_events=not no_switches,
                          stream_budget=stream_budget or None, bpf="off" if no_bpf else "auto")
    if not command and duration is None:
        click.echo("collecting until Ctrl-C ...", err=True)
    path = run_collect(opts, echo=lambda m: click.echo(m, err=True))
    trace = Trace.open(path)
    metrics = trace_metrics(trace)
    if as_json:
        click.echo(json.dumps({"trace": str(path), "metrics": metrics}, indent=2, default=str))
    else:
        click.echo(f"trace written: {path}")
        click.echo(format_metrics(metrics))
    rc = trace.metadata.get("workload_exit_code")
    if command and trace.metadata.get("ended_by") == "command" and rc != 0:
        raise CommandFailed(f"the command {command[0]} exited with status {rc}; the trace of its run is "
                            f"kept at {path}")


def _check_report(report: Path | None, inputs) -> None:
    """Fail before the analysis, not after printing it: a missing folder, a
    device or FIFO, a path inside a trace being read (safe_output)."""
    from aios_lab.safe_output import check_output

    if report is not None:
        check_output(report, inputs=inputs, what="report")


@click.command("analyze")
@click.argument("trace", type=click.Path(path_type=Path))
@click.option("--report", "report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a self-contained HTML report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--memory-limit", default="1GB", show_default=True, help=MEMORY_HELP)
def analyze(trace: Path, report: Path | None, as_json: bool, memory_limit: str) -> None:
    """Analyse a trace: run-queue wait percentiles, tasks, per-CPU
    utilisation and run-queue length, migrations, frequency.

    SQL over the trace's Parquet files (duckdb), so large traces stay in
    bounded memory.

    Example: aios-lab analyze results/traces/20261124-201500 --report out.html
    """
    from aios_lab.analysis.metrics import trace_metrics
    from aios_lab.analysis.report import format_metrics, write_report

    _check_report(report, [trace])
    m = trace_metrics(trace, memory_limit=memory_limit)
    click.echo(json.dumps(m, indent=2, default=str) if as_json else format_metrics(m))
    if report is not None:
        click.echo(f"report written: {write_report(m, report)}", err=as_json)


@click.command("profile")
@click.argument("trace", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@click.option("--memory-limit", default="1GB", show_default=True, help=MEMORY_HELP)
def profile(trace: Path, as_json: bool, memory_limit: str) -> None:
    """A workload's scheduling character from a trace: CPU-bound, blocking
    or mixed (a stated rule on utilisation and the share of voluntary
    switches), wakeup rate, run lengths, waits, threads, migrations.

    What to read before choosing a policy (the MCP server's profile tools
    return the same data).

    Example: aios-lab profile results/traces/20261124-201500 --json
    """
    from aios_lab.analysis.profile import format_profile, profile_trace

    p = profile_trace(trace, memory_limit=memory_limit)
    click.echo(json.dumps(p, indent=2, default=str) if as_json else format_profile(p))


@click.command("compare")
@click.argument("traces", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--label", "labels", multiple=True,
              help="Label of each trace, in order (default: folder name without a trailing -N; "
                   "traces with the same label are repeated runs).")
@click.option("--baseline", default=None, help="Label to compare against (default: the first).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a self-contained HTML report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--memory-limit", default="1GB", show_default=True, help=MEMORY_HELP)
def compare(traces, labels, baseline, report, as_json, memory_limit) -> None:
    """Compare runs side by side: the same metrics per policy, ratios to a
    baseline and, where runs are repeated, 95 % intervals and Welch's t-test.

    Example: aios-lab compare t/eevdf-1 t/eevdf-2 t/mllb-1 t/mllb-2 --report cmp.html
    """
    from aios_lab.analysis.compare import (compare_traces, format_comparison,
                                           write_comparison)

    _check_report(report, traces)
    c, runs = compare_traces(list(traces), list(labels) or None, baseline, memory_limit)
    click.echo(json.dumps(c, indent=2, default=str) if as_json else format_comparison(c))
    if report is not None:
        click.echo(f"report written: {write_comparison(c, runs, report)}", err=as_json)


@click.group("export", cls=AiosGroup)
def export() -> None:
    """Export a trace to other tools' formats.

    Example: aios-lab export perfetto results/traces/t1 -o t1.pftrace
    """


@export.command("perfetto")
@click.argument("trace", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .pftrace file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def perfetto(trace: Path, out: Path, as_json: bool) -> None:
    """Write a Perfetto trace (sched_switch, sched_waking, cpu_frequency) that
    ui.perfetto.dev and trace_processor open with per-CPU scheduling lanes.

    Example: aios-lab export perfetto results/traces/t1 -o t1.pftrace
    """
    import dataclasses

    from aios_lab.analysis.perfetto import export_perfetto
    from aios_lab.safe_output import check_output

    check_output(out, inputs=[trace], what="output")
    stats = export_perfetto(trace, out)
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(stats), "path": str(stats.path),
                               "events": stats.events}, indent=2))
        return
    click.echo(f"perfetto trace written: {out} ({stats.describe()})")
