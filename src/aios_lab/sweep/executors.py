"""Executors: where cells run. Registered types, looked up by name.

local  a pool of worker processes on this host, running as many cells at
       once as the host has cores for (each cell asks for num_cpus; a
       vm-bench cell under TCG asks 1). A worker that dies (a crash, a kill,
       the OOM killer) fails only its own cell, which says how it ended, and
       is replaced. Workers are forked from the driver after it imported what
       the cells need, and reused: no interpreter start, imports or first-use
       set-up per cell. (multiprocessing's forkserver and spawn re-run the
       driver's __main__ in every child, a CLI import per process.) The
       driver holds no other threads while it forks (the CLI's progress bar
       is refreshed by hand, not by a thread).
ray    each cell a Ray task with the kind's resource requests (num_cpus,
       memory, custom resources from the spec), on a cluster (--address) or
       a local one started here. The task runs the cell in a scratch folder
       on its node and returns it as a tar archive, which the driver unpacks
       into the sweep's folder: nodes need no shared filesystem.

Both report each attempt as Done(ok, error); the runner decides on retries.
"""
from __future__ import annotations

import ctypes
import io
import json
import multiprocessing
import os
import signal
import tarfile
import tempfile
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any, ClassVar

from ..variants import Variants
from .errors import ExecutorError
from .spec import Cell

PR_SET_PDEATHSIG = 1


# Ray 2.x still binds some listeners to every interface (docs/sweep.md,
# Limits); giving the node loopback as its address keeps the traffic of a
# local cluster between its own processes on 127.0.0.1.
LOCAL_NODE_IP = "127.0.0.1"


@dataclass
class Job:
    cell: Cell
    attempt: int
    staging: Path
    resources: dict[str, Any] = field(default_factory=dict)


@dataclass
class Done:
    job: Job
    ok: bool
    error: str = ""


EXECUTORS: "Variants[type[Executor]]" = Variants("executor", ExecutorError, "executors:")
register, get = EXECUTORS.register, EXECUTORS.get


