"""The CLI's one unit convention: intervals and durations are seconds
(floats). Options that used to take milliseconds keep their old spelling as a
hidden, deprecated alias that warns."""
from __future__ import annotations

import click


def deprecated_ms_option(old: str, new: str):
    """``old`` (milliseconds): still accepted, converted by the command
    (value / 1000), and warned about on stderr. Hidden from help."""
    def warn(ctx, param, value):
        if value is not None:
            click.echo(f"warning: {old} is deprecated; use {new} in seconds "
                       f"({new} {value / 1000:g})", err=True)
        return value
    from .cli_types import finite

    # Finite: click's FloatRange lets NaN through (every comparison with it is false).
    return click.option(old, type=finite(0, 3_600_000), default=None, hidden=True, callback=warn)
