"""The foreground loop behind `aios-lab deploy`: attach, watch, detach.

Works for any sched_ext policy; for a learning one (a manifest with a
[model] table) it also drains the decision log, writes it to a trace,
and retrains on a schedule (kind "tree", mllb), or pushes a frequency
table and swaps new ones in (kind "freq-table", freq). Events go to a
callback so the CLI only prints.
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..child import start_command
from .deployment import Deployment
from ..errors import ModelError, PolicyError, SchedulerEjected
from .policy import Policy
from .sched_ext import ExitInfo


# Restart after a kernel-requested exit (CPU hotplug): wait, then attach again,
# doubling the wait each time up to the cap; give up after MAX_RESTARTS in a
# row that did not stay attached for STABLE_S (a CPU flapping on and off, or
# a policy that cannot attach on the new CPU set, must end, not spin).
RESTART_BACKOFF_S = 0.1
RESTART_BACKOFF_MAX_S = 5.0
MAX_RESTARTS = 8
STABLE_S = 60.0


@dataclass
class DeployResult:
    final_stats: dict[str, int] = field(default_factory=dict)
    exit_info: ExitInfo | None = None
    ejected: SchedulerEjected | None = None
    command_exit: int | None = None
    decisions_path: Path | None = None
    table_swaps: list[dict] = field(default_factory=list)
    restarts: list[dict] = field(default_factory=list)


class DeployLoop:
    def __init__(self, policy: Policy, tunables: dict[str, Any], *, model_path: str | None = None,
                 mode: str | None = None, decisions_out: Path | None = None,
                 retrain_every_s: float | None = None, retrain_min_rows: int = 500,
                 command: list[str] | None = None, watch_model: bool = False,
                 stats_socket: Path | str | None = None) -> None:
        self.policy = policy
        self.tunables = tunables
        self.command = list(command or [])
        self.retrain_every_s = retrain_every_s
        self.retrain_min_rows = retrain_min_rows
        self.decisions_out = decisions_out
        self.learning = None
        self.freq = None
        self.watch_model = watch_model
        self._watched = None
        kind = policy.model.kind if policy.model is not None else None
        if watch_model and (kind != "freq-table" or not model_path):
            raise PolicyError("watching the model file needs a frequency-table policy and a table file",
                              hint="e.g. aios-lab deploy freq --model table.json --watch")
        if kind == "freq-table":
            unused = [n for n, v in (("mode", mode), ("decisions", decisions_out),
                                     ("retrain_every", retrain_every_s)) if v is not None]
            if unused:
                raise PolicyError(f"policy {policy.name} deploys a frequency table: {', '.join(unused)} "
                                  "apply to decision-tree policies (mllb)")
            from .kinds.freq_table import FreqRun

            self.freq = FreqRun.create(policy, tunables, table_path=model_path)
            self._watched = _file_stamp(model_path) if watch_model else None
        elif policy.model is not None:
            from ..mllb.session import LearningRun

            self.learning = LearningRun.create(policy, tunables, mode=mode, model_path=model_path)
        self.model_path = model_path
        self.writer = None
        self._streak = 0  # restarts in a row (see _restart)
        self.stats_socket = stats_socket
        self._dep: Deployment | None = None  # the live one, for the stats server's thread

    def _open_writer(self):
        from ..telemetry.writer import TraceWriter

        meta = {"kind": "lb_decisions", "policy": self.policy.name, "tunables": self.tunables,
                "mode": self.learning.mode if self.learning else None,
                "model": self.learning.model_source if self.learning else None,
                "kernel": {"release": os.uname().release}, "workload_command": self.command}
        return TraceWriter(self.decisions_out, meta)

    def run(self, duration_s: float | None, interval_s: float,
            on_event: Callable[[dict], None]) -> DeployResult:
        res = DeployResult()
        self._warm_up()
        if self.decisions_out is not None:
            self.writer = self._open_writer()  # refuses an existing target before anything is attached
            if self.learning is not None:
                self.learning.keep_pending = True
        try:
            dep = self._attach()
        except BaseException as exc:
            # Nothing ran: no trace. start() has already detached and cleaned up.
            if self.writer is not None:
                self.writer.abort()
                self.writer = None
            if isinstance(exc, SchedulerEjected):
                # Ejected while being enabled (e.g. scx_bpf_error on the
                # first task it saw): reported as an ejection, like later ones.
                res.ejected, res.exit_info = exc, exc.exit_info
                return res
            raise
        started = time.monotonic()
        attached = {"event": "attached", "policy": self.policy.name, "load_s": round(dep.load_s or 0, 3),
                    "attach_s": round(dep.attach_s or 0, 3), "tunables": dep.tunables,
                    "mode": self.learning.mode if self.learning else None}
        if self.freq is not None:
            attached["table"] = ({"version": int(self.freq.table.version), "source": self.freq.source}
                                 if self.freq.table is not None else None)
        on_event(attached)
        proc = None
        self._dep = dep
        server = self._serve_stats(dep, on_event)
        prev = dep.read_stats()
        next_retrain = started + self.retrain_every_s if self.retrain_every_s else None
        status = "complete"
        attached_at = started
        try:
            # Inside the try: a command that cannot start still detaches.
            proc = start_command(self.command) if self.command else None
            while duration_s is None or time.monotonic() - started < duration_s:
                end = time.monotonic() + interval_s
                if duration_s is not None:
                    end = min(end, started + duration_s)
                try:
                    while time.monotonic() < end:
                        dep.check()
                        self._drain()
                        if proc is not None and proc.poll() is not None:
                            break
                        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
                except SchedulerEjected as exc:
                    dep = self._restart(dep, exc, res, started, attached_at, on_event)
                    self._dep = dep
                    attached_at = time.monotonic()
                    prev = dep.read_stats()
                    continue
                cur = dep.read_stats()
                on_event({"event": "stats", "t": round(time.monotonic() - started, 2), "stats": cur,
                          "delta": {k: cur[k] - prev.get(k, 0) for k in cur}})
                prev = cur
                if self._watched is not None:
                    self._reload_if_changed(started, on_event)
                if next_retrain is not None and time.monotonic() >= next_retrain:
                    self._retrain(started, on_event)
                    next_retrain = time.monotonic() + self.retrain_every_s
                if proc is not None and proc.poll() is not None:
                    res.command_exit = proc.returncode
                    on_event({"event": "command_exited", "exit_code": proc.returncode,
                              "elapsed_s": time.monotonic() - started})
                    break
        except SchedulerEjected as exc:
            res.ejected = exc
            status = "truncated"
        except KeyboardInterrupt:
            status = "truncated" if proc is not None or duration_s is not None else "complete"
        except BaseException:
            status = "aborted"
            raise
        finally:
            if server is not None:
                server.close()
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            res.final_stats = dep.read_stats() if res.ejected is None and dep.stats else prev
            res.exit_info = self._detach(dep)
            if self.freq is not None:
                res.table_swaps = [s.__dict__ for s in self.freq.swaps]
            self._drain()
            res.decisions_path = self._close_writer(status, res)
        if res.decisions_path is not None:
            on_event({"event": "decisions_written", "path": str(res.decisions_path),
                      "rows": self.learning.seen if self.learning else 0})
        return res

    def _serve_stats(self, dep: Deployment, on_event: Callable[[dict], None]):
        """The policy's counters over the scx_stats protocol (see scx_stats),
        while it is deployed; a socket that cannot be made is reported, not fatal."""
        if self.stats_socket is None or self.policy.stats is None:
            return None
        from ..scx_stats import StatsServer, stats_meta

        names = {k: self.policy.stats.help.get(k, "") for k in dep.read_stats()}
        server = StatsServer(stats_meta(self.policy.name, names),
                             lambda: self._dep.read_stats() if self._dep else {}, self.stats_socket)
        try:
            server.start()
        except OSError as e:
            on_event({"event": "stats_socket_unavailable", "path": str(self.stats_socket),
                      "why": e.strerror or str(e)})
            return None
        on_event({"event": "stats_socket", "path": str(self.stats_socket)})
        return server

    def _attach(self) -> Deployment:
        if self.learning is not None:
            self.learning.start()
            return self.learning.dep
        if self.freq is not None:
            self.freq.start()
            return self.freq.dep
        return Deployment(self.policy, self.tunables).start()

    def _detach(self, dep: Deployment):
        owner = self.learning or self.freq
        return owner.stop() if owner is not None else dep.stop()

    def _restart(self, dep: Deployment, exc: SchedulerEjected, res: DeployResult, started: float,
                 attached_at: float, on_event: Callable[[dict], None]) -> Deployment:
        """Attach again after the kernel asked for a restart (CPU hotplug), as
        scx schedulers do, with backoff; re-raises ``exc`` (or the last
        ejection) when it was not a restart request or restarts keep failing."""
        if time.monotonic() - attached_at >= STABLE_S:
            self._streak = 0  # it had settled: a new episode, not a flapping CPU
        while True:
            info = exc.exit_info
            if info is None or not info.should_restart or self._streak >= MAX_RESTARTS:
                raise exc
            self._detach(dep)
            backoff = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** self._streak)
            self._streak += 1
            record = {"t": round(time.monotonic() - started, 2), "reason": info.restart_reason,
                      "exit": info.describe(), "backoff_s": backoff}
            res.restarts.append(record)
            on_event({"event": "restarting", **record})
            time.sleep(backoff)
            try:
                dep = self._attach()
            except SchedulerEjected as again:  # e.g. another CPU went away meanwhile
                exc = again
                continue
            on_event({"event": "restarted", "t": round(time.monotonic() - started, 2),
                      "restarts": len(res.restarts)})
            return dep

    def swap(self, table, source: str = ""):
        """Hot swap: make `table` (a FreqTable) the live one while `run` runs,
        e.g. from the on_event callback. The table is checked first; on any
        error the live table stays."""
        if self.freq is None:
            raise PolicyError(f"policy {self.policy.name} does not deploy a frequency table")
        return self.freq.swap(table, source=source)

    def _reload_if_changed(self, started: float, on_event: Callable[[dict], None]) -> None:
        """--watch: when the table file changed, load, check and swap it in."""
        from ..dvfs.table import load_table

        stamp = _file_stamp(self.model_path)
        if stamp == self._watched or stamp is None:
            return  # unchanged, or being replaced right now: look again next interval
        self._watched = stamp
        t = round(time.monotonic() - started, 2)
        try:
            table = load_table(self.model_path)
            if self.freq.table is not None and self.freq.table.version == table.version \
                    and (self.freq.table.perf == table.perf).all():
                return  # rewritten with the same table
            rec = self.swap(table, source=str(self.model_path))
        except ModelError as exc:
            on_event({"event": "swap_rejected", "t": t, "why": exc.one_line()})
            return
        on_event({"event": "table_swapped", "t": t, "version": rec.version, "slot": rec.slot,
                  "source": rec.source})

    def _warm_up(self) -> None:
        """Import now what the loop will need, before the scheduler is attached:
        in a TCG guest pandas takes over a minute to import and scikit-learn
        three, and a first drain or retrain stalled that long would leave the
        decision ring undrained and the retrain schedule meaningless."""
        if self.learning is None:
            return
        if self.decisions_out is not None or self.retrain_every_s:
            import pandas  # noqa: F401
        if self.retrain_every_s:
            from ..mllb import train  # noqa: F401  (imports scikit-learn)

    def _drain(self) -> None:
        if self.learning is None:
            return
        self.learning.poll()
        if self.writer is not None:
            self.writer.append_frame("lb_decisions", self.learning.take_new())

    def _retrain(self, started: float, on_event: Callable[[dict], None]) -> None:
        self._drain()  # train on everything logged so far
        t = round(time.monotonic() - started, 2)
        try:
            out = self.learning.retrain(min_rows=self.retrain_min_rows)
        except ModelError as exc:
            on_event({"event": "retrain_skipped", "t": t, "why": exc.one_line()})
            return
        if out is None:
            on_event({"event": "retrain_skipped", "t": t, "why": f"fewer than {self.retrain_min_rows} decisions with outcomes so far"})
            return
        mf, report = out
        on_event({"event": "retrained", "t": t, "rows": report.rows_train + report.rows_test,
                  "accuracy": report.accuracy, "agreement": report.agreement, "version": mf.version,
                  "slot": self.learning.swaps[-1].slot})

    def _close_writer(self, status: str, res: DeployResult) -> Path | None:
        if self.writer is None:
            return None
        w, self.writer = self.writer, None
        if status == "aborted":
            w.abort()
            return None
        extra: dict[str, Any] = {"policy_stats_total": res.final_stats,
                                 "exit": res.exit_info.describe() if res.exit_info else None}
        if self.learning is not None:
            extra["model_swaps"] = [s.__dict__ for s in self.learning.swaps]
        return w.close(status=status, extra=extra)


def _file_stamp(path: str | Path | None) -> tuple[int, int, int] | None:
    """(inode, mtime_ns, size): an atomic rewrite changes the inode, an edit in place the rest."""
    try:
        st = os.stat(path)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
