"""Starting the user's command (collect's and deploy's workload) safely.

The program is looked up before anything is attached or created, so a typo
costs nothing and leaves nothing behind. The child asks the kernel to send it
SIGTERM when aios-lab dies (PR_SET_PDEATHSIG): a SIGKILLed collector must not
leave its workload running unobserved, perhaps for hours.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess

from .errors import CommandFailed

PR_SET_PDEATHSIG = 1


def check_command(argv: list[str]) -> None:
    """CommandFailed unless argv[0] names a program that can be run."""
    if not argv or not argv[0]:
        raise CommandFailed("the command is empty", hint="give it after --, e.g. -- make -j4")
    prog = argv[0]
    found = shutil.which(prog) if os.sep not in prog else (prog if os.access(prog, os.X_OK) and
                                                            os.path.isfile(prog) else None)
    if found is None:
        raise CommandFailed(f"cannot run {prog!r}: no such program, or it is not executable",
                            hint="check its spelling and PATH; aios-lab's own options go before --")


def _die_with_parent(parent: int):
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(128 + signal.SIGTERM)
    return preexec


def start_command(argv: list[str]) -> subprocess.Popen:
    """Popen(argv), tied to our life; CommandFailed if it cannot start."""
    check_command(argv)
    try:
        return subprocess.Popen(argv, preexec_fn=_die_with_parent(os.getpid()))
    except OSError as e:
        raise CommandFailed(f"cannot run {argv[0]!r}: {e.strerror}",
                            hint="check its spelling, PATH and permissions") from None
