"""The liveness stage's stress mix: what makes a scheduler's corner cases run.

CPU-bound spinners: one more than there are CPUs at nice 0 and left alone
(nice-0 work alone oversubscribes the CPUs), one at nice 10 the whole time
(background work a scheduler must not starve), and one that the steps below
move around (more load made fifo, a weighted-vtime policy, starve a nice-19
kernel thread inside an RCU read section until the kernel ejected it); a fork/exit loop, a small hackbench in a loop when it is installed, and every step: one spinner moved to another
CPU (affinity), one reniced (-5..5), one moved between two cgroups when
cgroup v2 is mounted. The CPU hotplug cycle is driven by the liveness stage
itself, because it must watch the policy around it.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SPIN = "while :; do :; done"
FORK = "while :; do /bin/true; done"
BACKGROUND_NICE = 10


@dataclass
class StressMix:
    seed: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)
    spinners: list[subprocess.Popen] = field(default_factory=list)
    hackbench: subprocess.Popen | None = None
    cgroups: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"affinity": 0, "nice": 0, "cgroup_moves": 0,
                                                           "hackbench_runs": 0, "errors": 0})

    def start(self) -> "StressMix":
        self.rng = random.Random(self.seed)
        self.cpus = sorted(os.sched_getaffinity(0))
        ncpu = len(self.cpus)
        self.base = [subprocess.Popen(["sh", "-c", SPIN], preexec_fn=_nice0) for _ in range(ncpu + 1)]
        self.background = subprocess.Popen(["sh", "-c", SPIN], preexec_fn=_nice0)
        # Background work: niced for the whole run.
        os.setpriority(os.PRIO_PROCESS, self.background.pid, BACKGROUND_NICE)
        self.spinners = [subprocess.Popen(["sh", "-c", SPIN], preexec_fn=_nice0)]
        self.procs += self.base + [self.background] + self.spinners
        self.procs.append(subprocess.Popen(["sh", "-c", FORK], preexec_fn=_nice0))
        self.hackbench_path = shutil.which("hackbench")
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            for name in ("aios-verify-a", "aios-verify-b"):
                d = CGROUP_ROOT / name
                d.mkdir(exist_ok=True)
                self.cgroups.append(d)
        return self

    def describe(self) -> dict:
        return {"base_spinners": len(self.base), "churned_spinners": len(self.spinners),
                "niced_background": BACKGROUND_NICE, "fork_exit_loop": True,
                "hackbench": self.hackbench_path, "cgroup_v2": bool(self.cgroups), **self.counts}

    def step(self) -> None:
        """One round of changes; errors on tasks that just exited are counted, not raised."""
        rng = self.rng
        victim = rng.choice(self.spinners)
        try:
            online = [c for c in self.cpus if _online(c)]
            os.sched_setaffinity(victim.pid, set(rng.sample(online, rng.randint(1, len(online)))))
            self.counts["affinity"] += 1
            os.setpriority(os.PRIO_PROCESS, rng.choice(self.spinners).pid, rng.randint(-5, 5))
            self.counts["nice"] += 1
            if self.cgroups:
                cg = rng.choice(self.cgroups)
                (cg / "cgroup.procs").write_text(str(rng.choice(self.spinners).pid))
                self.counts["cgroup_moves"] += 1
        except OSError:
            self.counts["errors"] += 1
        if self.hackbench_path and (self.hackbench is None or self.hackbench.poll() is not None):
            self.hackbench = subprocess.Popen([self.hackbench_path, "-g", "1", "-f", "2", "-l", "100"],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                              preexec_fn=_nice0)
            self.counts["hackbench_runs"] += 1

    def stop(self) -> None:
        for p in self.procs + ([self.hackbench] if self.hackbench else []):
            if p.poll() is None:
                p.kill()
        for p in self.procs + ([self.hackbench] if self.hackbench else []):
            p.wait()
        for cg in self.cgroups:
            try:
                cg.rmdir()
            except OSError:
                pass


def _nice0() -> None:
    # The stress runs at nice 0 whatever the verifier's own priority (it
    # raises its own so that re-attaching after a hotplug is not starved).
    os.setpriority(os.PRIO_PROCESS, 0, 0)


def _online(cpu: int) -> bool:
    try:
        return Path(f"/sys/devices/system/cpu/cpu{cpu}/online").read_text().strip() == "1"
    except OSError:
        return True  # cpu0 has no online file: it cannot go offline


def hotplug_cpu() -> int | None:
    """The highest CPU that can be taken offline, or None."""
    cands = sorted(int(p.parent.name[3:]) for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/online"))
    return cands[-1] if cands else None


def set_online(cpu: int, online: bool) -> None:
    Path(f"/sys/devices/system/cpu/cpu{cpu}/online").write_text("1" if online else "0")
