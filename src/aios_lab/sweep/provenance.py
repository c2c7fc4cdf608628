"""Where and from what a cell ran: host, kernel, Python, git revision.

Recorded in every result so a sweep gathered from many nodes (or resumed
across commits) says which figures came from where.
"""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess

from .. import __version__, paths


@functools.lru_cache(maxsize=1)
def git_revision() -> dict:
    """HEAD of the checkout the code runs from, and whether tracked files differ from it."""
    root = str(paths.project_root())
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"revision": None, "dirty": None}
    if rev.returncode != 0:
        return {"revision": None, "dirty": None}  # an installed copy, not a checkout
    return {"revision": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def host() -> dict:
    u = os.uname()
    return {"hostname": socket.gethostname(), "kernel": u.release, "machine": u.machine,
            "cpus": os.cpu_count(), "python": platform.python_version(), "aios_lab": __version__}


def record() -> dict:
    return {"host": host(), "git": git_revision()}
