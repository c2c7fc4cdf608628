"""Option types of the CLI that refuse what click lets through.

click.FloatRange compares with < and >, and every comparison with NaN is
false, so `--duration nan` passes any range; `inf` passes any range without
an upper end. Every float option of aios-lab uses `Finite` instead.
"""
from __future__ import annotations

import math

import click

from aios_lab.safe_output import file_kind


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


class InputFile(click.Path):
    """A file to read: when it exists it must be a regular file (a FIFO would
    block the read, a device would never end). A missing one is left to the
    library, whose error says how to make it."""

    def __init__(self, **kw) -> None:
        super().__init__(dir_okay=False, **kw)

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        kind = file_kind(str(rv))
        if kind:
            self.fail(f"{str(value)!r} is {kind}, not a regular file", param, ctx)
        return rv


class Folder(click.Path):
    """An existing directory (a sysfs root, a folder the VM may write)."""

    def __init__(self, **kw) -> None:
        super().__init__(file_okay=False, exists=True, **kw)

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        kind = file_kind(str(rv))
        if kind != "a directory":
            self.fail(f"{str(value)!r} is {kind or 'not a directory'}, not a folder", param, ctx)
        return rv
