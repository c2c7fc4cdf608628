"""How the root service puts a registry entry on the CPU: registered
deployers, chosen by name in the service's configuration.

* `sched_ext`: a rollout (control.rollout) of the entry's own object (the
  stored blob, not a fresh build) with its tunables: the last known good
  entry is loaded beside it, a canary window watches it, an ejection or a
  breached guard rolls back to the last known good in one attach, and
  `rollback` does the same on request. It runs in a thread of the service,
  which holds the links, until stopped or its time is up.
* `open-only`: libbpf opens the stored object and sets its tunables, and
  nothing is loaded: for a host without sched_ext (where the service can
  still check and audit requests) and for tests. It says so in every answer.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ServiceRefused
from .audit import Actor
from .entry import Entry
from .stored import StoredPolicy, materialize  # noqa: F401  (re-exported for the service)


@dataclass(frozen=True)
class Job:
    """One deploy request the service granted."""
    registry: Path
    entry: Entry
    policy: StoredPolicy
    tunables: dict[str, Any]
    actor: Actor
    run_dir: Path
    window_s: float = 30.0      # the rollout's canary window


class Deployer:
    name = ""

    def start(self, job: Job) -> dict[str, Any]:
        raise NotImplementedError

    def alive(self) -> dict[str, Any] | None:
        """None while the deployment runs; else what ended it."""
        raise NotImplementedError

    def rollback(self, reason: str) -> dict[str, Any]:
        raise ServiceRefused(f"the {self.name} deployer keeps no last known good policy to roll back to")

    def stop(self) -> dict[str, Any]:
        raise NotImplementedError


class SchedExtDeployer(Deployer):
    name = "sched_ext"
    START_S = 60.0      # loading two objects and the first attach, under TCG on a busy host

    def __init__(self) -> None:
        self._rollout = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._outcome: dict[str, Any] | None = None
        self._error: BaseException | None = None

    def start(self, job):
        from .registry import Registry
        from .rollout import Guards, Rollout

        self._stop.clear()
        self._outcome = self._error = None
        ready = threading.Event()

        def run() -> None:
            try:
                with Registry(job.registry) as reg:
                    self._rollout = Rollout(reg, job.entry.hash, job.actor, run_dir=job.run_dir,
                                            guards=Guards(window_s=job.window_s), audit_admission=False,
                                            stopped=self._stop.is_set)
                    ready.set()
                    self._outcome = self._rollout.run().to_dict()
            except BaseException as e:    # reported by start() or alive(); the thread must not die silently
                self._error = e
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name=f"rollout-{job.entry.hash[:12]}", daemon=True)
        self._thread.start()
        ready.wait(self.START_S)
        deadline = time.monotonic() + self.START_S
        while self._thread.is_alive() and self._rollout.live is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._error is not None:
            raise self._error
        if self._rollout is None or self._rollout.live is None:
            self.stop()
            raise ServiceRefused(f"{job.entry.name} did not go live within {self.START_S:.0f} s")
        return {"loaded": True, "live": self._rollout.live, "lkg": self._rollout.lkg_hash}

    def alive(self):
        if self._thread is not None and self._thread.is_alive():
            return None
        if self._error is not None:
            return {"error": str(self._error)}
        return {"ended": self._outcome}

    def rollback(self, reason):
        r = self._rollout
        if r is None or not self._thread.is_alive():
            raise ServiceRefused("no rollout is running")
        r.request_rollback(reason)
        deadline = time.monotonic() + self.START_S
        while self._thread.is_alive() and r.live == "candidate" and time.monotonic() < deadline:
            time.sleep(0.005)
        return {"live": r.live, "rollback": r.last_rollback}

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.START_S)
        return {"outcome": self._outcome}


class OpenOnlyDeployer(Deployer):
    name = "open-only"

    def start(self, job):
        from ..bpf import BpfObject

        obj = BpfObject.open(job.policy.object_path)
        try:
            obj.set_rodata_many(job.tunables)
        finally:
            obj.close()
        return {"loaded": False, "note": "open-only deployer: object opened and tunables set; nothing loaded"}

    def alive(self):
        return None

    def stop(self):
        return {"loaded": False}


DEPLOYERS: dict[str, type[Deployer]] = {d.name: d for d in (SchedExtDeployer, OpenOnlyDeployer)}
