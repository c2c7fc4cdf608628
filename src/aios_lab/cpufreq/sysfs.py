"""cpufreq through sysfs: read policies, change governor, speed, limits and EPP.

The kernel exposes one directory per frequency domain,
``/sys/devices/system/cpu/cpufreq/policyN``; every CPU listed in its
``affected_cpus`` runs at the frequency the policy picks. Two shapes matter:

* table drivers (acpi-cpufreq, cpufreq-dt, intel_cpufreq = intel_pstate in
  passive mode, amd-pstate in passive/guided mode) take a governor from
  ``scaling_available_governors``; with ``userspace`` a frequency written to
  ``scaling_setspeed`` is applied. acpi-cpufreq also lists its P-states in
  ``scaling_available_frequencies``; the pstate drivers have no such table.
* setpolicy drivers (intel_pstate and amd-pstate-epp in active mode) offer
  only ``performance`` and ``powersave`` and pick the frequency in hardware;
  the only way to impose one is to pin ``scaling_min_freq`` =
  ``scaling_max_freq``. They add an energy/performance preference (EPP).

Frequencies are in kHz everywhere, as sysfs has them. ``root`` is prefixed to
every path so that tests can point the backend at a tree they lay out; on a
real host it is "/". Every failure becomes a CpufreqError (or a subclass)
whose one line says what went wrong and what to do.
"""
from __future__ import annotations

import errno
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CpufreqError, CpufreqPermissionError, CpufreqUnavailable

CPUFREQ_REL = "sys/devices/system/cpu/cpufreq"
# intel_pstate's ratios are 100 MHz apart (the bus clock of every Core since
# Sandy Bridge); amd-pstate is finer grained, so for it this is a coarsening.
DERIVED_STEP_KHZ = 100_000
UNSUPPORTED = "<unsupported>"  # what scaling_setspeed reads under any governor but userspace


def cpufreq_dir(root: str | Path = "/") -> Path:
    return Path(root) / CPUFREQ_REL


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """CPUs from ``affected_cpus`` ("0 1 2") or a range list ("0-3,8")."""
    cpus: list[int] = []
    for part in text.replace(",", " ").split():
        lo, sep, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return tuple(sorted(set(cpus)))


@dataclass(frozen=True)
class PolicyInfo:
    """One snapshot of a policyN directory (frequencies in kHz)."""

    name: str
    path: str
    cpus: tuple[int, ...]                 # affected_cpus: online CPUs of the domain
    related_cpus: tuple[int, ...]         # online and offline
    driver: str
    governor: str
    available_governors: tuple[str, ...]
    available_khz: tuple[int, ...] | None  # ascending; None: the driver has no table
    cpuinfo_min_khz: int
    cpuinfo_max_khz: int
    min_khz: int
    max_khz: int
    cur_khz: int | None                   # None when scaling_cur_freq is absent
    setspeed_khz: int | None              # None unless the userspace governor runs
    epp: str | None = None
    epp_available: tuple[str, ...] | None = None

    @property
    def has_userspace(self) -> bool:
        return "userspace" in self.available_governors

    def frequencies(self, step_khz: int = DERIVED_STEP_KHZ) -> list[int]:
        """The frequencies a governor may choose from: the driver's table, or,
        for pstate drivers without one, cpuinfo_min..cpuinfo_max in steps."""
        if self.available_khz:
            return list(self.available_khz)
        lo, hi = self.cpuinfo_min_khz, self.cpuinfo_max_khz
        return sorted(set(range(lo, hi, step_khz)) | {hi})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["has_table"] = self.available_khz is not None
        return d


