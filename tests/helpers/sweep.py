"""Shared by the sweep tests: specs of cheap, real cells (the DVFS simulator
on recorded traces) and a way to kill a process mid-cell without racing it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

GOVERNORS = ["schedutil", "ondemand", "conservative", "performance"]
TRACES = ["bursty-1", "frames-1", "build-1"]


def write_spec(path: Path, *, name="t", governors=GOVERNORS, traces=TRACES, window_s=None, repeat=1,
               retries=1, seed=5, extra="") -> Path:
    fixed = f"window_s = {window_s}\n" if window_s else ""
    path.write_text(f"""[sweep]
name = "{name}"
kind = "dvfs-sim"
repeat = {repeat}
seed = {seed}
retries = {retries}

[grid]
governor = {json.dumps(governors)}
trace = {json.dumps(traces)}

[fixed]
{fixed}{extra}""")
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aios_lab.cli", *args]


@contextmanager
def spawn(*args: str) -> Iterator[subprocess.Popen]:
    """`aios-lab ARGS` in its own process group (so a test can kill the driver
    and all it started); whatever is left of it is killed when the block ends,
    so a failing test leaves no driver behind."""
    p = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        yield p
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return "gone"


def published(root: Path) -> set[str]:
    return {json.loads(p.read_text())["cell"]["hash"] for p in (root / "cells").rglob("result.json")}


def stop_mid_cell(pid: int, root: Path, deadline_s: float = 60) -> list[Path]:
    """Freeze process `pid` (SIGSTOP) at a moment when a cell is in flight (a
    staging folder without a result), so that what follows cannot race it.
    Returns those staging folders; the process is left stopped."""
    staging = root / "_sweep" / "staging"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if state(pid) in ("gone", "Z"):
            raise AssertionError("the process ended before a cell could be caught in flight")
        if staging.is_dir() and any(staging.iterdir()):
            os.kill(pid, signal.SIGSTOP)
            while state(pid) not in ("T", "t", "Z", "gone"):
                time.sleep(0.005)
            inflight = [d for d in staging.iterdir() if not (d / "result.json").exists()]
            if inflight:
                return inflight
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("no cell was caught in flight")


def stop_a_running_cell(root: Path, deadline_s: float = 60) -> tuple[int, Path]:
    """Freeze (SIGSTOP) the process of a cell in flight, caught before it wrote
    its result; returns its pid and staging folder, the process left stopped."""
    staging = root / "_sweep" / "staging"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for d in (staging.iterdir() if staging.is_dir() else []):
            try:
                pid = json.loads((d / "worker.json").read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            while state(pid) not in ("T", "t", "Z", "gone"):
                time.sleep(0.005)
            if state(pid) in ("T", "t") and not (d / "result.json").exists():
                return pid, d
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    raise AssertionError("no cell process was caught in flight")
