"""RAPL energy counters through powercap: joules per zone since a start.

The intel_rapl_msr driver registers one powercap zone per package
(``/sys/class/powercap/intel-rapl:N``, name ``package-N``) with sub-zones
for its domains (``intel-rapl:N:M``: ``core``, ``uncore``, ``dram``), and on
some laptops a platform zone (``psys``). AMD Zen CPUs appear under the same
``intel-rapl`` names on recent kernels (package, and core on some). Each zone
has ``energy_uj``, a counter in microjoules that wraps at
``max_energy_range_uj``.

Two things every reader trips over:

* since the fix for CVE-2020-8694 (PLATYPUS, Nov 2020, in 5.10 and the
  stable kernels), ``energy_uj`` is mode 0400: only root reads it;
* the counter wraps (the hardware register is 32 bits; at 100 W a package
  wraps in roughly 45 minutes), so a meter must sample more often than
  that, and adds the range back when a reading goes down. More than one wrap
  between two samples cannot be seen.

``intel-rapl-mmio`` zones (the same package counter through MMIO) are used
only when there are no MSR zones, so a package is never counted twice.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import EnergyError, EnergyUnavailable, PrivilegeError

POWERCAP_REL = "sys/class/powercap"
_PREFIXES = ("intel-rapl:", "intel-rapl-mmio:")


def powercap_dir(root: str | Path = "/") -> Path:
    return Path(root) / POWERCAP_REL


@dataclass(frozen=True)
class RaplZone:
    zone: str                 # "intel-rapl:0:1"
    name: str                 # "uncore"
    label: str                # "package-0/uncore": unique across sockets
    path: Path
    max_energy_range_uj: int

    def read_energy_uj(self) -> int:
        return _read_int(self.path / "energy_uj")


def _read_int(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except PermissionError:
        raise PrivilegeError(
            f"reading RAPL energy counters ({path}) needs root: energy_uj is readable by root only "
            "since the fix for CVE-2020-8694",
            hint="run as root, e.g. sudo aios-lab freq status") from None
    except OSError as exc:
        if exc.errno == errno.ENODATA:  # some firmware reports a domain it cannot measure
            raise EnergyError(f"{path}: the kernel has no data for this RAPL zone (ENODATA)") from None
        raise EnergyError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return int(text)
    except ValueError:
        raise EnergyError(f"{path} holds {text!r}, not an integer") from None


def find_zones(root: str | Path = "/") -> list[RaplZone]:
    """Every RAPL zone, packages before their sub-zones; EnergyUnavailable
    when there is none (no powercap, or powercap without RAPL)."""
    base = powercap_dir(root)
    try:
        entries = sorted(p for p in base.iterdir())
    except FileNotFoundError:
        entries = []
    except OSError as exc:
        raise EnergyError(f"cannot list {base}: {exc.strerror or exc}") from None
    for prefix in _PREFIXES:
        found = [p for p in entries if p.name.startswith(prefix)]
        if found:
            break
    else:
        raise EnergyUnavailable(f"no energy counters on this machine: {base} has no intel-rapl zones")

    def zone_key(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in p.name.split(":")[1:] if x.isdigit())

    zones: list[RaplZone] = []
    names: dict[str, str] = {}
    for p in sorted(found, key=zone_key):
        try:
            name = (p / "name").read_text().strip()
        except OSError as exc:
            raise EnergyError(f"cannot read {p / 'name'}: {exc.strerror or exc}") from None
        names[p.name] = name
        parent = p.name.rsplit(":", 1)[0]
        label = f"{names[parent]}/{name}" if parent in names else name
        zones.append(RaplZone(zone=p.name, name=name, label=label, path=p,
                              max_energy_range_uj=_read_int(p / "max_energy_range_uj")))
    return zones


def delta_uj(prev: int, cur: int, max_range_uj: int) -> int:
    """Energy between two readings of one counter, across at most one wrap.

    The counter runs 0..max_energy_range_uj and starts again at 0; treating
    the modulus as max_energy_range_uj is off by one raw unit (~61 uJ) per
    wrap, which is below what the counter resolves anyway."""
    if cur >= prev:
        return cur - prev
    if max_range_uj <= 0:
        raise EnergyError("a RAPL counter went backwards and its zone gives no max_energy_range_uj")
    return cur + max_range_uj - prev


class EnergyMeter:
    """Joules per zone since `start()`. Call `sample()` at least once per
    wrap period (tens of minutes at full power): it folds wraps into the total."""

    def __init__(self, root: str | Path = "/", zones: list[RaplZone] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.zones = zones if zones is not None else find_zones(root)
        self._clock = clock or time.monotonic
        self._last: dict[str, int] = {}
        self._total_uj: dict[str, int] = {}
        self.wraps: dict[str, int] = {}
        self.started: float | None = None

    def start(self) -> "EnergyMeter":
        self._last = {z.label: z.read_energy_uj() for z in self.zones}
        self._total_uj = {z.label: 0 for z in self.zones}
        self.wraps = {z.label: 0 for z in self.zones}
        self.started = self._clock()
        return self

    def sample(self) -> dict[str, float]:
        """Read every counter now; joules per zone label since start."""
        if self.started is None:
            raise EnergyError("EnergyMeter.sample() before start()")
        for z in self.zones:
            cur = z.read_energy_uj()
            prev = self._last[z.label]
            if cur < prev:
                self.wraps[z.label] += 1
            self._total_uj[z.label] += delta_uj(prev, cur, z.max_energy_range_uj)
            self._last[z.label] = cur
        return self.joules()

    def joules(self) -> dict[str, float]:
        """Totals as of the last sample (no new reading)."""
        return {k: v / 1e6 for k, v in self._total_uj.items()}

    def elapsed_s(self) -> float:
        return 0.0 if self.started is None else self._clock() - self.started


def zones_status(root: str | Path = "/") -> dict:
    """What `freq status` shows: the zones and, when readable, their counters.
    Never raises for a missing or root-only counter; says so instead."""
    try:
        zones = find_zones(root)
    except (EnergyError, PrivilegeError) as exc:  # EnergyUnavailable included
        return {"available": False, "error": exc.one_line(), "zones": []}
    out = []
    for z in zones:
        row = {"zone": z.zone, "name": z.name, "label": z.label,
               "max_energy_range_uj": z.max_energy_range_uj, "energy_uj": None}
        try:
            row["energy_uj"] = z.read_energy_uj()
        except (PrivilegeError, EnergyError) as exc:
            row["error"] = exc.one_line()
        out.append(row)
    return {"available": True, "zones": out}