class Executor:
    name: ClassVar[str]

    def describe(self) -> dict:
        return {"executor": self.name}

    def prepare(self, modules: list[str]) -> None:
        """Before the first cell: the modules the sweep's cells import."""

    def can_start(self, job: Job) -> bool:
        raise NotImplementedError

    def start(self, job: Job) -> None:
        raise NotImplementedError

    def wait(self, timeout: float) -> list[Done]:
        raise NotImplementedError

    def running(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Stop what still runs (the driver is stopping)."""


def _error_of(staging: Path, fallback: str) -> str:
    try:
        err = json.loads((staging / "error.json").read_text())
        return f"{err['type']}: {err['message']}"
    except (OSError, ValueError, KeyError):
        return fallback


def _local_worker(conn, driver: int) -> None:
    """A worker process: runs the cells the driver sends, one at a time, until
    told to stop (None) or the driver goes away."""
    # Die with the driver: a cell must not outlive the driver that would publish it.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != driver:  # it died before prctl took effect
        os._exit(0)
    from .worker import execute

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        if msg is None:
            os._exit(0)
        cell, staging, attempt = msg
        conn.send(execute(Cell.from_dict(cell), Path(staging), attempt))


@dataclass
class _Worker:
    proc: Any
    conn: Any
    job: Job | None = None
    need: float = 0.0


@register
class LocalExecutor(Executor):
    name = "local"

    def __init__(self, jobs: int | None = None, **_: Any) -> None:
        self.slots = jobs or os.cpu_count() or 1
        if self.slots < 1:
            raise ExecutorError(f"--jobs {jobs}: need at least 1")
        self._ctx = multiprocessing.get_context("fork")
        self._workers: list[_Worker] = []

    def describe(self) -> dict:
        return {"executor": self.name, "slots": self.slots}

    def prepare(self, modules: list[str]) -> None:
        import importlib

        for m in ["aios_lab.sweep.worker", *modules]:
            importlib.import_module(m)

    def _need(self, job: Job) -> float:
        return min(float(job.resources.get("num_cpus", 1)), self.slots)

    def can_start(self, job: Job) -> bool:
        used = sum(w.need for w in self._workers if w.job is not None)
        return used + self._need(job) <= self.slots + 1e-9

    def start(self, job: Job) -> None:
        for dead in [w for w in self._workers if w.job is None and not w.proc.is_alive()]:
            dead.proc.join()
            self._workers.remove(dead)
        w = next((w for w in self._workers if w.job is None), None)
        if w is None:
            mine, theirs = self._ctx.Pipe()
            proc = self._ctx.Process(target=_local_worker, args=(theirs, os.getpid()), name="sweep-worker")
            proc.start()
            theirs.close()
            w = _Worker(proc, mine)
            self._workers.append(w)
        w.job, w.need = job, self._need(job)
        w.conn.send((job.cell.to_dict(), str(job.staging), job.attempt))

    def running(self) -> int:
        return sum(1 for w in self._workers if w.job is not None)

    def _died(self, w: _Worker) -> Done:
        w.proc.join(5)
        code = w.proc.exitcode
        self._workers.remove(w)
        why = (f"cell process killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"cell process exited with status {code}")
        return Done(w.job, False, why)

    def wait(self, timeout: float) -> list[Done]:
        busy = {id(w): w for w in self._workers if w.job is not None}
        if not busy:
            return []
        handles = {}
        for w in busy.values():
            handles[w.conn] = w
            handles[w.proc.sentinel] = w
        out, seen = [], set()
        for h in mp_wait(list(handles), timeout=timeout):
            w = handles[h]
            if id(w) in seen:
                continue
            seen.add(id(w))
            try:
                ok = w.conn.recv() if w.conn.poll() else None
            except (EOFError, OSError):
                ok = None
            if ok is None:  # no answer: the process died with its cell
                out.append(self._died(w))
                continue
            job, w.job = w.job, None
            out.append(Done(job, True) if ok else Done(job, False, _error_of(job.staging, "cell failed")))
        return out

    def close(self) -> None:
        for w in self._workers:
            if w.job is None:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            else:
                w.proc.kill()
        for w in self._workers:
            w.proc.join(10)
            if w.proc.exitcode is None:
                w.proc.kill()
                w.proc.join()
        self._workers.clear()


def _ray_cell(cell: dict, attempt: int) -> tuple[bool, bytes]:
    """The Ray task: run the cell in a scratch folder on this node, return it as a tar."""
    from .worker import execute

    with tempfile.TemporaryDirectory(prefix="aios-sweep-") as d:
        out = Path(d) / "cell"
        ok = execute(Cell.from_dict(cell), out, attempt)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(out, arcname=".")
        return ok, buf.getvalue()


@register
class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None, **_: Any) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError("the ray executor needs Ray", hint="pip install 'aios-lab[ray]'") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            import logging

            try:
                if address:
                    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
                else:
                    # A local cluster of `jobs` CPUs for this run, without the
                    # dashboard, its components addressing each other on loopback.
                    ray.init(num_cpus=jobs, include_dashboard=False, logging_level=logging.WARNING,
                             log_to_driver=False, _node_ip_address=LOCAL_NODE_IP)
            except Exception as e:  # Ray raises many types for an unreachable or bad address
                raise ExecutorError(f"cannot reach a Ray cluster at {address or 'a new local one'}: {e}",
                                    hint="start one with `ray start --head` and pass its address, "
                                         "or leave --address out") from None
        self.cpus = float(ray.cluster_resources().get("CPU", 1))
        # Keep some cells queued in Ray (so a node that frees up starts the next
        # at once), not all: retries then go to the front without waiting behind
        # the whole sweep.
        self.max_in_flight = max(2, int(2 * self.cpus))
        self._remote = ray.remote(_ray_cell)
        self._refs: dict[Any, Job] = {}
        self._feasible: set[tuple] = set()

    def describe(self) -> dict:
        return {"executor": self.name, "cluster_cpus": self.cpus,
                "address": self._ray.get_runtime_context().gcs_address}

    def can_start(self, job: Job) -> bool:
        return len(self._refs) < self.max_in_flight

    def _check_feasible(self, res: dict[str, Any]) -> None:
        # Ray queues a task no node can ever run without a word: refuse it here.
        key_ = tuple(sorted(res.items()))
        if key_ in self._feasible:
            return
        have = self._ray.cluster_resources()
        for k, v in res.items():
            key = {"num_cpus": "CPU", "num_gpus": "GPU"}.get(k, k)
            if float(have.get(key, 0)) < float(v):
                raise ExecutorError(f"no node of the Ray cluster offers {key}={v} (the cluster has "
                                    f"{have.get(key, 0)})", hint="start nodes with `ray start --resources "
                                    "'{...}'` or lower the sweep's [resources]")
        self._feasible.add(key_)

    def start(self, job: Job) -> None:
        self._check_feasible(job.resources)
        res = dict(job.resources)
        opts: dict[str, Any] = {"num_cpus": float(res.pop("num_cpus", 1)), "max_retries": 0}
        if "memory" in res:
            opts["memory"] = int(res.pop("memory"))
        if res:
            opts["resources"] = {k: float(v) for k, v in res.items()}
        ref = self._remote.options(**opts).remote(job.cell.to_dict(), job.attempt)
        self._refs[ref] = job

    def running(self) -> int:
        return len(self._refs)

    def wait(self, timeout: float) -> list[Done]:
        if not self._refs:
            return []
        ray = self._ray
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        out = []
        for ref in ready:
            job = self._refs.pop(ref)
            try:
                ok, blob = ray.get(ref)
            except ray.exceptions.RayError as e:
                # The worker or its node died, or the task could not be scheduled.
                out.append(Done(job, False, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"))
                continue
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                tar.extractall(job.staging, filter="data")
            out.append(Done(job, ok, "" if ok else _error_of(job.staging, "cell failed")))
        return out

    def close(self) -> None:
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)
        self._refs.clear()
        if self._owns:
            self._ray.shutdown()
