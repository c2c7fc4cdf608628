"""Workloads are data: workloads/NAME.toml with a shell command to time."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .errors import AiosError


class WorkloadError(AiosError):
    """A workload is unknown, malformed, or failed to run."""


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
    try:
        data = tomllib.loads(path.read_text())
        return Workload(name=data["name"], summary=data.get("summary", ""), command=data["command"],
                        timeout_s=float(data.get("timeout_s", 600)), requires=list(data.get("requires", [])),
                        prepare=data.get("prepare"), latency_comm=data.get("latency_comm"))
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise WorkloadError(f"workload file {path} is malformed: {exc}") from None


def discover() -> dict[str, Workload]:
    return {w.name: w for w in (load(p) for p in sorted(_dir().glob("*.toml")))}


def get(name: str) -> Workload:
    found = discover()
    if name not in found:
        raise WorkloadError(f"no workload named {name!r}", hint=f"known: {', '.join(sorted(found))}")
    return found[name]
