#!/usr/bin/env python3
"""Start-up time of the CLI (`python -m aios_lab.cli --help`): this tree
against a baseline revision, and against importing, up front, the library
modules the commands import in their bodies. Every `aios-lab` call in the
guest pays this, so command modules import the library lazily.

Arms interleave; medians, min and max per arm, ratios to the baseline.

Usage: .venv/bin/python benchmarks/cli_startup.py [--base REV] [--runs 15]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the command modules import in their bodies (aios_lab/cli/*.py).
BODY_IMPORTS = ("aios_lab.analysis.compare", "aios_lab.analysis.perfetto", "aios_lab.analysis.report",
                "aios_lab.mllb.train", "aios_lab.dvfs.experiment", "aios_lab.dvfs.bounds",
                "aios_lab.telemetry.collect", "aios_lab.telemetry.trace", "aios_lab.bench.run",
                "aios_lab.sched.deploy_loop", "aios_lab.sched.deployment", "aios_lab.cpufreq", "aios_lab.sweep.runner",
                "aios_lab.sweep.status", "aios_lab.vm.runner", "aios_lab.build", "aios_lab.upstream")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="baseline revision (its src/ is extracted)")
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.base, "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"AIOS_LAB_ROOT": str(ROOT)}
        arms = {
            f"base {a.base}": ({**env, "PYTHONPATH": f"{tmp}/src"}, ["-m", "aios_lab.cli", "--help"]),
            "this tree": (env, ["-m", "aios_lab.cli", "--help"]),
            "this tree, body imports up front": (env, ["-c", "import aios_lab.cli, " + ", ".join(BODY_IMPORTS)]),
        }
        times: dict[str, list[float]] = {k: [] for k in arms}
        for _ in range(a.runs):
            for name, (e, args) in arms.items():
                t0 = time.perf_counter()
                subprocess.run([sys.executable, *args], env=e, stdout=subprocess.DEVNULL, check=True)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[f"base {a.base}"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:36} median {med * 1000:6.0f} ms  (min {min(ts) * 1000:.0f}, max {max(ts) * 1000:.0f}, "
              f"n={len(ts)})  x{med / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
