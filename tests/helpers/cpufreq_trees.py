"""Lay out the sysfs and procfs files the cpufreq/RAPL backends read, under a tmp root.

Neither the CI host nor a QEMU guest has cpufreq or RAPL, so the tests build
what a real host shows. The shapes follow real machines:

* acpi-cpufreq (an older Xeon): one policy per CPU, a P-state table that
  lists the turbo entry as max + 1 MHz, six governors, userspace included;
  scaling_setspeed reads "<unsupported>" until userspace runs.
* intel_pstate in active mode (HWP laptop): only performance/powersave, no
  frequency table, EPP; scaling_setspeed exists but reads "<unsupported>".
* powercap intel-rapl: the zone directories live under
  devices/virtual/powercap/intel-rapl and class/powercap links to them, as
  the kernel does; package-0 with core, uncore and dram sub-zones.
"""
from __future__ import annotations

import os
from pathlib import Path

CPUFREQ = "sys/devices/system/cpu/cpufreq"

ACPI_FREQS = [3501000, 3500000, 2800000, 2100000, 1400000]  # as acpi-cpufreq lists them: descending
ACPI_GOVERNORS = "conservative ondemand userspace powersave performance schedutil"
EPP_AVAILABLE = "default performance balance_performance balance_power power"
RAPL_MAX_RANGE_UJ = 262143328850

# A real attribute with no store method: the kernel's sysfs (kernfs) answers
# EACCES to an open for writing even from root, because CAP_DAC_OVERRIDE only
# bypasses mode bits and kernfs refuses writers of store-less attributes on
# its own. chmod 0444 on a tmp file would not stop root, and a read-only mount
# needs privileges a test does not have; this is the failure a real host gives.
KERNEL_READ_ONLY = Path("/sys/devices/system/cpu/possible")
# Likewise a write-only attribute (bus uevent, 0200, no show method): kernfs
# refuses readers with EACCES even for root, which is what a non-root user
# gets from a 0400 energy_uj.
KERNEL_WRITE_ONLY = Path("/sys/bus/cpu/uevent")


