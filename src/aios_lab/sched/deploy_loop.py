"""The foreground loop behind `aios-lab deploy`: attach, watch, detach.

Works for any sched_ext policy and knows no model kind: a learning policy
(a manifest with a [model] table) is deployed through the kind registered
for it (sched.kinds), which logs decisions and retrains (mllb's "tree") or
watches its table file and swaps (freq's "freq-table"). The loop owns the
child command, signals (aios_lab.signals), restarts the kernel asks for,
the scx_stats socket and the events, which go to a callback so the CLI only
prints.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..child import start_command
from ..errors import PolicyError, SchedulerEjected
from ..signals import StopSignals
from . import kinds
from .deployment import Deployment
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
    restarts: list[dict] = field(default_factory=list)
    # What the model kind reports at the end, for the summary (freq-table:
    # "table_swaps").
    model: dict[str, Any] = field(default_factory=dict)


class _NoModel:
    """A policy that learns nothing: the deployment alone (the kind protocol's
    start/stop; the rest of it does nothing)."""

    def __init__(self, policy: Policy, tunables: dict[str, Any]) -> None:
        self.policy, self.tunables = policy, tunables
        self.dep: Deployment | None = None

    def begin(self) -> None:
        pass

    def start(self) -> Deployment:
        self.dep = Deployment(self.policy, self.tunables).start()
        return self.dep

    def stop(self) -> ExitInfo | None:
        return self.dep.stop() if self.dep is not None else None

    def swap(self, model: Any, source: str = "") -> Any:
        raise PolicyError(f"policy {self.policy.name} has no model to swap (its manifest has no [model] table)")

    def poll(self) -> None:
        pass

    def tick(self, t: float, emit: Callable[[dict], None]) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {}

    def end(self, status: str, final: dict[str, Any], emit: Callable[[dict], None]) -> dict[str, Any]:
        return {}


class DeployLoop:
    def __init__(self, policy: Policy, tunables: dict[str, Any], *, model_path: str | None = None,
                 mode: str | None = None, decisions_out: Path | None = None,
                 retrain_every_s: float | None = None, retrain_min_rows: int = 500,
                 command: list[str] | None = None, watch_model: bool = False,
                 stats_socket: Path | str | None = None) -> None:
        self.policy = policy
        self.tunables = tunables
        self.command = list(command or [])
        kind = kinds.for_policy(policy)
        if watch_model and (kind is None or "watch" not in kind.options or not model_path):
            raise PolicyError(f"watching the model file needs one of the {kinds.watchers()} and a model file",
                              hint="pass --model FILE too")
        given = {"mode": mode, "decisions": decisions_out, "retrain_every": retrain_every_s}
        why = kinds.refused_options(policy, [n for n, v in given.items() if v is not None])
        if why:
            raise PolicyError(why)
        # The model file is loaded and checked here, before anything touches the kernel.
        self.model: kinds.ModelKind | _NoModel = (
            kind.create(policy, tunables, model_path, mode=mode, decisions=decisions_out,
                        retrain_every=retrain_every_s, retrain_min_rows=retrain_min_rows,
                        command=self.command, watch=watch_model)
            if kind is not None else _NoModel(policy, tunables))
        self.model_path = model_path
        self._streak = 0  # restarts in a row (see _restart)
        self.stats_socket = stats_socket
        self._dep: Deployment | None = None  # the live one, for the stats server's thread

    def run(self, duration_s: float | None, interval_s: float,
            on_event: Callable[[dict], None]) -> DeployResult:
        """Attach, run until `duration_s`, the command's exit, a signal
        (SIGINT, SIGTERM, SIGHUP: an orderly stop) or an ejection; detach."""
        with StopSignals() as stops:
            return self._run(duration_s, interval_s, on_event, stops)

    def _run(self, duration_s: float | None, interval_s: float, on_event: Callable[[dict], None],
             stops: StopSignals) -> DeployResult:
        res = DeployResult()
        self.model.begin()
        try:
            stops.check()  # a signal while the model was prepared: attach nothing
            dep = self.model.start()
        except BaseException as exc:
            # Nothing ran: no trace. start() has already detached and cleaned up.
            self.model.end("aborted", {}, on_event)
            if isinstance(exc, SchedulerEjected):
                # Ejected while being enabled (e.g. scx_bpf_error on the
                # first task it saw): reported as an ejection, like later ones.
                res.ejected, res.exit_info = exc, exc.exit_info
                return res
            raise
        started = time.monotonic()
        on_event({"event": "attached", "policy": self.policy.name, "load_s": round(dep.load_s or 0, 3),
                  "attach_s": round(dep.attach_s or 0, 3), "tunables": dep.tunables,
                  "mode": None, **self.model.status()})
        proc = None
        self._dep = dep
        server = self._serve_stats(dep, on_event)
        prev = dep.read_stats()
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
                        stops.check()
                        dep.check()
                        self.model.poll()
                        if proc is not None and proc.poll() is not None:
                            break
                        stops.sleep(min(0.05, max(0.0, end - time.monotonic())))
                except SchedulerEjected as exc:
                    dep = self._restart(dep, exc, res, started, attached_at, on_event)
                    self._dep = dep
                    attached_at = time.monotonic()
                    prev = dep.read_stats()
                    continue
                cur = dep.read_stats()
                t = round(time.monotonic() - started, 2)
                on_event({"event": "stats", "t": t, "stats": cur,
                          "delta": {k: cur[k] - prev.get(k, 0) for k in cur}})
                prev = cur
                self.model.tick(t, on_event)
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
            # Detaching is bounded (the command gets 5 s, then SIGKILL): a
            # second Ctrl-C must not cut it, nor the trace, in half.
            stops.hold()
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
            res.exit_info = self.model.stop()
            res.model = self.model.end(status, {"policy_stats_total": res.final_stats,
                                                "exit": res.exit_info.describe() if res.exit_info else None},
                                       on_event)
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
            self.model.stop()
            backoff = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** self._streak)
            self._streak += 1
            record = {"t": round(time.monotonic() - started, 2), "reason": info.restart_reason,
                      "exit": info.describe(), "backoff_s": backoff}
            res.restarts.append(record)
            on_event({"event": "restarting", **record})
            time.sleep(backoff)
            try:
                dep = self.model.start()
            except SchedulerEjected as again:  # e.g. another CPU went away meanwhile
                exc = again
                continue
            on_event({"event": "restarted", "t": round(time.monotonic() - started, 2),
                      "restarts": len(res.restarts)})
            return dep

    def swap(self, model: Any, source: str = "") -> Any:
        """Hot swap: make `model` (of the policy's kind: a FreqTable, a
        ModelFile) the live one while `run` runs, e.g. from the on_event
        callback. It is checked first; on any error the live one stays."""
        return self.model.swap(model, source=source)
