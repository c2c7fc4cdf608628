#!/usr/bin/env python3
"""Time from an ejection to the last known good policy running again.

The candidate is the test-only `stall` policy in mode 1: it calls
scx_bpf_error as soon as a task named aios-stallme is enqueued, so the kernel
ejects it within milliseconds of a victim starting. The clock starts at the
kernel's own exit record (`at_ns`, bpf_ktime_get_ns() in ops.exit) and stops
when /sys/kernel/sched_ext/state says the fallback (fifo) is enabled. Two
arms, interleaved per repeat:

- standby: fifo loaded beforehand and attached on ejection (what
  control.rollout does: Deployment.prepare() then go_live());
- cold (the baseline): fifo loaded and attached only after the ejection
  (what a loader without a prepared fallback must do).

Runs in the pinned VM when this kernel has no sched_ext (one boot).

Usage: .venv/bin/python benchmarks/rollback_bench.py [--repeats 10] [--cpus 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A task's comm is the name it was executed by: a link named aios-stallme
# (to this Python). It spins, so its slice expires and it is enqueued again:
# a task that only sleeps and wakes onto an idle CPU is dispatched directly
# by the default select_cpu and never reaches the policy's ops.enqueue.
VICTIM = Path("/tmp/aios-stallme")
SPIN = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.0: pass"


def _eject_and_fall_back(standby) -> tuple[float, float]:
    """Attach stall, start a victim, wait for the ejection, bring fifo up.
    Returns (detected ms, fifo enabled ms), both from the kernel's exit record."""
    from aios_lab.errors import SchedulerEjected
    from aios_lab.sched.deployment import Deployment
    from aios_lab.sched.policy import get

    cand = Deployment(get("stall"), {"mode": 1}).start()
    victim = subprocess.Popen([str(VICTIM), "-c", SPIN])
    try:
        while True:
            try:
                cand.check()
            except SchedulerEjected:
                break
            time.sleep(0.005)
        detected = time.monotonic_ns()
        info = cand.detach() or cand.final_exit
        if standby is not None:
            standby.go_live(free_timeout_s=5.0)
            fallback = standby
        else:
            fallback = Deployment(get("fifo"))
            fallback.prepare()
            fallback.go_live(free_timeout_s=5.0)
        live = time.monotonic_ns()
        fallback.detach() if standby is not None else fallback.stop()
    finally:
        cand.stop()
        victim.wait()
    return (detected - info.at_ns) / 1e6, (live - info.at_ns) / 1e6


def guest(repeats: int) -> int:
    from aios_lab.sched.deployment import Deployment
    from aios_lab.sched.policy import get

    VICTIM.unlink(missing_ok=True)
    VICTIM.symlink_to(sys.executable)
    standby = Deployment(get("fifo")).prepare()
    arms: dict[str, list[tuple[float, float]]] = {"standby": [], "cold": []}
    try:
        for i in range(repeats):
            order = ("standby", "cold") if i % 2 == 0 else ("cold", "standby")
            for arm in order:
                arms[arm].append(_eject_and_fall_back(standby if arm == "standby" else None))
    finally:
        standby.stop()
    print(f"{'arm':<8} {'n':>3} {'detect ms (median)':>19} {'fallback running ms: median':>28} {'min':>7} {'max':>7}")
    med = {}
    for arm, xs in arms.items():
        live = [x[1] for x in xs]
        med[arm] = statistics.median(live)
        print(f"{arm:<8} {len(xs):>3} {statistics.median(x[0] for x in xs):>19.1f} {med[arm]:>28.1f} "
              f"{min(live):>7.1f} {max(live):>7.1f}")
    print(f"cold / standby (medians): x{med['cold'] / med['standby']:.2f}")
    worst = max(x[1] for x in arms["standby"])
    print(f"target: the last known good running within 1000 ms of the ejection: "
          f"{'met' if worst < 1000 else 'MISSED'} (worst standby {worst:.0f} ms)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    os.environ["AIOS_LAB_POLICY_PATH"] = str(ROOT / "tests" / "data" / "policies")
    from aios_lab.sched import sched_ext

    if sched_ext.available() and os.geteuid() == 0:
        return guest(args.repeats)
    from aios_lab.vm import runner
    from aios_lab.vm.topology import Topology

    res = runner.run([sys.executable, str(Path(__file__).resolve()), "--repeats", str(args.repeats)],
                     topology=Topology(cpus=args.cpus), env={"AIOS_LAB_POLICY_PATH": os.environ["AIOS_LAB_POLICY_PATH"]},
                     timeout_s=300 + 30 * args.repeats)
    print(res.output, end="")
    print(f"[vm] {res.accel} {res.tcg}-threaded QEMU {res.qemu.get('version')}, {args.cpus} vCPUs, "
          f"command started {res.boot_to_command_s}s after boot")
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
