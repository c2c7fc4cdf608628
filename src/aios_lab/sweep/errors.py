"""The sweep's typed exceptions (the CLI turns them into one line each)."""
from __future__ import annotations

from ..errors import AiosError, InputError


class SweepError(InputError):
    """A sweep spec, plan or folder is malformed or does not fit the request
    (bad input: exit status 3, exit_codes)."""


class CellError(SweepError):
    """A cell's parameters do not fit its kind, or the cell could not run."""


class ExecutorError(AiosError):
    """An executor could not start (Ray missing, cluster unreachable, ...)."""
