"""The stages that need a sched_ext kernel, run where one is.

`run_cases` runs them in this process (a host with sched_ext, or inside the
guest); `python -m aios_lab.control.verify.kernel_stages CASES_JSON` is the
guest's entry point: it prints one marked JSON line per case, which the host
side (`in_vm`) reads back. One boot serves every case of a call.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

from ...errors import AiosError
from ...sched.policy import get
from . import kernel_verifier, liveness
from .report import KERNEL_STAGES, Check, StageReport

MARK = "AIOS-VERIFY-CASE "
_RUNNERS: dict[str, Callable[..., StageReport]] = {
    "verifier": lambda pol, case: kernel_verifier.run(pol, case["tunables"], case.get("parent")),
    "liveness": lambda pol, case: liveness.run(pol, case["tunables"]),
    "performance": lambda pol, case: _performance(pol, case),
}


def _performance(pol, case: dict[str, Any]) -> StageReport:
    # Imported only when asked for: it pulls in the benchmarks (bench.run,
    # bench.spec ...), which a guest running only the other stages need not
    # load (a Python import costs seconds under TCG).
    from . import performance

    return performance.run(pol, case["tunables"], case.get("deployed"), case.get("workload"), case.get("runs"))


def run_case(case: dict[str, Any]) -> list[StageReport]:
    """The kernel stages a case asks for, in order; after a failed stage the
    rest are recorded as skipped."""
    pol = get(case["policy"])
    out: list[StageReport] = []
    for stage in (s for s in KERNEL_STAGES if s in case["stages"]):
        if out and not out[-1].passed:
            out.append(StageReport(stage, False, 0.0, [], skipped=f"{out[-1].stage} failed"))
            continue
        t0 = time.monotonic()
        try:
            out.append(_RUNNERS[stage](pol, case))
        except AiosError as exc:
            # The stage could not be judged (not root, a busy sched_ext ...):
            # a failure, with what went wrong, never a pass.
            out.append(StageReport.from_checks(stage, [Check("ran", False, "the stage runs to its end",
                                                             {"error": exc.one_line()}, exc.one_line())],
                                               time.monotonic() - t0))
    return out


def platform() -> dict[str, Any]:
    info: dict[str, Any] = {"kernel": os.uname().release}
    raw = os.environ.get("AIOS_LAB_VM_PLATFORM")
    if raw:
        info["vm"] = json.loads(raw)
    info["cpus"] = len(os.sched_getaffinity(0))
    return info


def main(argv: list[str]) -> int:
    cases = json.loads(argv[0])
    plat = platform()
    for case in cases:
        stages = run_case(case)
        print(MARK + json.dumps({"policy": case["policy"], "platform": plat,
                                 "stages": [_asdict(s) for s in stages]}), flush=True)
    return 0


def _asdict(stage: StageReport) -> dict:
    from dataclasses import asdict

    return asdict(stage)


def parse_output(text: str) -> list[dict]:
    return [json.loads(ln[len(MARK):]) for ln in text.splitlines() if ln.startswith(MARK)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
