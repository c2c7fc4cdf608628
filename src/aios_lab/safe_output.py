"""The one guarded way to choose an output path, and to clean up after writers.

Every command that writes a file or a folder runs its target through
`check_output` first. aios-lab often runs as root, where a careless path is
dangerous: `-o /dev/null` would otherwise be *replaced* by a regular file
(rename(2) onto a device node succeeds for root), a report written inside
the trace it reads corrupts that trace, and a FIFO as output blocks forever.
So the check refuses

- a special file (character or block device, FIFO, socket) and a directory,
  also behind a symbolic link;
- a path equal to, or inside, one of the command's inputs (a trace folder,
  a model, a table);
- an existing file unless the command is documented to replace it;
- a folder that does not exist.

Writers publish through temporary names beside the target (open_atomic's
``.NAME.tmp-PID-*``, the trace writer's ``.NAME.partial-PID``, the Perfetto
sort's ``.NAME.sort-PID-*``). They remove them on every exit path Python
sees (errors, Ctrl-C, SIGTERM, which the CLI turns into an interrupt); a
SIGKILL or a power cut leaves them, and `sweep_stale` removes those whose
process is gone the next time anything writes to the same target.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path
from typing import Iterable

from .errors import OutputError

SCRATCH_TAGS = ("tmp", "partial", "sort")


def scratch_prefix(target: Path, tag: str) -> str:
    """Name prefix of a writer's scratch beside `target`; `sweep_stale`
    recognises it (and the PID in it) after a crash."""
    if tag not in SCRATCH_TAGS:
        raise ValueError(f"unknown scratch tag {tag!r}")
    return f".{Path(target).name}.{tag}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process, or a pid we cannot judge: keep
    return True


def sweep_stale(target: Path) -> list[Path]:
    """Remove scratch that a killed writer left beside `target` (its PID is
    dead); returns what was removed. Scratch of a live process is left."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:{'|'.join(SCRATCH_TAGS)})-(\d+)(?:-.*)?$")
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass  # not ours to remove (permissions): leave it
    return removed


def mode_kind(mode: int) -> str | None:
    """What a file that is not a regular file is, in words; None for a regular file."""
    for test, what in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return what
    return None


def file_kind(path: Path | str) -> str | None:
    """mode_kind of what is at `path` (links followed); None when it is a regular
    file or nothing is there."""
    try:
        return mode_kind(os.stat(path).st_mode)
    except OSError:
        return None


def refuse_special(path: Path, what: str = "output") -> None:
    """OutputError when `path` exists and is not a regular file (after
    following links); the last check right before a rename onto it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputError(f"{what} {path}: {e.strerror}") from None
    kind = mode_kind(st.st_mode)
    if kind:
        raise OutputError(f"{what} {path} is {kind}; refusing to replace it",
                          hint="give the path of a regular file to write")


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def check_output(path: Path | str, *, inputs: Iterable[Path | str] = (), replace: bool = True,
                 folder: bool = False, what: str = "output") -> Path:
    """Check that `path` may be written; returns it. `replace`: an existing
    regular file may be replaced (the command says so in its help); `folder`:
    the output is a directory that must not exist yet (or be empty). Also
    removes stale scratch of earlier killed writers of the same target."""
    path = Path(path)
    if not str(path) or path.name in ("", ".", ".."):
        raise OutputError(f"{what} path {str(path)!r} names no file", hint="give a file name")
    real = Path(os.path.realpath(path))
    for inp in inputs:
        inp_real = Path(os.path.realpath(inp))
        if _inside(real, inp_real):
            raise OutputError(f"{what} {path} is inside the input {inp}; writing it would "
                              "change what is being read", hint="write it somewhere else")
    parent = real.parent
    if not parent.is_dir():
        raise OutputError(f"{what} folder {path.parent} does not exist", hint="create it first")
    if os.path.lexists(path):
        try:
            st = os.stat(path)
        except OSError as e:
            raise OutputError(f"{what} {path}: {e.strerror}",
                              hint="remove the broken link or write elsewhere") from None
        kind = mode_kind(st.st_mode)
        if folder:
            if not stat.S_ISDIR(st.st_mode) or any(os.scandir(path)):
                raise OutputError(f"{what} {path} already exists; not overwriting it",
                                  hint="choose another path or remove the old one")
        elif kind:
            raise OutputError(f"{what} {path} is {kind}; refusing to replace it",
                              hint="give the path of a regular file to write")
        elif not replace:
            raise OutputError(f"{what} {path} already exists; not overwriting it",
                              hint="choose another path or remove the old file")
    sweep_stale(path)
    return path


def check_folder(path: Path | str, *, what: str = "output folder") -> Path:
    """A folder that results are added to (it may exist and hold others):
    refused when something other than a folder is there."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        try:
            kind = mode_kind(os.stat(path).st_mode) or "a file"
        except OSError:
            kind = "a broken link"
        raise OutputError(f"{what} {path} is {kind}, not a folder", hint="give a folder to write into")
    return path