def _attr_error(exc: OSError, path: Path, action: str, value: str | None = None) -> CpufreqError:
    """One clear error for an OSError on a sysfs attribute."""
    code = exc.errno
    what = f"{path.parent.name}/{path.name}"
    if code == errno.ENOENT:
        return CpufreqError(f"{what} does not exist ({path})",
                            hint="this cpufreq driver does not provide it; see `aios-lab freq status`")
    if code in (errno.EACCES, errno.EPERM):
        if os.geteuid() != 0:
            return CpufreqPermissionError(f"{action} {what} needs root (permission denied)")
        # sysfs refuses even root (EACCES from kernfs) when the attribute has
        # no handler for the direction asked: it is read-only for everyone.
        if action == "writing":
            return CpufreqError(f"{what} is read-only: the kernel refuses writes to it even from root",
                                hint="this driver does not let it be changed; see `aios-lab freq status`")
        return CpufreqError(f"{what} cannot be read, even by root (permission denied)")
    if code == errno.EROFS:
        return CpufreqError(f"cannot write {what}: sysfs is mounted read-only (a container?)",
                            hint="run on the host, or give the container a writable /sys")
    if code == errno.EINVAL and value is not None:
        return CpufreqError(f"the kernel rejected {value!r} for {what} (EINVAL)",
                            hint="check the allowed values with `aios-lab freq status`")
    if code == errno.EBUSY and value is not None:
        return CpufreqError(f"the kernel refused {value!r} for {what} for now (EBUSY)",
                            hint="intel_pstate refuses EPP changes under the performance governor; "
                                 "switch the governor to powersave first")
    if code == errno.EISDIR:
        return CpufreqError(f"{what} is a directory, not a cpufreq attribute ({path})")
    return CpufreqError(f"{action} {what} failed: {exc.strerror or exc} (errno {code})")


