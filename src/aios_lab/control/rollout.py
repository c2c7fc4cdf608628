"""Deploy a registry entry as a transaction, with the last known good
policy kept loaded beside it.

    admit -> prepare the standby (LKG) and the candidate -> [attempt]*
    attempt: candidate live -> canary window -> hold
             ejected / guard breached -> standby live (rollback) -> backoff
             -> after `quarantine_after` failures in a row: quarantined

Why a *prepared* standby: loading runs the kernel verifier (a second or
more); attaching an already loaded struct_ops map is only sched_ext's enable
path. The standby is opened, verified and has its maps before the candidate
goes live, so a rollback costs one attach: 285-502 ms from the kernel's exit
record to the standby enabled in the TCG guest of a loaded 2-core host
(benchmarks/RESULTS.md). A struct_ops map can be attached again after its
link is destroyed, so the same loaded standby serves every rollback and a
hotplug restart re-attaches the candidate without loading it again.

What the canary window watches is read from the kernel (control.canary):
the exit record the policy writes in ops.exit (kind, reason, message, the
head of the kernel's dump, when), sched_ext's event counters, and the mean
run-queue wait per timeslice from /proc/schedstat against the same reading
taken under the previous scheduler just before. An exit that asks for a
restart (CPU hotplug) re-attaches the candidate; any other ejection, or a
breached guard, rolls back. Every attempt is a registry run of kind
`deploy` with its samples and an evidence report (JSON); the candidate
becomes the last known good policy only by holding through its window.

All attachments are links owned by this process: if it dies, the kernel
detaches whatever ran and the default class takes over; nothing is left
half-attached.
"""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import DeployRefused, SchedulerEjected
from ..sched import sched_ext
from ..sched.deployment import Deployment
from ..sched.sched_ext import ExitInfo
from . import canary, db
from .audit import Actor, append
from .stored import materialize
from .entry import Entry, Sample
from .platform import Platform
from .registry import Registry
from .verify import criteria

STAGE = "deploy"


@dataclass(frozen=True)
class Guards:
    """What a canary window holds the candidate to."""
    window_s: float = 30.0
    # Mean run-queue wait per timeslice in the window, over the same under
    # the scheduler it replaced: the KPI guard. 2x is generous on purpose:
    # the window is short and the load is whatever the host runs, so only a
    # policy that clearly starves the run queues trips it.
    max_wait_ratio: float = 2.0
    # Fewer timeslices than this in the window or the baseline: too little
    # was scheduled for the ratio to mean anything; the guard is not judged.
    min_timeslices: int = 500
    baseline_s: float = 1.0
    event_limits: Mapping[str, int] = field(default_factory=lambda: dict(criteria.EVENT_LIMITS))
    # Restarts the kernel asks for (CPU hotplug) within one attempt; more is a loop.
    max_restarts: int = 5
    poll_s: float = 0.005       # ejection detection: the exit record, read from .bss
    breach_confirm_s: float = 1.0   # counters over their limits this long with no ejection: a breach
    sample_s: float = 0.25      # the telemetry trail (wait, events)
    trail_s: float = 10.0       # how much of it an ejection's evidence keeps


@dataclass(frozen=True)
class Backoff:
    """Retry a failed candidate after first_s * factor**(n-1) seconds (at
    most max_s); after quarantine_after failures in a row it is quarantined:
    recorded, never retried by a rollout unless overridden."""
    first_s: float = 5.0
    factor: float = 2.0
    max_s: float = 300.0
    quarantine_after: int = 3

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.first_s * self.factor ** max(0, failures - 1))


@dataclass
class Attempt:
    index: int
    verdict: str = ""               # held | ejected | breached | rolled-back | stopped
    reason: str = ""
    restarts: list[dict[str, Any]] = field(default_factory=list)
    exit: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None   # what ran instead, and how fast
    guards: dict[str, Any] = field(default_factory=dict)
    run_id: int | None = None


@dataclass
class Outcome:
    entry: str
    lkg: str | None
    state: str = ""                 # held | rolled-back | quarantined | stopped
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"entry": self.entry, "lkg": self.lkg, "state": self.state,
                "attempts": [a.__dict__ for a in self.attempts]}


