"""Option types of the CLI that refuse what click lets through.

click.FloatRange compares with < and >, and every comparison with NaN is
false, so `--duration nan` passes any range; `inf` passes any range without
an upper end. Every float option of aios-lab uses `Finite` instead.
"""
from __future__ import annotations

import math

import click


class Finite(click.FloatRange):
    """A float in a range that is also a real number (no NaN, no infinity)."""

    name = "number"

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value) and value == value:
            return super().convert(value, param, ctx)
        rv = click.FLOAT.convert(value, param, ctx) if not isinstance(value, float) else value
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(rv, param, ctx)


def finite(min=None, max=None, *, min_open=False, max_open=False) -> Finite:
    return Finite(min, max, min_open=min_open, max_open=max_open)


POSITIVE = finite(0, None, min_open=True)
NON_NEGATIVE = finite(0, None)
SEED = click.IntRange(0, 2 ** 32 - 1)
