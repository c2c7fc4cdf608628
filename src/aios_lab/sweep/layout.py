"""The sweep folder.

    ROOT/
      cells/governor=schedutil/trace=bursty-1/rep=0/   one folder per cell, keyed by its parameters
          cell.json      the cell (kind, parameters, hash)
          result.json    metrics + provenance; its presence (with the cell's hash) means done
          ...            the cell's artifacts (trace/, table.json ...)
      _sweep/
          plan.json      the spec and every cell, in the recorded (shuffled) order
          spec.toml      the spec as given
          runs.jsonl     one line per `sweep run` (executor, counts, times)
          failed/HASH.json   the last failure of a cell that ran out of retries
          staging/       cells being run; a cell is moved into cells/ whole, by one rename
          lock           held by the running driver (flock), so two cannot run one sweep

Folder names are Hive-style key=value, so duckdb reads the whole sweep with
`read_json_auto('ROOT/cells/**/result.json', hive_partitioning = true)`.
Only the driver publishes, and only by renaming a complete staging folder,
so a reader (or a resumed sweep) never sees half a cell.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from ..atomic import publish_dir, write_json_atomic
from .errors import SweepError
from .spec import Cell

META = "_sweep"

# Lock fds this process holds. A flock belongs to the open file, which a
# fork shares: a forked cell process would keep the sweep locked after its
# driver died. Forked children close them at once.
_HELD_LOCKS: set[int] = set()


def _close_held_locks() -> None:
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_held_locks)


def _seg(key: str, value: Any) -> str:
    # Keep values readable (gs101:big, 7.3.4+deb13-amd64) but never a path separator.
    return f"{key}={quote(str(value), safe=':+,.-_@')}"


class SweepDir:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.meta = self.root / META
        self._lock_fd: int | None = None

    # -- the plan ------------------------------------------------------------------------

    @property
    def plan_path(self) -> Path:
        return self.meta / "plan.json"

    def has_plan(self) -> bool:
        return self.plan_path.is_file()

    def load_plan(self) -> dict:
        try:
            plan = json.loads(self.plan_path.read_text())
        except FileNotFoundError:
            raise SweepError(f"{self.root} is not a planned sweep (no {META}/plan.json)",
                             hint="plan it first: aios-lab sweep plan SPEC.toml --out DIR") from None
        except (OSError, json.JSONDecodeError) as e:
            raise SweepError(f"cannot read {self.plan_path}: {e}") from None
        return plan

    def cells(self) -> list[Cell]:
        return [Cell.from_dict(c) for c in self.load_plan()["cells"]]

    # -- cells ----------------------------------------------------------------------------

    def cell_dir(self, cell: Cell) -> Path:
        d = self.root / "cells"
        for k, v in cell.key.items():
            d = d / _seg(k, v)
        return d / f"rep={cell.rep}"

    def result(self, cell: Cell) -> dict | None:
        """The cell's published result, or None when it has not finished. A folder
        holding another cell's result (same key, other fixed parameters) is refused."""
        try:
            res = json.loads((self.cell_dir(cell) / "result.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            raise SweepError(f"cannot read {self.cell_dir(cell)}/result.json: {e}",
                             hint="remove that cell's folder to run it again") from None
        if res.get("cell", {}).get("hash") != cell.hash:
            raise SweepError(f"{self.cell_dir(cell)} holds another cell (hash {res.get('cell', {}).get('hash')}, "
                             f"planned {cell.hash})", hint="plan into an empty folder")
        return res

    def is_done(self, cell: Cell) -> bool:
        return self.result(cell) is not None

    def new_staging(self, cell: Cell) -> Path:
        d = self.meta / "staging" / f"{cell.hash}-{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        return d

    def publish(self, cell: Cell, staging: Path) -> Path:
        """Move a finished staging folder to the cell's place in one rename."""
        if not (staging / "result.json").is_file():
            raise SweepError(f"cell {cell.label()}: staging folder {staging} has no result.json")
        dest = self.cell_dir(cell)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Only a folder without a result of this cell can be at dest (result()
        # refused any other): a leftover from before; it is replaced.
        publish_dir(staging, dest)
        self.clear_failure(cell)
        return dest

    # -- failures and runs --------------------------------------------------------------------

    def failure_path(self, cell: Cell) -> Path:
        return self.meta / "failed" / f"{cell.hash}.json"

    def record_failure(self, cell: Cell, failure: dict) -> None:
        write_json_atomic(self.failure_path(cell), {"cell": cell.to_dict(), **failure})

    def clear_failure(self, cell: Cell) -> None:
        self.failure_path(cell).unlink(missing_ok=True)

    def failures(self) -> dict[str, dict]:
        d = self.meta / "failed"
        return {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))} if d.is_dir() else {}

    def log_run(self, entry: dict) -> None:
        with open(self.meta / "runs.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def runs(self) -> list[dict]:
        p = self.meta / "runs.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def staging_dirs(self) -> list[Path]:
        d = self.meta / "staging"
        return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    # -- the driver's lock ----------------------------------------------------------------------

    def lock(self) -> None:
        """Take the sweep for this driver; SweepError when another holds it. The
        kernel drops the lock when the driver dies, however it dies."""
        self.meta.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.meta / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SweepError(f"another `sweep run` is running {self.root}",
                             hint="wait for it, or stop it; `aios-lab sweep status` shows its progress") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        _HELD_LOCKS.add(fd)

    def is_locked(self) -> bool:
        try:
            fd = os.open(self.meta / "lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            _HELD_LOCKS.discard(self._lock_fd)
            os.close(self._lock_fd)
            self._lock_fd = None

    def clear_staging(self) -> int:
        """Remove what dead drivers left half-run (called with the lock held)."""
        stale = self.staging_dirs()
        for d in stale:
            shutil.rmtree(d, ignore_errors=True)
        return len(stale)

    # -- reading a whole sweep ------------------------------------------------------------------

    def results(self) -> Iterator[tuple[Cell, dict]]:
        for cell in self.cells():
            res = self.result(cell)
            if res is not None:
                yield cell, res

    def results_glob(self) -> str:
        return str(self.root / "cells" / "**" / "result.json")
