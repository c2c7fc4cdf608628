"""Attach/detach stability: every policy, many cycles, under load, in the guest.

Why: on QEMU 7.2, multi-threaded TCG oopsed the guest while sched_ext
patched kernel text on enable/disable ("Oops: int3" on the first cycle, then
a panic). QEMU 10 was clean over 33 cycles of fifo. Each cycle here opens,
loads and attaches a policy, holds it under a scheduler-heavy load
(hackbench in a loop), checks the kernel still runs it (state enabled,
enable_seq up by exactly one, no ejection), detaches and checks the state
returns to disabled. An oops or panic is caught on the host by the VM runner
(it scans the guest console and raises GuestPanic), a hang by its timeout.

Run in the guest: ``python -m aios_lab.bench.stability --cycles 50``; the
host side is ``benchmarks/stability.py``; CI runs a few cycles in the guest
suite (tests/guest/test_stability_guest.py).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..errors import AiosError
from ..sched import policy as pol
from ..sched import sched_ext

LOAD = "while :; do hackbench -p -g 2 -f 10 -l 200 >/dev/null 2>&1 || sleep 0.1; done"
DISABLED_TIMEOUT_S = 20


class Running(Protocol):
    def stop(self) -> None: ...


def _fifo() -> Running:
    from ..sched.deployment import Deployment

    return Deployment(pol.get("fifo")).start()


def _mllb(mode: str) -> Callable[[], Running]:
    def start() -> Running:
        from ..mllb.model import MIGRATE, constant_model
        from ..mllb.session import LearningRun

        # Model mode with an always-migrate model: the busiest path, every
        # decision a migration.
        model = constant_model(MIGRATE) if mode == "model" else None
        run = LearningRun(policy=pol.get("mllb"), mode=mode, model=model, model_source="stability")
        run.start()
        return run
    return start


def _freq() -> Running:
    from ..dvfs.table import FreqTable
    from ..sched.kinds.freq_table import FreqRun

    # A table that asks for a mid perf level: every tick calls cpuperf_set.
    return FreqRun(policy=pol.get("freq"), table=FreqTable.constant(512, method="stability"),
                   source="stability").start()


# Every policy in the repository, each deployable mode once.
VARIANTS: dict[str, Callable[[], Running]] = {
    "fifo": _fifo,
    "mllb-collect": _mllb("collect"),
    "mllb-model": _mllb("model"),
    "freq": _freq,
}


@dataclass
class CycleReport:
    cycles: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"cycles": self.cycles, "total": sum(self.cycles.values()), "failures": self.failures,
                "seconds": round(self.seconds, 1)}


def _wait_state(want: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sched_ext.read_state().state == want:
            return True
        time.sleep(0.05)
    return False


def _enable_seq() -> int:
    with open("/sys/kernel/sched_ext/enable_seq") as fh:
        return int(fh.read().strip())


def one_cycle(name: str, hold_s: float) -> str | None:
    """Attach, hold, check, detach; None when all went well, else what failed."""
    seq0 = _enable_seq()
    running = VARIANTS[name]()
    try:
        time.sleep(hold_s)
        st = sched_ext.read_state()
        if st.state != "enabled":
            return f"{name}: state {st.state!r} after {hold_s}s, not enabled"
        dep = getattr(running, "dep", running)
        dep.check()  # raises SchedulerEjected with the kernel's reason
        if _enable_seq() != seq0 + 1:
            return f"{name}: enable_seq went {seq0} -> {_enable_seq()}, not up by one"
    except AiosError as exc:
        return f"{name}: {exc.one_line()}"
    finally:
        running.stop()
    if not _wait_state("disabled", DISABLED_TIMEOUT_S):
        return f"{name}: state not back to disabled within {DISABLED_TIMEOUT_S}s of detach"
    return None


def run_cycles(names: list[str], cycles: int, hold_s: float = 1.0, load: str | None = LOAD,
               echo: Callable[[str], None] = lambda m: None) -> CycleReport:
    """``cycles`` rounds over ``names`` (interleaved) under ``load``."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise AiosError(f"unknown policy variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    sched_ext.require()
    sched_ext.require_free()
    rep = CycleReport({n: 0 for n in names})
    loader = subprocess.Popen(["sh", "-c", load], start_new_session=True) if load else None
    t0 = time.monotonic()
    try:
        for c in range(cycles):
            for n in names:
                err = one_cycle(n, hold_s)
                if err:
                    rep.failures.append(f"cycle {c + 1}: {err}")
                    echo(f"FAILED cycle {c + 1}: {err}")
                else:
                    rep.cycles[n] += 1
            echo(f"cycle {c + 1}/{cycles}: " + " ".join(f"{n}={k}" for n, k in rep.cycles.items()))
    finally:
        if loader is not None:
            os.killpg(loader.pid, signal.SIGKILL)
            loader.wait()
        rep.seconds = time.monotonic() - t0
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="attach/detach cycles of every policy under load (in the guest)")
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--hold", type=float, default=1.0, help="seconds each policy stays attached per cycle")
    ap.add_argument("--policies", default=",".join(VARIANTS))
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args(argv)
    rep = run_cycles([p for p in a.policies.split(",") if p], a.cycles, a.hold, echo=print)
    out = rep.to_dict()
    print(json.dumps(out))
    if a.json_out:
        from ..atomic import write_json_atomic
        from pathlib import Path

        write_json_atomic(Path(a.json_out), out)
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
