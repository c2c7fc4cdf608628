"""`aios-lab collect`: attach the collectors, run a workload, write one trace.

Loop: every ``interval_ms`` the per-task and per-CPU maps are snapshotted
into interval rows; in between, the ring buffers (migrations, wakeups) are
drained in batches. /proc is sampled at each interval too, so that a trace
made without root (no BPF) still says something, and says that it is all it
has. The trace directory appears only when complete (TraceWriter renames it
into place); Ctrl-C or SIGTERM ends the run early and keeps what was
collected, marked "truncated" when a workload or duration was cut short.
"""
from __future__ import annotations

import math
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import __version__, paths
from ..child import check_command, start_command
from ..errors import InputError, PrivilegeError
from ..sched import sched_ext
from ..signals import StopSignals
from . import procfs
from .policy_stats import PolicyStatsSampler
from .writer import TraceWriter

CPUFREQ = Path("/sys/devices/system/cpu")
# Records/s per CPU that the switch and wakeup streams each keep before they
# are sampled (bpf/telemetry.bpf.c, "Sampled streams"): what keeps collect
# within its overhead target under hackbench (benchmarks/RESULTS.md, issue 20).
DEFAULT_STREAM_BUDGET = 2000


@dataclass
class CollectOptions:
    out: Path | None = None
    duration_s: float | None = None
    interval_ms: int = 1000
    command: list[str] = field(default_factory=list)
    wakeup_events: bool = True
    wakeup_sample: int = 1  # record 1 in N wakeup events (counts and histograms see them all)
    switch_events: bool = True  # one row per context switch (Perfetto lanes, exact wait percentiles)
    stream_budget: int | None = DEFAULT_STREAM_BUDGET  # None: every switch and wakeup recorded
    bpf: str = "auto"  # auto: use BPF when we can; on: require it; off: /proc only


def default_out_dir() -> Path:
    return paths.results_dir() / "traces" / time.strftime("%Y%m%d-%H%M%S")


def _kernel_config() -> dict:
    """What the running kernel says about sched_ext and cpufreq (from sysfs)."""
    cpufreq = (CPUFREQ / "cpufreq").is_dir() and any((CPUFREQ / "cpufreq").iterdir())
    return {"sched_ext": sched_ext.available(), "cpufreq": bool(cpufreq),
            "btf": Path("/sys/kernel/btf/vmlinux").exists()}


def _where() -> dict:
    vendor = ""
    try:
        vendor = Path("/sys/class/dmi/id/sys_vendor").read_text().strip()
    except OSError:
        pass
    in_vm = os.environ.get("AIOS_LAB_IN_VM") == "1" or vendor in ("QEMU", "KVM")
    return {"hostname": socket.gethostname(), "vm": in_vm, "aios_lab_vm": os.environ.get("AIOS_LAB_IN_VM") == "1",
            "sys_vendor": vendor or None, "machine": platform.machine(), "cpus": os.cpu_count()}


def _freq_khz(cpu: int) -> int | None:
    try:
        return int((CPUFREQ / f"cpu{cpu}" / "cpufreq" / "scaling_cur_freq").read_text())
    except (OSError, ValueError):
        return None


def base_metadata(opts: CollectOptions) -> dict:
    from ..vm import guest_platform
    from .topology import read_topology

    sx = sched_ext.read_state().describe() if sched_ext.available() else None
    return {
        "aios_lab_version": __version__,
        "kernel": {"release": os.uname().release, "version": os.uname().version, "config": _kernel_config()},
        "host": _where(),
        "topology": read_topology().describe(),
        "workload": {"command": opts.command or None, "duration_s": opts.duration_s},
        "interval_ms": opts.interval_ms,
        "sched_ext_at_start": sx,
        # QEMU version and TCG mode when collected in the aios-lab VM.
        "vm_platform": guest_platform.current(),
    }


def _start_bpf(opts: CollectOptions, echo: Callable[[str], None]):
    if opts.bpf == "off":
        return None, {"enabled": False, "reason": "disabled with --no-bpf"}
    from .bpf_collector import WINDOW_NS, BpfCollector

    col = BpfCollector(wakeup_events=opts.wakeup_events, wakeup_sample=opts.wakeup_sample,
                       switch_events=opts.switch_events, stream_budget=opts.stream_budget)
    try:
        col.start()
    except PrivilegeError as exc:
        col.close()
        if opts.bpf == "on":
            raise
        echo(f"WARNING: BPF collectors not started: {exc.one_line()}; this trace has /proc samples only")
        return None, {"enabled": False, "reason": str(exc)}
    except BaseException:
        col.close()
        raise
    return col, {"enabled": True, "wakeup_events": opts.wakeup_events, "wakeup_sample": opts.wakeup_sample,
                 "switch_events": opts.switch_events, "stream_budget": opts.stream_budget,
                 "sample_window_ns": WINDOW_NS,
                 # where run-queue waits came from: the kernel's sched_info or our wakeup hook
                 "wait_source": "sched_info" if col.kernel_waits else "sched_wakeup"}


