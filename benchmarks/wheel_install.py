#!/usr/bin/env python3
"""From `pip install aios-lab` to a first `analyze` report, on a fresh
virtual environment outside the checkout: the wheel's size, the time pip
takes to install it with its (core) dependencies from the configured
package index, and the time of the first `aios-lab analyze` (imports and
all) on a small trace. The wheel is built from this checkout first (its
BPF objects must have been built: `make build`).

Usage: .venv/bin/python benchmarks/wheel_install.py
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.helpers.traces import schedule_trace

    with tempfile.TemporaryDirectory(prefix="wheel-bench-") as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q",
                        "-w", str(tmp / "dist")], check=True, cwd=tmp)
        whl = next((tmp / "dist").glob("aios_lab-*.whl"))
        print(f"wheel: {whl.name}, {whl.stat().st_size / 2**20:.2f} MiB")
        trace = schedule_trace(tmp / "trace")
        venv = tmp / "venv"
        t_venv = timed([sys.executable, "-m", "venv", str(venv)])
        t_pip = timed([str(venv / "bin/pip"), "install", "-q", str(whl)],
                      stderr=subprocess.DEVNULL)
        t_analyze = timed([str(venv / "bin/aios-lab"), "analyze", str(trace)],
                          cwd=tmp, stdout=subprocess.DEVNULL)
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file())
        print(f"venv: {t_venv:.1f} s; pip install (core dependencies): {t_pip:.1f} s; "
              f"first analyze: {t_analyze:.1f} s; total {t_venv + t_pip + t_analyze:.1f} s; "
              f"environment {size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
