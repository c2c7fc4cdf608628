"""Plan a sweep into a folder, and drive its cells through an executor.

`run_sweep` is idempotent: cells whose result is published are skipped, so
running it again after a crash (of a cell, of the driver, of a node)
resumes the sweep. A failed attempt is retried (up to the spec's retries,
or the caller's) before the cell is reported failed; a cell that failed in
an earlier run gets fresh attempts in the next.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..atomic import write_json_atomic, write_text_atomic
from . import cells
from .errors import SweepError
from .executors import Done, Executor, Job
from .layout import SweepDir
from .spec import Cell, SweepSpec, expand, order


@dataclass
class Plan:
    sweep: SweepDir
    cells: list[Cell]
    seed: int
    created: bool           # False: the folder already held this very plan


def plan_sweep(spec_path: Path | str, root: Path | str, seed: int | None = None) -> Plan:
    """Expand the spec into cells, shuffle them (seeded) and record the plan in
    `root`. Planning the same spec into its own folder again changes nothing;
    a folder that holds another plan is refused."""
    spec = SweepSpec.load(spec_path)
    grid_cells = expand(spec)
    sd = SweepDir(root)
    if sd.has_plan():
        old = sd.load_plan()
        if {c["hash"] for c in old["cells"]} == {c.hash for c in grid_cells}:
            return Plan(sd, sd.cells(), int(old["seed"]), False)
        raise SweepError(f"{sd.root} already holds another sweep ({old['spec']['sweep']['name']}, "
                         f"{len(old['cells'])} cells)", hint="plan into another --out folder")
    if sd.root.exists() and any(sd.root.iterdir()):
        raise SweepError(f"{sd.root} is not empty and holds no sweep plan", hint="plan into a new folder")
    if seed is None:
        seed = spec.seed if spec.seed is not None else int.from_bytes(os.urandom(4), "little")
    ordered = order(grid_cells, seed)
    sd.meta.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sd.meta / "spec.toml", Path(spec_path).read_text(encoding="utf-8"))
    write_json_atomic(sd.plan_path, {"spec": spec.to_dict(), "seed": seed, "planned": time.time(),
                                     "cells": [c.to_dict() for c in ordered]})
    return Plan(sd, ordered, seed, True)


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    running: int = 0


@dataclass
class RunReport:
    total: int
    skipped: int                           # finished before this run
    ran: int = 0                           # finished in this run
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    attempts: int = 0
    retried: int = 0
    cleared_staging: int = 0               # half-run cells a dead driver left
    scan_s: float = 0.0                    # finding what is finished
    first_start_s: float | None = None     # from the call to the first cell started
    wall_s: float = 0.0
    stopped_early: bool = False            # max_cells reached


Callback = Callable[[str, "Cell | None", Progress], None]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _resources(cell: Cell, spec: dict) -> dict:
    return {**cells.get(cell.kind).resources(cell.params), **(spec.get("resources") or {})}


def run_sweep(sd: SweepDir, executor: Executor, *, retries: int | None = None, max_cells: int | None = None,
              progress: Callback | None = None, poll_s: float = 0.5) -> RunReport:
    """Run every unfinished cell of the planned sweep in `sd` on `executor`.
    `progress(event, cell, counts)` is called on start/done/retry/failed."""
    t0 = time.monotonic()
    plan = sd.load_plan()
    sd.lock()
    try:
        cleared = sd.clear_staging()
        all_cells = sd.cells()
        pending = [c for c in all_cells if not sd.is_done(c)]
        rep = RunReport(total=len(all_cells), skipped=len(all_cells) - len(pending), cleared_staging=cleared)
        rep.scan_s = round(time.monotonic() - t0, 4)
        if max_cells is not None and len(pending) > max_cells:
            pending, rep.stopped_early = pending[:max_cells], True
        tries = 1 + (plan["spec"]["sweep"]["retries"] if retries is None else retries)
        counts = Progress(total=len(all_cells), done=rep.skipped)
        entry = {"started": time.time(), "pid": os.getpid(), **executor.describe(), "pending": len(pending),
                 "skipped": rep.skipped, "cleared_staging": cleared}
        sd.log_run({**entry, "event": "start"})
        queue = [Job(c, 1, Path(), _resources(c, plan["spec"])) for c in pending]
        executor.prepare(sorted({m for c in pending for m in cells.get(c.kind).preload}))
        try:
            _drive(sd, executor, queue, tries, rep, counts, progress, poll_s, t0)
        except BaseException:
            executor.close()
            rep.wall_s = round(time.monotonic() - t0, 4)
            sd.log_run({**entry, "event": "interrupted", "ran": rep.ran, "wall_s": rep.wall_s})
            raise
        executor.close()
        rep.wall_s = round(time.monotonic() - t0, 4)
        sd.log_run({**entry, "event": "end", "ran": rep.ran, "failed": len(rep.failed), "attempts": rep.attempts,
                    "retried": rep.retried, "scan_s": rep.scan_s, "first_start_s": rep.first_start_s,
                    "wall_s": rep.wall_s})
        return rep
    finally:
        sd.unlock()


# Set by a signal handler (request_stop). A KeyboardInterrupt raised from a
# handler is lost when the signal lands in an at-fork hook or a finalizer
# (seen: in logging's _releaseLock while the pool forked a worker, and the run
# went on to exit 0); the flag is not, and the drive loop acts on it.
_STOP = threading.Event()


def request_stop() -> None:
    _STOP.set()


def _drive(sd: SweepDir, ex: Executor, queue: list[Job], tries: int, rep: RunReport, counts: Progress,
           progress: Callback | None, poll_s: float, t0: float) -> None:
    def tell(event: str, cell: Cell | None) -> None:
        counts.running = ex.running()
        if progress:
            progress(event, cell, counts)

    tell("begin", None)
    while queue or ex.running():
        if _STOP.is_set():
            raise KeyboardInterrupt("stop requested")
        while queue and ex.can_start(queue[0]):
            job = queue.pop(0)
            job.staging = sd.new_staging(job.cell)
            ex.start(job)
            rep.attempts += 1
            if rep.first_start_s is None:
                rep.first_start_s = round(time.monotonic() - t0, 4)
            tell("start", job.cell)
        for done in ex.wait(poll_s):
            _finish(sd, done, queue, tries, rep, counts, tell)


def _finish(sd: SweepDir, done: Done, queue: list[Job], tries: int, rep: RunReport, counts: Progress,
            tell: Callable[[str, Cell | None], None]) -> None:
    job = done.job
    if done.ok:
        sd.publish(job.cell, job.staging)
        rep.ran += 1
        counts.done += 1
        tell("done", job.cell)
        return
    detail = _read_json(job.staging / "error.json")
    shutil.rmtree(job.staging, ignore_errors=True)
    if job.attempt < tries:
        rep.retried += 1
        # to the front: a retry should not wait behind the rest of the sweep
        queue.insert(0, Job(job.cell, job.attempt + 1, Path(), job.resources))
        tell("retry", job.cell)
        return
    sd.record_failure(job.cell, {"error": done.error, "attempts": job.attempt, "time": time.time(),
                                 "traceback": detail.get("traceback"), "hostname": detail.get("hostname")})
    rep.failed.append((job.cell, done.error))
    counts.failed += 1
    tell("failed", job.cell)