class Cpufreq:
    """The cpufreq policies under ``<root>/sys/devices/system/cpu/cpufreq``."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)
        self.base = cpufreq_dir(root)

    # -- discovery ----------------------------------------------------------------------

    def available(self) -> bool:
        try:
            return any(p.name.startswith("policy") for p in self.base.iterdir())
        except OSError:
            return False

    def policy_names(self) -> list[str]:
        """policyN names in CPU order; CpufreqUnavailable when there are none.

        With CONFIG_CPU_FREQ=y but no driver bound (a VM, this project's CI
        host), the cpufreq directory exists and is empty: same answer."""
        try:
            names = [p.name for p in self.base.iterdir() if p.name.startswith("policy")]
        except FileNotFoundError:
            names = []
        except OSError as exc:
            raise _attr_error(exc, self.base, "listing") from None
        if not names:
            raise CpufreqUnavailable(
                f"no cpufreq driver on this machine (as in every QEMU guest): "
                f"{self.base} has no policyN directories")
        return sorted(names, key=lambda n: int(n[6:]) if n[6:].isdigit() else 1 << 30)

    def policies(self) -> list[PolicyInfo]:
        """Every active policy. A policy whose CPUs are all offline keeps its
        directory, but the kernel answers EBUSY to every read: skipped."""
        return [self.policy(n) for n in self.policy_names() if not self._inactive(n)]

    def _inactive(self, name: str) -> bool:
        try:
            self.path(name, "affected_cpus").read_text()
        except OSError as exc:
            return exc.errno == errno.EBUSY
        return False

    def policy(self, name: str) -> PolicyInfo:
        r, opt = self.read, self._read_optional
        table = opt(name, "scaling_available_frequencies")
        setspeed = opt(name, "scaling_setspeed")
        epp_avail = opt(name, "energy_performance_available_preferences")
        cur = opt(name, "scaling_cur_freq")
        return PolicyInfo(
            name=name, path=str(self.base / name),
            cpus=parse_cpu_list(r(name, "affected_cpus")),
            related_cpus=parse_cpu_list(opt(name, "related_cpus") or r(name, "affected_cpus")),
            driver=r(name, "scaling_driver"), governor=r(name, "scaling_governor"),
            available_governors=tuple((opt(name, "scaling_available_governors") or "").split()),
            available_khz=tuple(sorted({int(f) for f in table.split()})) if table else None,
            cpuinfo_min_khz=self.read_khz(name, "cpuinfo_min_freq"),
            cpuinfo_max_khz=self.read_khz(name, "cpuinfo_max_freq"),
            min_khz=self.read_khz(name, "scaling_min_freq"),
            max_khz=self.read_khz(name, "scaling_max_freq"),
            cur_khz=int(cur) if cur and cur.isdigit() else None,
            setspeed_khz=int(setspeed) if setspeed and setspeed.isdigit() else None,
            epp=opt(name, "energy_performance_preference"),
            epp_available=tuple(epp_avail.split()) if epp_avail else None,
        )

    # -- raw attributes -------------------------------------------------------------------

    def path(self, policy: str, attr: str) -> Path:
        return self.base / policy / attr

    def read(self, policy: str, attr: str) -> str:
        path = self.path(policy, attr)
        try:
            return path.read_text().strip()
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise CpufreqError(f"{policy} is inactive: all its CPUs are offline (EBUSY on {attr})",
                                   hint="bring one of its CPUs online, or leave this policy alone") from None
            raise _attr_error(exc, path, "reading") from None

    def _read_optional(self, policy: str, attr: str) -> str | None:
        """An attribute only some drivers have: None when absent. Present but
        unreadable is still an error (it would hide a real problem)."""
        try:
            return self.read(policy, attr)
        except CpufreqError:
            if not self.path(policy, attr).exists():
                return None
            raise

    def read_khz(self, policy: str, attr: str) -> int:
        text = self.read(policy, attr)
        try:
            return int(text)
        except ValueError:
            raise CpufreqError(f"{policy}/{attr} holds {text!r}, not a frequency in kHz") from None

    def write(self, policy: str, attr: str, value: str | int) -> None:
        """One write() of the whole value, as sysfs needs. O_TRUNC is what a
        shell's `>` does; sysfs ignores it, a test tree needs it."""
        path = self.path(policy, attr)
        data = str(value).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        except OSError as exc:
            raise _attr_error(exc, path, "writing", str(value)) from None
        try:
            os.write(fd, data)
        except OSError as exc:
            raise _attr_error(exc, path, "writing", str(value)) from None
        finally:
            os.close(fd)

    # -- the knobs ---------------------------------------------------------------------

    def set_governor(self, policy: str, governor: str) -> None:
        avail = (self._read_optional(policy, "scaling_available_governors") or "").split()
        if avail and governor not in avail:
            raise CpufreqError(f"{policy} has no {governor!r} governor (driver "
                               f"{self.read(policy, 'scaling_driver')}; available: {' '.join(avail)})",
                               hint="pstate drivers in active mode offer only performance and powersave; "
                                    "pin a frequency with min/max instead")
        self.write(policy, "scaling_governor", governor)

    def set_speed(self, policy: str, khz: int) -> None:
        """Set the frequency under the userspace governor (the kernel clamps
        it into scaling_min_freq..scaling_max_freq and rounds to its table)."""
        gov = self.read(policy, "scaling_governor")
        if gov != "userspace":
            raise CpufreqError(f"{policy} runs the {gov} governor: scaling_setspeed works only under userspace",
                               hint=f"set the governor first: set_governor({policy!r}, 'userspace')")
        self.write(policy, "scaling_setspeed", int(khz))

    def set_limits(self, policy: str, min_khz: int | None = None, max_khz: int | None = None) -> None:
        """Write scaling_min_freq / scaling_max_freq in an order that never asks
        for min > max on the way (older kernels reject that with EINVAL)."""
        if min_khz is not None and max_khz is not None and min_khz > max_khz:
            raise CpufreqError(f"{policy}: min {min_khz} kHz is above max {max_khz} kHz")
        writes: list[tuple[str, int]] = []
        if min_khz is not None:
            writes.append(("scaling_min_freq", int(min_khz)))
        if max_khz is not None:
            writes.append(("scaling_max_freq", int(max_khz)))
        if min_khz is not None and min_khz > self.read_khz(policy, "scaling_max_freq"):
            writes.reverse()  # raise max first, then min
        for attr, khz in writes:
            self.write(policy, attr, khz)

    def pin(self, policy: str, khz: int) -> None:
        """Hold a setpolicy driver (intel_pstate/amd-pstate-epp active) at one
        frequency: min = max = khz."""
        self.set_limits(policy, khz, khz)

    def set_epp(self, policy: str, preference: str) -> None:
        avail = self._read_optional(policy, "energy_performance_available_preferences")
        if avail is None and not self.path(policy, "energy_performance_preference").exists():
            raise CpufreqError(f"{policy} has no energy_performance_preference "
                               f"(driver {self.read(policy, 'scaling_driver')})",
                               hint="EPP exists only with intel_pstate (HWP) and amd-pstate-epp in active mode")
        # intel_pstate also takes a raw 0..255 value, so only names are checked here.
        if avail and not preference.isdigit() and preference not in avail.split():
            raise CpufreqError(f"{policy}: EPP {preference!r} is not one of: {avail}")
        self.write(policy, "energy_performance_preference", preference)
