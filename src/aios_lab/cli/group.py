"""The CLI's one error boundary: the class of every group.

Library functions raise typed exceptions (aios_lab.errors); no command
catches them. They travel up to the innermost group's ``invoke``, which turns
each into `Error: <one line>` with the documented exit code
(aios_lab.exit_codes), once: outer groups pass the result through. ``main``
prints click's own errors the same way. Every group has this class, so a
group run on its own (``CliRunner().invoke(train, ...)``) behaves as under
`aios-lab`.
"""
from __future__ import annotations

import sys

import click

from aios_lab import exit_codes
from aios_lab.errors import AiosError


class _Failure(click.ClickException):
    """`Error: <one line>` with the exit code of the contract (exit_codes)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


class AiosGroup(click.Group):
    """Library errors, Ctrl-C and SIGTERM (which the root turns into Ctrl-C)
    become one line and their exit code, after the library's cleanup has run;
    click's own errors are one line too: `Error: <what> (see CMD --help)`
    instead of a usage block, with click's exit code (2 for usage)."""

    def invoke(self, ctx: click.Context):
        # Every subcommand, nested groups included, runs inside this call.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Failure("interrupted", exit_codes.INTERRUPTED) from None
        except AiosError as exc:
            raise _Failure(exc.one_line(), exit_codes.code_for(exc)) from None

    def main(self, *args, **kwargs):
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("Error: interrupted", err=True)
            sys.exit(exit_codes.INTERRUPTED)
        except click.ClickException as e:
            msg = e.format_message()
            if isinstance(e, click.UsageError) and e.ctx is not None:
                msg += f" (see {e.ctx.command_path} --help)"
            click.echo(f"Error: {msg}", err=True)
            sys.exit(e.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)
