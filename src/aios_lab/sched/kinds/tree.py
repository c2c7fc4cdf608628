"""The "tree" model kind: mllb's decision tree, walked in BPF.

The run itself (slots, mode, decision log, retrain) is mllb.session's
LearningRun; this kind adds what deploying it for a while needs: the logged
decisions written to a trace (`--decisions`), and retraining on a schedule
(`--retrain-every`), both driven by the deploy loop's poll and tick.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ...errors import ModelError
from . import Event, ModelKind, register


@register
class TreeKind(ModelKind):
    name = "tree"
    policies = "decision-tree policies (mllb)"
    what = "a decision tree"
    options = frozenset({"mode", "decisions", "retrain_every"})
    modes = ("collect", "model")
    required_keys = ("features_enum",)

    def __init__(self, run: Any, decisions_out: Path | None, retrain_every_s: float | None,
                 retrain_min_rows: int, command: list[str]) -> None:
        self.run = run                      # mllb.session.LearningRun
        self.policy = run.policy
        self.decisions_out = decisions_out
        self.retrain_every_s = retrain_every_s
        self.retrain_min_rows = retrain_min_rows
        self.command = command
        self.writer = None
        self._attached_once = False
        self._next_retrain: float | None = None

    @property
    def dep(self):
        return self.run.dep

    @classmethod
    def load(cls, path):
        from ...mllb.model import load_model

        return load_model(path)

    @classmethod
    def create(cls, policy, tunables, model_path=None, *, mode: str | None = None,
               decisions: Path | None = None, retrain_every: float | None = None,
               retrain_min_rows: int = 500, command: list[str] | None = None, **_: Any) -> "TreeKind":
        from ...mllb.session import LearningRun

        run = LearningRun.create(policy, tunables, mode=mode, model_path=model_path)
        return cls(run, decisions, retrain_every, retrain_min_rows, list(command or []))

    def begin(self) -> None:
        self._warm_up()
        if self.decisions_out is not None:
            from ...telemetry.writer import TraceWriter

            meta = {"kind": "lb_decisions", "policy": self.policy.name, "tunables": self.run.tunables,
                    "mode": self.run.mode, "model": self.run.model_source,
                    "kernel": {"release": os.uname().release}, "workload_command": self.command}
            self.writer = TraceWriter(self.decisions_out, meta)  # refuses an existing target before attach
            self.run.keep_pending = True

    def _warm_up(self) -> None:
        """Import now what the loop will need, before the scheduler is attached:
        in a TCG guest pandas takes over a minute to import and scikit-learn
        three, and a first drain or retrain stalled that long would leave the
        decision ring undrained and the retrain schedule meaningless."""
        if self.decisions_out is not None or self.retrain_every_s:
            import pandas  # noqa: F401
        if self.retrain_every_s:
            from ...mllb import train  # noqa: F401  (imports scikit-learn)

    def start(self):
        try:
            self.run.start(prepare=self.prepare)
        except BaseException:
            if not self._attached_once and self.writer is not None:
                # Nothing ran: no trace. start() has already detached and cleaned up.
                self.writer.abort()
                self.writer = None
            raise
        if not self._attached_once and self.retrain_every_s:
            self._next_retrain = time.monotonic() + self.retrain_every_s
        self._attached_once = True
        return self.run.dep

    def prepare(self, obj) -> None:
        self.run.prepare(obj)

    def stop(self):
        return self.run.stop()

    def swap(self, model, source: str = ""):
        return self.run.swap(model, source=source)

    def status(self) -> dict[str, Any]:
        return {"mode": self.run.mode}

    def poll(self) -> None:
        self.run.poll()
        if self.writer is not None:
            self.writer.append_frame("lb_decisions", self.run.take_new())

    def tick(self, t: float, emit: Event) -> None:
        if self._next_retrain is not None and time.monotonic() >= self._next_retrain:
            self._retrain(t, emit)
            self._next_retrain = time.monotonic() + self.retrain_every_s

    def _retrain(self, t: float, emit: Event) -> None:
        self.poll()  # train on everything logged so far
        try:
            out = self.run.retrain(min_rows=self.retrain_min_rows)
        except ModelError as exc:
            emit({"event": "retrain_skipped", "t": t, "why": exc.one_line()})
            return
        if out is None:
            emit({"event": "retrain_skipped", "t": t,
                  "why": f"fewer than {self.retrain_min_rows} decisions with outcomes so far"})
            return
        mf, report = out
        emit({"event": "retrained", "t": t, "rows": report.rows_train + report.rows_test,
              "accuracy": report.accuracy, "agreement": report.agreement, "version": mf.version,
              "slot": self.run.swaps[-1].slot})

    def end(self, status: str, final: dict[str, Any], emit: Event) -> dict[str, Any]:
        self.poll()
        if self.writer is None:
            return {}
        w, self.writer = self.writer, None
        if status == "aborted":
            w.abort()
            return {}
        path = w.close(status=status, extra={**final, "model_swaps": [s.__dict__ for s in self.run.swaps]})
        emit({"event": "decisions_written", "path": str(path), "rows": self.run.seen})
        return {}