def is_quarantined(reg: Registry, entry: Entry) -> bool:
    return any(r.kind == "deploy" and r.verdict == "quarantined" for r in reg.runs(entry.hash))


def verification_problem(reg: Registry, entry: Entry) -> str:
    """Why `entry`'s verification does not admit a deploy ("" when it does):
    its latest verify run must pass and have run criteria.DEPLOY_STAGES."""
    from .verification import REPORT

    runs = [r for r in reg.runs(entry.hash) if r.kind == "verify"]
    if not runs or runs[-1].verdict != "pass":
        return f"no passing verification (latest: {runs[-1].verdict if runs else 'never verified'})"
    report = json.loads(reg.blob(runs[-1].reports[REPORT])) if REPORT in runs[-1].reports else {}
    ran = {st.get("stage") for st in report.get("stages", []) if st.get("passed") and not st.get("skipped")}
    missing = [s for s in criteria.DEPLOY_STAGES if s not in ran]
    if missing:
        return (f"a passing verification that did not run {', '.join(missing)} (a deploy needs "
                f"{', '.join(criteria.DEPLOY_STAGES)})")
    return ""


def last_known_good(reg: Registry, exclude: str = "") -> Entry | None:
    """The entry whose deploy run most recently held through its canary
    window, unless quarantined since."""
    row = reg.conn.execute(
        "SELECT entry FROM runs WHERE kind = 'deploy' AND verdict = 'pass' AND entry != ? "
        "AND entry NOT IN (SELECT entry FROM runs WHERE kind = 'deploy' AND verdict = 'quarantined') "
        "ORDER BY id DESC LIMIT 1", (exclude,)).fetchone()
    return reg.by_hash(row["entry"]) if row else None


