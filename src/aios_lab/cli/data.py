"""`aios-lab analyze`, `aios-lab compare` and `aios-lab export`: offline analysis.

Thin wrappers over aios_lab.analysis; cli.py registers them. handle_errors
is imported inside the commands because cli.py imports this module.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

MEMORY_HELP = "duckdb's memory limit for the analysis (it spills to disk beyond it)."


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
    from aios_lab.cli import handle_errors

    handle_errors(_analyze)(trace, report, as_json, memory_limit)


def _check_report(report: Path | None, inputs) -> None:
    """Fail before the analysis, not after printing it: a missing folder, a
    device or FIFO, a path inside a trace being read (safe_output)."""
    from aios_lab.safe_output import check_output

    if report is not None:
        check_output(report, inputs=inputs, what="report")


def _analyze(trace: Path, report: Path | None, as_json: bool, memory_limit: str) -> None:
    from aios_lab.analysis.metrics import trace_metrics
    from aios_lab.analysis.report import format_metrics, write_report

    _check_report(report, [trace])
    m = trace_metrics(trace, memory_limit=memory_limit)
    click.echo(json.dumps(m, indent=2, default=str) if as_json else format_metrics(m))
    if report is not None:
        click.echo(f"report written: {write_report(m, report)}", err=as_json)


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
    from aios_lab.cli import handle_errors

    handle_errors(_compare)(traces, labels, baseline, report, as_json, memory_limit)


def _compare(traces, labels, baseline, report, as_json, memory_limit) -> None:
    from aios_lab.analysis.compare import (compare_traces, format_comparison,
                                           write_comparison)

    _check_report(report, traces)
    c, runs = compare_traces(list(traces), list(labels) or None, baseline, memory_limit)
    click.echo(json.dumps(c, indent=2, default=str) if as_json else format_comparison(c))
    if report is not None:
        click.echo(f"report written: {write_comparison(c, runs, report)}", err=as_json)


@click.group("export")
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
    from aios_lab.cli import handle_errors

    handle_errors(_perfetto)(trace, out, as_json)


def _perfetto(trace: Path, out: Path, as_json: bool) -> None:
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
