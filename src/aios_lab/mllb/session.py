"""A learning policy attached and running: model slots, decision log, retraining.

`LearningRun` wraps a Deployment of a policy whose manifest has a [model]
table. Before the scheduler goes live it sets the mode and, when a model
file is given, verifies it against the loaded object's own BTF limits and
pushes it, so the first decision already uses it. While it runs, decisions
drain into an in-memory window and, when asked, into a trace directory
(`lb_decisions` table), and `swap()` replaces the model atomically.
`retrain()` closes the loop: train on the decisions logged so far, push.

Nothing is half-done on error: a model that fails verification is never
written to a slot; the trace is closed as truncated if the run dies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..bpf import BpfObject
from ..sched.deployment import Deployment
from ..errors import ModelError, PolicyError
from ..sched.policy import Policy
from .decisions import DecisionLog, decode
from .model import ModelFile, load_model
from .slots import ModelSlots


def check_model_fits(mf: ModelFile, slots: ModelSlots, where: str) -> None:
    """The model against the loaded policy (its BTF), not just its own file."""
    lim = slots.limits
    if list(mf.features) != lim.feature_names:
        raise ModelError(f"{where}: model features {list(mf.features)} are not this policy's {lim.feature_names}",
                         hint="retrain with `aios-lab train lb` on a trace from this build of the policy")
    mf.tree.validate(nr_features=lim.nr_features, max_nodes=lim.max_nodes, max_depth=lim.max_depth,
                     feature_max=lim.feature_max)


@dataclass
class SwapRecord:
    t: float
    version: int
    slot: int
    source: str


@dataclass
class LearningRun:
    policy: Policy
    tunables: dict[str, Any] = field(default_factory=dict)
    mode: str = "collect"
    model: ModelFile | None = None
    model_source: str = ""
    keep_window: int = 200_000      # decisions kept in memory for retraining
    keep_pending: bool = False      # keep decisions for take_new() (set when a trace is written)
    dep: Deployment | None = None
    slots: ModelSlots | None = None
    log: DecisionLog | None = None
    swaps: list[SwapRecord] = field(default_factory=list)
    _window: list[np.ndarray] = field(default_factory=list)
    _pending: list[np.ndarray] = field(default_factory=list)
    _kept: int = 0
    seen: int = 0                   # decisions drained so far

    @classmethod
    def create(cls, policy: Policy, tunables: dict[str, Any] | None = None, mode: str | None = None,
               model_path: Path | str | None = None) -> "LearningRun":
        if policy.model is None:
            raise PolicyError(f"policy {policy.name} learns nothing (its manifest has no [model] table)")
        mf = load_model(model_path) if model_path else None
        mode = mode or ("model" if mf else "collect")
        if mode == "model" and mf is None:
            raise ModelError("model mode needs a model", hint="pass --model FILE (train one with `aios-lab train lb`)")
        return cls(policy=policy, tunables=dict(tunables or {}), mode=mode, model=mf,
                   model_source=str(model_path or ""))

    # -- lifecycle -------------------------------------------------------------------

    def start(self, prepare: Callable[[BpfObject], None] | None = None) -> "LearningRun":
        """Load, `prepare` (this run's own unless the caller, its model kind,
        passes its step), attach."""
        self.dep = Deployment(self.policy, self.tunables, before_attach=prepare or self.prepare)
        try:
            self.dep.start()
        except BaseException:
            self._close_log()
            raise
        return self

    def prepare(self, obj: BpfObject) -> None:
        """After load, before attach: the model slots, the model checked
        against them and pushed, the mode, the decision log."""
        spec = self.policy.model
        assert spec is not None
        self.slots = ModelSlots(obj, spec)
        if self.model is not None:
            check_model_fits(self.model, self.slots, self.model_source)
            slot = self.slots.push(self.model.tree, self.model.version, self.model.checksum64())
            self.swaps.append(SwapRecord(time.time(), self.model.version, slot, self.model_source))
        self.slots.set_mode(self.mode)
        if spec.decisions_ring and self.dep is not None and self.dep.tunables.get("log_decisions", True):
            self.log = DecisionLog(obj, spec)

    def stop(self):
        try:
            if self.log is not None:
                self.poll()
        finally:
            self._close_log()
            info = self.dep.stop() if self.dep else None
        return info

    def _close_log(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def __enter__(self) -> "LearningRun":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- while running ---------------------------------------------------------------

    def poll(self) -> int:
        """Drain the decision ring; returns how many decisions arrived."""
        if self.log is None:
            return 0
        n = self.log.drain()
        if n:
            recs = self.log.take()
            self.seen += len(recs)
            if self.keep_pending:
                self._pending.append(recs)
            self._window.append(recs)
            self._kept += len(recs)
            while self._kept - len(self._window[0]) >= self.keep_window and len(self._window) > 1:
                self._kept -= len(self._window.pop(0))
        return n

    def take_new(self):
        """Decisions drained since the last call, as a DataFrame (for writing to a trace)."""
        if not self._pending:
            return None
        out = decode(np.concatenate(self._pending))
        self._pending.clear()
        return out

    def window(self):
        """The decisions kept for retraining, as a DataFrame of lb_decisions columns."""
        if not self._window:
            import pandas as pd

            return pd.DataFrame()
        return decode(np.concatenate(self._window))

    def swap(self, mf: ModelFile, source: str = "") -> SwapRecord:
        """Verify `mf` against the live policy and make it the active model."""
        if self.slots is None:
            raise ModelError("the policy is not running")
        check_model_fits(mf, self.slots, source or "new model")
        slot = self.slots.push(mf.tree, mf.version, mf.checksum64())
        rec = SwapRecord(time.time(), mf.version, slot, source)
        self.swaps.append(rec)
        return rec

    def set_mode(self, mode: str) -> None:
        if self.slots is None:
            raise ModelError("the policy is not running")
        self.slots.set_mode(mode)
        self.mode = mode

    def retrain(self, min_rows: int = 500, **train_kwargs: Any):
        """Train on the decision window and swap the result in.

        Returns (ModelFile, report), or None when there is too little data
        yet (the live model is left as it is)."""
        from .train import prepare, train

        df = self.window()
        if len(df) < min_rows or len(prepare(df)) < min_rows:
            return None
        df = df.assign(trace="live")
        mf, report = train(df, **train_kwargs)
        self.swap(mf, source="retrain")
        if self.mode != "model":
            self.set_mode("model")
        return mf, report
