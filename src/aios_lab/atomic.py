"""Durable publication of files and folders: every temporary-then-rename
write in aios-lab goes through here (the trace writer, model files, built
BPF objects, caches, provisioned trees)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable across power loss; best effort (not
    every filesystem lets a directory be opened for fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def open_atomic(path: Path | str, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a file that appears at `path` only when complete: a reader sees
    the old file or the whole new one, never a prefix.

    Writes go to a temporary file in the same folder; a clean exit from the
    block fsyncs it, gives it the mode open() would (mkstemp makes 0600) and
    renames it onto `path`. On any error the temporary file is removed,
    `path` is left as it was, and the error propagates (OSError for I/O)."""
    from .safe_output import refuse_special, scratch_prefix

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    # As root, rename(2) onto /dev/null or a FIFO would replace it.
    refuse_special(path)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=scratch_prefix(path, "tmp") + "-", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        f = os.fdopen(fd, mode, **kwargs)
        fd = -1  # the file object owns it now
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        refuse_special(path)  # again: it may have appeared while we wrote
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(parent)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path in `path`'s folder for a tool that writes a file by
    name (clang -o, savefig): on a clean exit from the block the file is
    fsynced, given the mode open() would, and renamed onto `path`; on any
    error it is removed and `path` is left as it was."""
    from .safe_output import refuse_special, scratch_prefix

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    refuse_special(path)
    fd, name = tempfile.mkstemp(dir=parent, prefix=scratch_prefix(path, "tmp") + "-", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        refuse_special(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(parent)


def publish_dir(staging: Path, dest: Path, *, replace: bool = True) -> None:
    """Publish a finished folder by renaming `staging` (a sibling, so the
    same filesystem) onto `dest`, and make the rename durable: `dest` is
    absent or complete, never half-written. replace: whatever is at `dest`
    is removed first; otherwise rename(2) itself refuses a non-empty `dest`
    (OSError ENOTEMPTY or EEXIST), so the check and the publish are one step."""
    if replace:
        shutil.rmtree(dest, ignore_errors=True)
    os.rename(staging, dest)
    fsync_dir(Path(dest).parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through open_atomic: the old file or the whole
    new one, never a prefix; on error OSError and nothing left behind."""
    with open_atomic(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json_atomic(path: Path, data) -> None:
    """`data` as indented JSON at `path` (its folder made if missing), through
    write_text_atomic. Serialisation happens first, so an object JSON cannot
    encode leaves the old file untouched."""
    text = json.dumps(data, indent=2) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path), text)
