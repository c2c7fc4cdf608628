"""Options shared by commands of more than one group, as decorators.

The CLI's one unit convention lives here too: intervals and durations are
seconds (floats). Options that used to take milliseconds keep their old
spelling as a hidden, deprecated alias that warns.
"""
from __future__ import annotations

import click

from .types import finite


def deprecated_ms_option(old: str, new: str):
    """``old`` (milliseconds): still accepted, converted by the command
    (value / 1000), and warned about on stderr. Hidden from help."""
    def warn(ctx, param, value):
        if value is not None:
            click.echo(f"warning: {old} is deprecated; use {new} in seconds "
                       f"({new} {value / 1000:g})", err=True)
        return value

    # Finite: click's FloatRange lets NaN through (every comparison with it is false).
    return click.option(old, type=finite(0, 3_600_000), default=None, hidden=True, callback=warn)


def simulator_options(f):
    """--cluster and --mem-share, for every command that runs the DVFS simulator."""
    f = click.option("--mem-share", default=0.3, show_default=True, type=finite(0, 1, max_open=True),
                     help="Share of each item's work that is memory-bound and does not speed up with "
                          "frequency.")(f)
    return click.option("--cluster", default="gs101:big", show_default=True,
                        help="Simulated frequency domain, PLATFORM:CLUSTER (OPP tables in aios_lab/dvfs/data).")(f)


# `freq bound` and `train freq`: what one item of a trace's demand is (dvfs.units).
unit_option = click.option(
    "--unit", default="interval", show_default=True,
    help="Demand unit (dvfs.units): 'interval' reads each task's time per collection interval "
         "(workloads/dvfs/traces); 'activation' one item per activation from the whole switch stream "
         "(workloads/dvfs/traces-switches).")


# `train lb` and `bench-schedulers` (which trains in the boot).
migration_cost_option = click.option(
    "--migration-cost-us", default=500.0, show_default=True, type=finite(0, 1e9),
    help="What a migration within an LLC costs the task (x2 across LLCs, x4 across NUMA "
         "nodes): a migration is labelled right when it saves more wait than this.")



def _check_command(ctx, param, command: tuple[str, ...]) -> tuple[str, ...]:
    """With ignore_unknown_options a mistyped option (`--durration 1`) would
    become the command: refuse that, and a program that does not exist,
    before anything is attached or written."""
    if command and command[0].startswith("-"):
        raise click.UsageError(f"no such option: {command[0]} (a command to run goes after --)")
    if command:
        from aios_lab.child import check_command

        check_command(list(command))
    return command


# COMMAND (after --) of `collect` and `deploy`, checked as it is parsed; the
# command needs context_settings={"ignore_unknown_options": True}.
command_argument = click.argument("command", nargs=-1, type=click.UNPROCESSED, callback=_check_command)


def parse_sets(sets: tuple[str, ...]) -> dict[str, str]:
    """`--set KEY=VALUE` (repeatable) as a dict; the manifest checks the values."""
    out = {}
    for s in sets:
        k, sep, v = s.partition("=")
        if not sep or not k.strip():
            raise click.BadParameter(f"{s!r} is not KEY=VALUE", param_hint="--set")
        out[k.strip()] = v.strip()
    return out