def _w(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _policy(root: Path, n: int, cpus: list[int], attrs: dict[str, str]) -> Path:
    pol = root / CPUFREQ / f"policy{n}"
    listed = " ".join(str(c) for c in cpus)
    for name, value in {"affected_cpus": listed, "related_cpus": listed, **attrs}.items():
        _w(pol / name, value)
    for c in cpus:  # cpuN/cpufreq -> ../cpufreq/policyN, as the kernel links them
        link = root / f"sys/devices/system/cpu/cpu{c}/cpufreq"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(f"../cpufreq/policy{n}")
    return pol


def _online(root: Path, ncpu: int) -> None:
    _w(root / "sys/devices/system/cpu/online", f"0-{ncpu - 1}" if ncpu > 1 else "0")


def acpi_cpufreq_tree(root: Path, ncpu: int = 2, governor: str = "schedutil",
                      cur_khz: int = 2100000) -> Path:
    _online(root, ncpu)
    for c in range(ncpu):
        _policy(root, c, [c], {
            "scaling_driver": "acpi-cpufreq", "scaling_governor": governor,
            "scaling_available_governors": ACPI_GOVERNORS,
            "scaling_available_frequencies": " ".join(str(f) for f in ACPI_FREQS) + " ",
            "cpuinfo_min_freq": "1400000", "cpuinfo_max_freq": "3501000",
            "cpuinfo_transition_latency": "10000",
            "scaling_min_freq": "1400000", "scaling_max_freq": "3501000",
            "scaling_cur_freq": str(cur_khz), "scaling_setspeed": "<unsupported>",
            "bios_limit": "3501000",
        })
    return root / CPUFREQ


def intel_pstate_tree(root: Path, ncpu: int = 2, governor: str = "powersave",
                      epp: str = "balance_performance", cur_khz: int = 1200000) -> Path:
    _online(root, ncpu)
    _w(root / "sys/devices/system/cpu/intel_pstate/status", "active")
    _w(root / "sys/devices/system/cpu/intel_pstate/no_turbo", "0")
    for c in range(ncpu):
        _policy(root, c, [c], {
            "scaling_driver": "intel_pstate", "scaling_governor": governor,
            "scaling_available_governors": "performance powersave",
            "cpuinfo_min_freq": "800000", "cpuinfo_max_freq": "4700000", "base_frequency": "2900000",
            "cpuinfo_transition_latency": "0",
            "scaling_min_freq": "800000", "scaling_max_freq": "4700000",
            "scaling_cur_freq": str(cur_khz), "scaling_setspeed": "<unsupported>",
            "energy_performance_preference": epp,
            "energy_performance_available_preferences": EPP_AVAILABLE + " ",
        })
    return root / CPUFREQ


def empty_cpufreq_tree(root: Path) -> Path:
    """CONFIG_CPU_FREQ=y without a driver (this CI host, a VM): the directory
    exists and is empty."""
    d = root / CPUFREQ
    d.mkdir(parents=True, exist_ok=True)
    return d


def rapl_tree(root: Path, energy_uj: dict[str, int] | None = None) -> Path:
    """package-0 (intel-rapl:0) with core (:0:0), uncore (:0:1) and dram (:0:2)."""
    energy_uj = energy_uj or {}
    base = root / "sys/devices/virtual/powercap/intel-rapl"
    _w(base / "enabled", "1")
    zones = {"intel-rapl:0": "package-0", "intel-rapl:0:0": "core",
             "intel-rapl:0:1": "uncore", "intel-rapl:0:2": "dram"}
    cls = root / "sys/class/powercap"
    cls.mkdir(parents=True, exist_ok=True)
    for zone, name in zones.items():
        parts = zone.split(":")
        d = base / zone if len(parts) == 2 else base / ":".join(parts[:2]) / zone
        _w(d / "name", name)
        _w(d / "energy_uj", str(energy_uj.get(name, 1000)))
        _w(d / "max_energy_range_uj", str(RAPL_MAX_RANGE_UJ))
        _w(d / "enabled", "1")
        (cls / zone).symlink_to(os.path.relpath(d, cls))
    (cls / "intel-rapl").symlink_to(os.path.relpath(base, cls))
    return cls


def set_energy(root: Path, zone: str, uj: int | str) -> None:
    (root / "sys/class/powercap" / zone / "energy_uj").write_text(f"{uj}\n")


def attr(root: Path, policy: str, name: str) -> str:
    return (root / CPUFREQ / policy / name).read_text().strip()


def set_attr(root: Path, policy: str, name: str, value: str | int) -> None:
    (root / CPUFREQ / policy / name).write_text(f"{value}\n")


def make_read_only(path: Path) -> None:
    """Replace a tmp attribute by a link to a real read-only kernel attribute
    (see KERNEL_READ_ONLY): writes then fail with EACCES, also for root."""
    path.unlink()
    path.symlink_to(KERNEL_READ_ONLY)


def make_unreadable(path: Path) -> None:
    path.unlink()
    path.symlink_to(KERNEL_WRITE_ONLY)


class ProcStat:
    """<root>/proc/stat with per-CPU tick counters the test advances."""

    def __init__(self, root: Path, ncpu: int) -> None:
        self.path = root / "proc/stat"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy = [0] * ncpu
        self.idle = [0] * ncpu
        self.procs_running = 1
        self.write()

    def advance(self, busy: list[int], idle: list[int], procs_running: int | None = None) -> None:
        for c, (b, i) in enumerate(zip(busy, idle)):
            self.busy[c] += b
            self.idle[c] += i
        if procs_running is not None:
            self.procs_running = procs_running
        self.write()

    def write(self) -> None:
        # Busy ticks are split over user/system/softirq and idle ones over
        # idle/iowait; steal grows too and guest (already inside user) is
        # set, so a parser counting either would get the utilisation wrong.
        def line(name: str, b: int, i: int) -> str:
            u, s, si = b - b // 4 - b // 8, b // 4, b // 8
            return f"{name} {u} 0 {s} {i - i // 10} {i // 10} 0 {si} {(b + i) // 3} {u // 2} 0"
        lines = [line("cpu", sum(self.busy), sum(self.idle))]
        lines += [line(f"cpu{c}", b, i) for c, (b, i) in enumerate(zip(self.busy, self.idle))]
        lines += ["intr 1 0", "ctxt 12345", "btime 1700000000", "processes 4242",
                  f"procs_running {self.procs_running}", "procs_blocked 0", "softirq 1 0"]
        self.path.write_text("\n".join(lines) + "\n")
