"""Workloads are data: workloads/NAME.toml with a shell command to time."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .errors import AiosError, InputError
from .safe_read import load_toml


class WorkloadError(AiosError):
    """A workload is unknown, malformed, or failed to run."""


class WorkloadFileError(WorkloadError, InputError):
    """A workload file is malformed (bad input: exit code 3)."""


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    command: str
    timeout_s: float = 600.0
    requires: list[str] = field(default_factory=list)
    prepare: str | None = None  # run once, untimed, before the first timed run (e.g. generate sources)
    # Thread name (comm) whose wakeup-to-running waits are this workload's
    # latency metric, read from a trace's switches (e.g. "wl-sleeper").
    latency_comm: str | None = None

    @property
    def shell(self) -> str:
        """The command as run: from the project root, whatever the caller's directory."""
        return f"cd {shlex.quote(str(paths.project_root()))} && {self.command}"

    def run_prepare(self) -> None:
        if not self.prepare:
            return
        self.check()
        proc = subprocess.run(["sh", "-c", self.prepare], cwd=paths.project_root(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=self.timeout_s)
        if proc.returncode != 0:
            raise WorkloadError(f"workload {self.name}: prepare step failed with exit {proc.returncode}: "
                                f"{proc.stderr.decode(errors='replace').strip()[:200]}")

    def check(self) -> None:
        missing = [b for b in self.requires if not shutil.which(b)]
        if missing:
            raise WorkloadError(f"workload {self.name} needs {', '.join(missing)}",
                                hint="install it (e.g. apt-get install rt-tests for hackbench)")

    def run(self) -> float:
        """Run to completion; return the makespan in seconds."""
        self.check()
        t0 = time.monotonic()
        try:
            proc = subprocess.run(["sh", "-c", self.command], cwd=paths.project_root(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise WorkloadError(f"workload {self.name} did not finish within {self.timeout_s:.0f}s") from None
        dt = time.monotonic() - t0
        if proc.returncode != 0:
            raise WorkloadError(f"workload {self.name} failed with exit {proc.returncode}: "
                                f"{proc.stderr.decode(errors='replace').strip()[:200]}")
        return dt


def _dir() -> Path:
    return paths.project_root() / "workloads"


def load(path: Path) -> Workload:
    """A workload file, each field checked for its TOML type (a string
    `requires = "hackbench"` is not the letters h, a, c, k ...)."""
    data = load_toml(path, error=WorkloadFileError, what="workload file")

    def bad(key: str, want: str) -> WorkloadError:
        return WorkloadFileError(f"workload file {path}: {key} = {data.get(key)!r} is not {want}",
                             hint="fix the file")
    for key in ("name", "command"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise bad(key, "a non-empty string")
    for key in ("summary", "prepare"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise bad(key, "a string")
    requires = data.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) and r for r in requires):
        raise bad("requires", 'an array of program names, e.g. ["hackbench"]')
    timeout = data.get("timeout_s", 600)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 7 * 86400 \
            or timeout != timeout:
        raise bad("timeout_s", "a number of seconds in (0, 604800]")
    latency_comm = data.get("latency_comm")
    if latency_comm is not None and (not isinstance(latency_comm, str) or not latency_comm or len(latency_comm) > 15):
        raise bad("latency_comm", "a thread name (comm) of 1-15 characters")
    return Workload(name=data["name"], summary=data.get("summary") or "", command=data["command"],
                    timeout_s=float(timeout), requires=list(requires), prepare=data.get("prepare"),
                    latency_comm=latency_comm)


def discover() -> dict[str, Workload]:
    return {w.name: w for w in (load(p) for p in sorted(_dir().glob("*.toml")))}


def get(name: str) -> Workload:
    found = discover()
    if name not in found:
        raise WorkloadError(f"no workload named {name!r}", hint=f"known: {', '.join(sorted(found))}")
    return found[name]
