"""The sensitivity control: can this platform reward a good placement at all?

Before any scheduler claims a faster makespan, the same boot measures the
simplest placement contrast there is: N CPU-bound shell spinners (N = the
CPUs this process may use) all pinned to one CPU, against the same spinners
left free under the kernel's own scheduler. On hardware, or on a VM whose
vCPUs run on their own host threads, pinned takes up to N times as long as
free. Under single-threaded TCG all vCPUs share one host thread, so pinned
and free cost the same total compute and the ratio sits near 1 (measured
x1.2 with 2 vCPUs; x2.2 on QEMU 10 multi-threaded TCG, on the development machine).
A platform whose ratio stays below ``THRESHOLD`` cannot judge load balancing,
and every load-balancing verdict made on it is marked not judged.

With 4 or more CPUs a third arm pins the spinners to the first half of the
CPUs. On hardware that too costs up to x2 against free; a guest with more
vCPUs than its host has cores (4 vCPUs on this 2-core host) reads ~x1 there,
since the host cannot run more than half of them at once: consolidating
onto half the vCPUs is then free, and a policy that never spreads looks as
good as one that balances (measured: mllb's never-migrate control x0.82 of
EEVDF's makespan, 4 vCPUs on 2 cores). Both ratios must clear the threshold.

Shell spinners, not Python: a Python start costs ~10 s in the TCG guest.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..errors import AiosError

THRESHOLD = 1.5
DEFAULT_LOOPS = 60000   # ~3-6 s per spinner under multi-threaded TCG
DEFAULT_REPEAT = 3


def spin_command(loops: int) -> list[str]:
    return ["sh", "-c", f"i=0; while [ $i -lt {int(loops)} ]; do i=$((i+1)); done"]


@dataclass(frozen=True)
class ControlResult:
    cpus: int
    loops: int
    pinned_s: list[float]
    free_s: list[float]
    threshold: float = THRESHOLD
    half_s: list[float] = field(default_factory=list)   # pinned to the first half of the CPUs (>= 4 CPUs)

    @property
    def ratio_one(self) -> float:
        return statistics.median(self.pinned_s) / statistics.median(self.free_s)

    @property
    def ratio_half(self) -> float | None:
        return statistics.median(self.half_s) / statistics.median(self.free_s) if self.half_s else None

    @property
    def ratio(self) -> float:
        """The ratio that decides: the smaller of the two contrasts."""
        half = self.ratio_half
        return self.ratio_one if half is None else min(self.ratio_one, half)

    @property
    def judged(self) -> bool:
        """Whether this platform can tell a good placement from a bad one."""
        return judges(self.ratio, self.threshold)

    @classmethod
    def from_dict(cls, d: dict) -> "ControlResult":
        """Back from to_dict (the derived ratios are recomputed, not trusted)."""
        return cls(d["cpus"], d["loops"], d["pinned_s"], d["free_s"], d.get("threshold", THRESHOLD),
                   d.get("half_s") or [])

    def to_dict(self) -> dict:
        half = self.ratio_half
        return {**asdict(self), "ratio": round(self.ratio, 3), "ratio_one": round(self.ratio_one, 3),
                "ratio_half": None if half is None else round(half, 3), "ideal_ratio": self.cpus,
                "judged": self.judged}

    def line(self) -> str:
        head = (f"placement control ({self.cpus} CPU-bound spinners, {len(self.pinned_s)} interleaved runs): "
                f"all pinned to one CPU {statistics.median(self.pinned_s):.2f}s, free "
                f"{statistics.median(self.free_s):.2f}s, ratio x{self.ratio_one:.2f} "
                f"(x{self.cpus} at best, with a host core per vCPU)")
        if self.half_s:
            head += (f"; pinned to half the CPUs {statistics.median(self.half_s):.2f}s, ratio "
                     f"x{self.ratio_half:.2f} (x2 at best; ~x1 when the host has fewer cores than vCPUs)")
        return head + ("" if self.judged else "\n" + not_judged_banner(self.ratio, self.threshold))


def judges(ratio: float | None, threshold: float = THRESHOLD) -> bool:
    """A ratio below the threshold (or none, or a nonsense one) cannot judge placement."""
    return ratio is not None and ratio == ratio and ratio >= threshold


def not_judged_banner(ratio: float | None, threshold: float = THRESHOLD) -> str:
    got = f"x{ratio:.2f}" if ratio is not None else "not measured"
    return (f"!!! THIS PLATFORM CANNOT JUDGE LOAD BALANCING: the placement control's pinned/free ratio is {got}, "
            f"below x{threshold:.1f}. Every load-balancing verdict below is NOT JUDGED. !!!")


def _run_arm(n: int, loops: int, pin_to: set[int] | None) -> float:
    def pin() -> None:
        if pin_to is not None:
            os.sched_setaffinity(0, pin_to)

    t0 = time.monotonic()
    procs = [subprocess.Popen(spin_command(loops), preexec_fn=pin) for _ in range(n)]
    codes = [p.wait() for p in procs]
    elapsed = time.monotonic() - t0
    if any(codes):
        raise AiosError(f"placement control: a spinner exited with {codes}", hint="is /bin/sh usable in the guest?")
    return elapsed


def run_control(loops: int = DEFAULT_LOOPS, repeat: int = DEFAULT_REPEAT,
                echo: Callable[[str], None] = lambda m: None) -> ControlResult:
    """Run the control under whatever scheduler is attached now (the caller
    makes sure that is the kernel's own). Arms interleave, pinned first."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned, free, half = [], [], []
    for r in range(repeat):
        pinned.append(_run_arm(len(cpus), loops, {cpus[0]}))
        free.append(_run_arm(len(cpus), loops, None))
        if len(cpus) >= 4:
            half.append(_run_arm(len(cpus), loops, set(cpus[: len(cpus) // 2])))
        echo(f"control run {r + 1}/{repeat}: pinned {pinned[-1]:.2f}s free {free[-1]:.2f}s"
             + (f" half {half[-1]:.2f}s" if half else ""))
    return ControlResult(len(cpus), loops, pinned, free, half_s=half)


def main(argv: list[str] | None = None) -> int:
    """In the guest: ``python -m aios_lab.bench.control``; prints the result as JSON."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description="the placement control alone (run it in the guest)")
    ap.add_argument("--loops", type=int, default=DEFAULT_LOOPS)
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    a = ap.parse_args(argv)
    res = run_control(a.loops, a.repeat, echo=print)
    print(res.line())
    print(json.dumps(res.to_dict()))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