class _Trail:
    """The last seconds of what the kernel said: (t, wait sample, events)."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.items: deque[tuple[float, canary.WaitSample, dict[str, int] | None]] = deque()

    def add(self, now: float) -> None:
        self.items.append((now, canary.read_wait(), canary.read_events()))
        while self.items and now - self.items[0][0] > self.keep_s:
            self.items.popleft()

    def describe(self) -> list[dict[str, Any]]:
        out, prev = [], None
        for t, w, ev in self.items:
            if prev is not None:
                out.append({"t_s": round(t - self.items[0][0], 3), "mean_wait_ns": w.mean_wait_since(prev[1]),
                            "events": canary.events_delta(ev, prev[2]) if ev and prev[2] else {}})
            prev = (t, w, ev)
        return out


class Rollout:
    """One rollout of one registry entry, run in the calling process (the
    CLI's `policy deploy` or the root service), which holds the links."""

    def __init__(self, reg: Registry, ref: str, actor: Actor, *, run_dir: Path,
                 lkg: str | None = None, guards: Guards = Guards(), backoff: Backoff = Backoff(),
                 override: str = "", duration_s: float | None = None, audit_admission: bool = True,
                 stopped: Callable[[], bool] = lambda: False, log: Callable[[str], None] = lambda m: None) -> None:
        """`audit_admission=False` when the caller (the root service) audits
        the request itself. `stopped` is polled: True ends the rollout and
        detaches whatever runs."""
        self.reg, self.actor, self.run_dir = reg, actor, Path(run_dir)
        self.entry = reg.get(ref)
        self.lkg_ref, self.guards, self.backoff = lkg, guards, backoff
        self.override, self.duration_s = override, duration_s
        self.stopped, self.log = stopped, log
        self.platform = Platform.current()
        self.audit_admission = audit_admission
        self.candidate: Deployment | None = None
        self.standby: Deployment | None = None
        # What runs now, for status and the service: None while preparing,
        # then "candidate", "standby" (the LKG) or "default" (the kernel's class).
        self.live: str | None = None
        self.lkg_hash: str | None = None
        self.last_rollback: dict[str, Any] | None = None
        self._rollback_reason: str | None = None

    def request_rollback(self, reason: str) -> None:
        """Roll back now (from another thread: the service's `rollback`): the
        candidate is detached, the standby attached, and not retried."""
        self._rollback_reason = reason or "requested"

    # -- admission ---------------------------------------------------------------------

    def admit(self) -> Entry | None:
        """Refuse an entry without a passing verification or in quarantine
        (unless overridden: loud and audited); return the LKG entry."""
        problems = []
        unverified = verification_problem(self.reg, self.entry)
        if unverified:
            problems.append(unverified)
        if is_quarantined(self.reg, self.entry):
            problems.append("quarantined after repeated failed rollouts")
        if problems and not self.override:
            if self.audit_admission:
                self._audit("deploy", "refused: " + "; ".join(problems))
            raise DeployRefused(f"entry {self.entry.hash[:12]} ({self.entry.name}) is refused: {'; '.join(problems)}",
                                hint="verify it (`aios-lab policy verify`); to deploy anyway give --override REASON "
                                     "(audited)")
        if problems:
            self._audit("override", f"accepted: {'; '.join(problems)}", {"reason": self.override})
            self.log(f"OVERRIDE ({self.override}): deploying {self.entry.hash[:12]} despite: {'; '.join(problems)}")
        if self.lkg_ref:
            lkg = self.reg.get(self.lkg_ref)
            if lkg.hash == self.entry.hash:
                raise DeployRefused("the last known good policy must be another entry than the candidate")
            return lkg
        return last_known_good(self.reg, exclude=self.entry.hash)

    # -- the transaction -----------------------------------------------------------------

    def run(self) -> Outcome:
        lkg = self.admit()
        out = Outcome(self.entry.hash, lkg.hash if lkg else None)
        self.lkg_hash = out.lkg
        if self.audit_admission:
            self._audit("deploy", "accepted", {"lkg": out.lkg})
        try:
            if lkg is not None:
                self.standby = self._prepare(lkg)
                self.log(f"standby: {lkg.name} {lkg.hash[:12]} loaded in {self.standby.load_s:.2f} s")
            else:
                self.log("no last known good policy: a rollback leaves the kernel's default class")
            self.candidate = self._prepare(self.entry)
            t_end = None if self.duration_s is None else time.monotonic() + self.duration_s
            failures = 0
            while True:
                att = self._attempt(len(out.attempts), t_end)
                out.attempts.append(att)
                if att.verdict in ("stopped", "held"):
                    out.state = att.verdict
                    break
                if att.verdict == "rolled-back":     # asked for: no retry, the standby stays
                    out.state = "rolled-back"
                    self._wait(t_end)
                    break
                failures += 1
                if failures >= self.backoff.quarantine_after:
                    self._record("quarantined", [], {"failures": failures})
                    out.state = "quarantined"
                    self.log(f"{self.entry.name} quarantined after {failures} failed attempts; "
                             f"{'the standby' if self.standby else 'the default class'} stays")
                    self._wait(t_end)
                    break
                delay = self.backoff.delay(failures)
                self.log(f"retrying {self.entry.name} in {delay:.1f} s (failure {failures} of "
                         f"{self.backoff.quarantine_after})")
                if not self._wait(t_end, delay):
                    out.state = "rolled-back"
                    if self._rollback_reason is not None:
                        self._wait(t_end)
                    break
        finally:
            for dep in (self.candidate, self.standby):
                if dep is not None:
                    dep.stop()
            self.live = "none"
        return out

    def _prepare(self, entry: Entry) -> Deployment:
        policy = materialize(self.reg, entry, self.run_dir / entry.hash)
        return Deployment(policy, self.reg.tunables(entry)).prepare()

    def _attempt(self, index: int, t_end: float | None) -> Attempt:
        g, cand, att = self.guards, self.candidate, Attempt(index)
        # The wait baseline is taken under what runs now (the standby after a
        # rollback, else whatever the host ran): the guard compares the
        # candidate with the scheduler it replaces.
        base0 = canary.read_wait()
        time.sleep(g.baseline_s)
        base = canary.read_wait()
        if self.standby is not None and self.standby.live:
            self.standby.detach()
        trail = _Trail(g.trail_s)
        t0 = time.monotonic()
        try:
            cand.go_live(free_timeout_s=5.0)
        except SchedulerEjected as e:    # ejected while being enabled: the same failure
            return self._fail(att, "ejected", str(e), cand.final_exit, trail, time.monotonic() - t0)
        self.live = "candidate"
        self.log(f"attempt {index}: {self.entry.name} live; canary window {g.window_s:g} s")
        w0, ev0 = canary.read_wait(), canary.read_events()
        clean_ev, suspect_since = ev0, None    # the last sample under the limits; when one went over
        events_total: dict[str, int] = {}
        judged = False
        next_sample = t0
        while True:
            now = time.monotonic()
            if self.stopped():
                att.verdict = "stopped"
                return att
            if self._rollback_reason is not None:
                return self._fail(att, "rolled-back", f"rollback requested: {self._rollback_reason}", None,
                                  trail, now - t0)
            try:
                cand.check()
            except SchedulerEjected:
                info = cand.final_exit
                if info is not None and info.should_restart and len(att.restarts) < g.max_restarts:
                    att.restarts.append({"at_s": round(now - t0, 3), "reason": info.restart_reason,
                                         "exit": info.describe()})
                    # The counters as last sampled under the limits: later
                    # ones (and a read now) include the teardown's own bypass.
                    events_total = _add(events_total, canary.events_delta(clean_ev, ev0))
                    cand.detach()
                    try:
                        cand.go_live(free_timeout_s=5.0)
                    except SchedulerEjected as e:
                        return self._fail(att, "ejected", str(e), cand.final_exit, trail, now - t0)
                    ev0 = clean_ev = canary.read_events()   # root/events is the new attachment's
                    suspect_since = None
                    self.log(f"attempt {index}: restarted after {info.restart_reason}")
                    continue
                return self._fail(att, "ejected", info.one_line() if info else "disabled without an exit record",
                                  info, trail, now - t0)
            if now >= next_sample:
                trail.add(now)
                next_sample = now + g.sample_s
                cur = trail.items[-1][2]
                ev = _add(events_total, canary.events_delta(cur, ev0))
                over = {k: v for k, v in ev.items() if k in g.event_limits and v > g.event_limits[k]}
                # The kernel tears an ejected scheduler down in bypass mode
                # before its exit record (ops.exit) appears, while the state
                # still reads "enabled" (7.x: scx_bypass(true) comes before
                # the DISABLING state): counters over their limits are a
                # breach only if no ejection follows within breach_confirm_s.
                if not over:
                    clean_ev = cur if cur is not None else clean_ev   # None: root/ is gone (disabling)
                    suspect_since = None
                elif suspect_since is None:
                    suspect_since = now
                elif now - suspect_since >= g.breach_confirm_s and sched_ext.read_state().state == "enabled":
                    att.guards = {"events": ev, "over": over}
                    return self._fail(att, "breached", f"event counters over their limits: {over}", None, trail,
                                      now - t0)
            if not judged and now - t0 >= g.window_s:
                judged = True
                w1 = canary.read_wait()
                ratio, guard = _wait_guard(base0, base, w0, w1, g)
                att.guards = {"events": _add(events_total, canary.events_delta(clean_ev, ev0)), **guard}
                if ratio is not None and ratio > g.max_wait_ratio:
                    return self._fail(att, "breached", f"mean run-queue wait {ratio:.2f}x the previous "
                                      f"scheduler's (limit {g.max_wait_ratio:g}x)", None, trail, now - t0)
                att.run_id = self._record("pass", _guard_samples(index, att), {"attempt": att.__dict__}).id
                self.log(f"attempt {index}: {self.entry.name} held its window: now the last known good")
            if t_end is not None and now >= t_end:
                att.verdict = "held" if judged else "stopped"
                return att
            time.sleep(g.poll_s)

    def _fail(self, att: Attempt, verdict: str, reason: str, info: ExitInfo | None, trail: _Trail,
              at_s: float) -> Attempt:
        """Roll back: the standby goes live first, then the evidence is kept."""
        detected = time.monotonic_ns()
        # The candidate's link goes before the standby attaches, even after an
        # ejection: on 6.12 destroying a struct_ops link disables whatever
        # scheduler is attached then (bpf_scx_unreg -> scx_ops_disable), so a
        # late destroy would eject the standby. The wait is not extra: the
        # standby cannot attach before the ejected scheduler's teardown ends.
        if verdict in ("breached", "rolled-back"):
            self.candidate.detach()     # our own decision: the candidate goes first
        else:
            info = self.candidate.detach() or info
        rollback: dict[str, Any] = {"to": None}
        if self.standby is not None:
            self.standby.go_live(free_timeout_s=5.0)
            live = time.monotonic_ns()
            st = sched_ext.read_state()
            self.live = "standby"
            rollback = {"to": self.standby.policy.name, "state": st.state, "ops": st.ops,
                        "detect_ms": round((detected - info.at_ns) / 1e6, 3) if info and info.at_ns else None,
                        "reattach_ms": round((live - info.at_ns) / 1e6, 3) if info and info.at_ns else None,
                        "attach_ms": round((live - detected) / 1e6, 3)}
        if self.standby is None:
            self.live = "default"
        att.verdict, att.reason, att.rollback = verdict, reason, rollback
        self.last_rollback = rollback
        att.exit = info.describe() | {"dump": info.dump} if info else None
        evidence = {"attempt": att.__dict__, "after_s": round(at_s, 3), "kernel_log": canary.kernel_log_tail(60),
                    "trail": trail.describe()}
        att.run_id = self._record(verdict, _guard_samples(att.index, att), evidence).id
        self.log(f"attempt {att.index}: {verdict}: {reason}; "
                 + (f"{rollback['to']} live again in {rollback['attach_ms']:.0f} ms" if rollback["to"]
                    else "the kernel's default class runs"))
        return att

    def _wait(self, t_end: float | None, delay: float | None = None) -> bool:
        """Sleep for `delay` (or until the end): False when stopped, out of
        time, or (during a backoff) when a rollback was asked for."""
        until = time.monotonic() + delay if delay is not None else t_end
        while not self.stopped() and not (delay is not None and self._rollback_reason is not None):
            now = time.monotonic()
            if t_end is not None and now >= t_end:
                return False
            if until is not None and now >= until:
                return True
            time.sleep(0.05)
        return False

    # -- the record --------------------------------------------------------------------

    def _record(self, verdict: str, samples: list[Sample], evidence: dict[str, Any]):
        report = json.dumps({"entry": self.entry.hash, "verdict": verdict, **evidence}, sort_keys=True,
                            default=str).encode()
        return self.reg.record_run(self.entry.hash, "deploy", verdict, samples, self.platform, self.actor,
                                   reports={"deploy.json": report})

    def _audit(self, action: str, verdict: str, args: dict[str, Any] | None = None) -> None:
        with db.transaction(self.reg.conn):
            append(self.reg.conn, self.actor, action, self.entry.hash, args or {}, verdict)


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}


def _wait_guard(base0, base, w0, w1, g: Guards) -> tuple[float | None, dict[str, Any]]:
    before, during = base.mean_wait_since(base0), w1.mean_wait_since(w0)
    enough = (base.timeslices - base0.timeslices >= g.min_timeslices
              and w1.timeslices - w0.timeslices >= g.min_timeslices)
    ratio = during / before if enough and before and during is not None else None
    return ratio, {"wait_before_ns": before, "wait_during_ns": during, "wait_ratio": ratio,
                   "wait_judged": ratio is not None}


def _guard_samples(index: int, att: Attempt) -> list[Sample]:
    out = []
    for metric, unit in (("wait_before_ns", "ns"), ("wait_during_ns", "ns"), ("wait_ratio", "ratio")):
        v = att.guards.get(metric)
        if v is not None:
            out.append(Sample(STAGE, metric, index, float(v), unit))
    rb = att.rollback or {}
    for metric in ("detect_ms", "reattach_ms", "attach_ms"):
        if rb.get(metric) is not None:
            out.append(Sample(STAGE, metric, index, float(rb[metric]), "ms"))
    out.append(Sample(STAGE, "restarts", index, float(len(att.restarts)), "count"))
    return out