def _check_options(opts: CollectOptions) -> None:
    """Everything that can be refused is refused before BPF is attached or a
    folder is made."""
    if opts.interval_ms < 10:
        raise InputError(f"--interval {opts.interval_ms} ms is too short", hint="use 10 ms or more")
    d = opts.duration_s
    if d is not None and not (math.isfinite(d) and d > 0):
        raise InputError(f"--duration {d} is not a positive number of seconds",
                         hint="leave it out to collect until the command exits or Ctrl-C")
    if opts.wakeup_sample < 1:
        raise InputError(f"--wakeup-sample {opts.wakeup_sample} must be 1 or more")
    if opts.command:
        check_command(opts.command)


def collect(opts: CollectOptions, echo: Callable[[str], None] = lambda m: None) -> Path:
    """Run one collection; returns the trace directory."""
    out = Path(opts.out) if opts.out else default_out_dir()
    _check_options(opts)
    # pyarrow imports pandas lazily on its first conversion; in an emulated
    # guest that import took 40 s and stalled the first interval (measured
    # with cProfile), so pay for it before the workload starts.
    import pandas  # noqa: F401
    meta = base_metadata(opts)
    bpf, bpf_meta = _start_bpf(opts, echo)
    meta["bpf"] = bpf_meta
    meta["sources"] = (["bpf"] if bpf else []) + ["procfs"]
    policy = PolicyStatsSampler() if sched_ext.available() else None
    writer = TraceWriter(out, meta)
    writer.warm_up()
    cost = _Cost()
    if policy is not None:
        policy.sample(0, 0)  # baseline now, so the first interval has the policy's counts
    # A /proc sample before the workload: the baseline of its cumulative counters.
    cost.last_procfs_ns = time.monotonic_ns()
    writer.append("processes", procfs.sample(cost.last_procfs_ns))
    interval_ns = opts.interval_ms * 1_000_000
    start_ns, start_wall = time.monotonic_ns(), time.time()
    end_at = start_ns + int(opts.duration_s * 1e9) if opts.duration_s else None
    cost.cpu0 = time.process_time()
    try:
        child = start_command(opts.command) if opts.command else None
    except BaseException:
        writer.abort()
        for closer in (bpf, policy):
            if closer is not None:
                closer.close()
        raise
    # A waiter thread timestamps the workload's exit exactly (the main loop
    # only looks every <=100 ms): that is the makespan experiments report.
    exited = _ExitClock(child)
    status, how = "complete", "duration" if end_at else ("command" if child else "interrupted")
    # SIGINT, SIGTERM, SIGHUP end a collection early: flush, then stop (aios_lab.signals).
    stop = StopSignals().install()
    last = start_ns
    try:
        try:
            done = False
            while not done:
                deadline = last + interval_ns
                while True:
                    stop.check()
                    now = time.monotonic_ns()
                    if child is not None and child.poll() is not None:
                        # The workload is over: what the collector does from
                        # here (the last interval, the final decode) is not
                        # its cost to the workload.
                        cost.totals["cpu_s"] = time.process_time() - cost.cpu0
                        done = True
                        break
                    if end_at is not None and now >= end_at:
                        done = True
                        break
                    if now >= deadline:
                        break
                    wait_ms = max(1, min(100, (deadline - now) // 1_000_000))
                    if bpf is not None:
                        with cost.timed("poll_s"):
                            bpf.poll(int(wait_ms))
                        with cost.timed("events_s"):
                            _flush_events(bpf, writer, force=False)
                    else:
                        stop.sleep(wait_ms / 1000)
                last = _write_interval(bpf, policy, writer, last, cost)
        except KeyboardInterrupt:
            # Ctrl-C with neither a command nor a duration is the normal end.
            if child is not None or end_at is not None:
                status, how = "truncated", "interrupted"
            if child is not None and child.poll() is None:
                child.terminate()
            last = _write_interval(bpf, policy, writer, last, cost)
        cost.totals.setdefault("cpu_s", time.process_time() - cost.cpu0)   # while the workload ran
        rc = child.wait() if child is not None else None
        if bpf is not None:
            bpf.poll(0)
            _flush_events(bpf, writer, force=True)
            cost.bpf = bpf.run_time()
        lost = bpf.lost() if bpf is not None else {}
        extra = {
            "start": {"monotonic_ns": start_ns, "wall": start_wall},
            "end": {"monotonic_ns": last, "wall": time.time()},
            "ended_by": how, "workload_exit_code": rc, "workload_elapsed_s": exited.elapsed(), "lost": lost,
            "sched_ext_at_end": sched_ext.read_state().describe() if sched_ext.available() else None,
            "policy": policy.policy if policy else None,
            # the collector's own pid, so that analyses of the workload's
            # demand (dvfs.demand) can leave the collector's CPU time out
            "collector": {**cost.describe(interval_ns), "pid": os.getpid()},
        }
        path = writer.close(status=status, extra=extra)
    except BaseException:
        writer.abort()
        if child is not None and child.poll() is None:
            child.kill()
        raise
    finally:
        stop.restore()
        if bpf is not None:
            bpf.close()
        if policy is not None:
            policy.close()
    # unpaired_switch is an accounting anomaly of the kernel's tracepoints
    # (a task switched in with no matching switch-out), not a dropped event.
    dropped = {k: v for k, v in lost.items() if v and k != "unpaired_switch"}
    if dropped:
        hints = []
        if dropped.get("wakeup_ring"):
            hints.append("record fewer wakeup events with --wakeup-sample N or --no-wakeups")
        if dropped.get("switch_ring"):
            hints.append("leave the switch stream out with --no-switches")
        hint = "; " + "; ".join(hints) if hints else ""
        echo(f"WARNING: events lost: {', '.join(f'{k}={v}' for k, v in dropped.items())} "
             f"(ring buffer or task map full; see metadata.json 'lost'){hint}")
    return path


class _ExitClock:
    def __init__(self, child: subprocess.Popen | None) -> None:
        import threading

        self.start = time.monotonic()
        self.end: float | None = None
        self.thread = None
        if child is not None:
            self.thread = threading.Thread(target=self._wait, args=(child,), daemon=True)
            self.thread.start()

    def _wait(self, child: subprocess.Popen) -> None:
        child.wait()
        self.end = time.monotonic()

    def elapsed(self) -> float | None:
        if self.thread is not None:
            self.thread.join(timeout=5)
        return None if self.end is None else round(self.end - self.start, 6)


# Raw ring records are kept as drained (numpy arrays, one copy per poll)
# and decoded only once this many bytes are pending, or at the end.
# Decoding (a DataFrame per table, comm strings, Arrow, Parquet) is most of
# the collector's CPU time and has a fixed cost per call: done every 5,000
# records, as before, it ran several times a second on the workload's
# cores under hackbench (benchmarks/RESULTS.md, issue 20). The rings are not
# drained while a batch decodes, so a batch must decode well within the time
# the smallest ring (wakeups, 4 MiB) takes to fill at full rate (~0.3 s at
# 150,000 wakeups/s): 8 MiB is ~90,000 records, ~40 ms at the measured 2.4
# million records per CPU-second. Under the default stream budget that is a
# decode every ten seconds or so.
DECODE_BATCH_BYTES = 8 << 20
PROCFS_MIN_PERIOD_NS = 5_000_000_000


def _flush_events(bpf, writer: TraceWriter, force: bool) -> None:
    """Decode the drained ring records and hand them to the writer, in large
    batches only (see DECODE_BATCH_BYTES); `force` at the end."""
    if not force and bpf.pending_bytes() < DECODE_BATCH_BYTES:
        return
    for table, df in bpf.take_event_frames().items():
        if df is not None and len(df):
            writer.append_frame(table, df)


class _Cost:
    """Where the collector's own time goes; says when it cannot keep up."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.intervals: list[int] = []
        self.last_procfs_ns = 0
        self.cpu0 = 0.0
        self.bpf: dict[str, int] | None = None

    def timed(self, key: str):
        import contextlib

        @contextlib.contextmanager
        def cm():
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.totals[key] = self.totals.get(key, 0.0) + time.perf_counter() - t0
        return cm()

    def describe(self, interval_ns: int) -> dict:
        longest = max(self.intervals, default=0)
        # *_s are wall seconds in each step, except cpu_s: this process's CPU
        # time while collecting; bpf: our programs' runs and run time (counted
        # by the kernel only while kernel.bpf_stats_enabled is 1).
        return {"intervals": len(self.intervals), "longest_interval_ns": longest,
                "fell_behind": longest > 2 * interval_ns,
                **{k: round(v, 3) for k, v in self.totals.items()},
                **({"bpf": self.bpf} if self.bpf is not None else {})}


def _write_interval(bpf, policy, writer: TraceWriter, start: int, cost: _Cost) -> int:
    end = time.monotonic_ns()
    cost.intervals.append(end - start)
    if bpf is not None:
        with cost.timed("snapshot_s"):
            snap = bpf.snapshot(start, end)
        for row in snap.get("cpu_intervals", []):
            if row.get("freq_khz") is None:
                row["freq_khz"] = _freq_khz(row["cpu"])
        writer.append_table("task_intervals", snap["task_intervals"])
        writer.append("cpu_intervals", snap["cpu_intervals"])
    if policy is not None:
        rows = policy.sample(start, end)
        if rows:
            writer.append("policy_stats", rows)
    # /proc sampling walks every process (~2.5 s per sample in a TCG guest,
    # ~50 ms here): every 5 s when BPF has the precise data, every interval
    # when /proc is the only source.
    if bpf is None or end - cost.last_procfs_ns >= PROCFS_MIN_PERIOD_NS:
        cost.last_procfs_ns = end
        with cost.timed("procfs_s"):
            writer.append("processes", procfs.sample(end))
    return end
