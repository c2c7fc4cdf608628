"""What a canary window watches, read from the kernel and nothing else.

- Run-queue wait from ``/proc/schedstat`` (needs CONFIG_SCHED_INFO; the
  pinned guest kernel has it, version 17, with run_delay/pcount counting
  even while the schedstats= runtime switch is off): per CPU, the kernel's sched_info
  sums the time tasks spent runnable but not running (``run_delay``, ns) and
  counts the timeslices that followed (``pcount``). Their deltas over a
  window give the mean wait per timeslice under whichever scheduler class ran
  the tasks, sched_ext included (sched_info hooks are in the core
  scheduler), without root and without a BPF program of our own.
- The sched_ext event counters of ``/sys/kernel/sched_ext/root/events``
  (``SCX_EV_*``: fallbacks, keep-last dispatches, bypass entries...), kernels
  >= 6.15: a policy that makes the kernel step in for it shows there first.
  ``root/`` is the attached scheduler's own sysfs folder: it exists only
  while one is attached (the pinned 7.3.4 guest, checked: absent when
  disabled), so read it inside the window, never across an ejection.
- The kernel log's tail (``/dev/kmsg``, read without blocking), the evidence
  kept with an ejection.

Each reader returns plain data; thresholds belong to the caller.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

SCHEDSTAT = Path("/proc/schedstat")
EVENTS = Path("/sys/kernel/sched_ext/root/events")
KMSG = Path("/dev/kmsg")
# cpuN fields after the name (schedstat version >= 15): yld_count, 0,
# sched_count, sched_goidle, ttwu_count, ttwu_local, rq_cpu_time, run_delay, pcount.
_RUN_DELAY, _PCOUNT = 7, 8


@dataclass(frozen=True)
class WaitSample:
    run_delay_ns: int
    timeslices: int

    def mean_wait_since(self, before: "WaitSample") -> float | None:
        """Mean wait per timeslice between two samples; None if none ran."""
        slices = self.timeslices - before.timeslices
        return (self.run_delay_ns - before.run_delay_ns) / slices if slices > 0 else None


def read_wait(path: Path = SCHEDSTAT) -> WaitSample:
    """Run-queue wait summed over every CPU (see the module docstring)."""
    delay = slices = 0
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0].startswith("cpu") and len(parts) > _PCOUNT + 1:
            delay += int(parts[1 + _RUN_DELAY])
            slices += int(parts[1 + _PCOUNT])
    return WaitSample(delay, slices)


def read_events(path: Path = EVENTS) -> dict[str, int] | None:
    """``SCX_EV_*`` name -> count, or None where the kernel has no such file."""
    try:
        text = path.read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def events_delta(after: dict[str, int] | None, before: dict[str, int] | None) -> dict[str, int]:
    if not after:
        return {}
    return {k: v - (before or {}).get(k, 0) for k, v in after.items()}


def kernel_log_tail(lines: int = 40, path: Path = KMSG) -> list[str]:
    """The last ``lines`` kernel log messages (needs root or dmesg_restrict=0);
    [] when the log cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    out: list[str] = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten while reading: go on from the next
                    continue
                break  # EAGAIN: the end of the log
            if not rec:
                break
            # "<prio>,<seq>,<usec>,<flags>;message\n continuation lines"
            head, _, msg = rec.decode(errors="replace").partition(";")
            usec = head.split(",")[2] if head.count(",") >= 2 else "0"
            out.append(f"[{int(usec) / 1e6:12.6f}] {msg.splitlines()[0] if msg else ''}")
            if len(out) > lines:
                del out[0]
    finally:
        os.close(fd)
    return out
