"""CPU clusters with real OPP tables, and the power model the simulator uses.

The OPP tables (frequency, voltage), dynamic-power coefficients, transition
latency and idle states ship as data (dvfs/data/*.json) copied from the Linux
device trees they come from; each file names its source.

Power of one CPU (the simulator's model; every number it yields is simulated):

* busy:  P = C * V^2 * f  +  P_static(V)
  The dynamic term is the kernel Energy Model's own estimate from the device
  tree (drivers/opp/of.c: uW = coefficient * mV^2 * MHz / 1e6). Device trees
  carry no leakage figure, so P_static(V) = leak_share * P_dyn(top OPP) *
  (V / V_top)^3: leakage current grows roughly with V^2 (DIBL), times V.
  leak_share defaults to 0.15 (15 % of top-OPP power), an assumption.
* idle:  shallow idle (WFI, clock-gated) keeps leakage: P_static(V). An idle
  period that outlasts the cluster's deep idle state's min-residency is
  spent power-collapsed at `sleep_share` (default 2 %) of P_static(V): the
  idle governor is assumed to predict long idles (as teo/menu mostly do).
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

import numpy as np

from ..errors import InputError


class PlatformError(InputError):
    """An unknown platform or cluster, or a malformed OPP data file."""


@dataclass(frozen=True)
class Cluster:
    platform: str
    name: str
    core: str
    nr_cpus: int
    freqs_khz: tuple[int, ...]        # ascending
    volts_uv: tuple[int, ...]
    dyn_coeff: int                    # dynamic-power-coefficient (uW/MHz/V^2 scaled as in the kernel)
    transition_latency_s: float
    idle_min_residency_s: float
    source: str
    leak_share: float = 0.15
    sleep_share: float = 0.02

    @property
    def nr_opps(self) -> int:
        return len(self.freqs_khz)

    @property
    def max_khz(self) -> int:
        return self.freqs_khz[-1]

    @cached_property
    def dyn_w(self) -> np.ndarray:
        """Busy dynamic power of one CPU at each OPP, watts."""
        f_mhz = np.array(self.freqs_khz, dtype=float) / 1000
        mv = np.array(self.volts_uv, dtype=float) / 1000
        return self.dyn_coeff * mv ** 2 * f_mhz / 1e6 / 1e6

    @cached_property
    def static_w(self) -> np.ndarray:
        """Leakage of one powered CPU at each OPP's voltage, watts."""
        v = np.array(self.volts_uv, dtype=float)
        return self.leak_share * self.dyn_w[-1] * (v / v[-1]) ** 3

    @cached_property
    def busy_w(self) -> np.ndarray:
        return self.dyn_w + self.static_w

    @cached_property
    def sleep_w(self) -> np.ndarray:
        return self.sleep_share * self.static_w

    @cached_property
    def perf(self) -> np.ndarray:
        """Each OPP's perf level on the kernel's 0..1024 scale (share of the top frequency)."""
        return np.array(self.freqs_khz, dtype=float) * 1024 / self.max_khz

    @cached_property
    def _perf_list(self) -> list[float]:
        return [float(p) - 1e-9 for p in self.perf]

    def opp_for_perf(self, perf: float) -> int:
        """Lowest OPP whose perf is at or above `perf` (cpufreq's CPUFREQ_RELATION_L)."""
        i = bisect.bisect_left(self._perf_list, float(perf) - 1e-9)
        return min(i, self.nr_opps - 1)

    def table_perf(self, opp: int) -> int:
        """The integer perf level a table stores to mean OPP `opp`: the floor of
        its perf, so that every backend's "lowest OPP at or above" lands on
        `opp` itself (a ceiling would land one OPP higher)."""
        return max(1, int(np.floor(self.perf[int(opp)])))

    def opp_closest_khz(self, khz: float) -> int:
        """The OPP nearest `khz` (CPUFREQ_RELATION_C)."""
        return int(np.argmin(np.abs(np.array(self.freqs_khz, dtype=float) - float(khz))))

    def opp_at_or_below_khz(self, khz: float) -> int:
        """Highest OPP at or below `khz`, the lowest if none (CPUFREQ_RELATION_H)."""
        i = int(np.searchsorted(np.array(self.freqs_khz, dtype=float), float(khz) + 1e-6, side="right")) - 1
        return max(i, 0)

    def opp_for_khz(self, khz: float) -> int:
        i = int(np.searchsorted(np.array(self.freqs_khz, dtype=float), float(khz) - 1e-6, side="left"))
        return min(i, self.nr_opps - 1)

    def describe(self) -> dict:
        return {"platform": self.platform, "cluster": self.name, "core": self.core, "cpus": self.nr_cpus,
                "opps": self.nr_opps, "min_khz": self.freqs_khz[0], "max_khz": self.max_khz,
                "busy_w_top": round(float(self.busy_w[-1]), 4), "leak_share": self.leak_share,
                "transition_latency_us": round(self.transition_latency_s * 1e6),
                "source": self.source}


def platforms() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in resources.files(__package__).joinpath("data").iterdir()
                  if p.name.endswith(".json"))


def load_cluster(spec: str = "gs101:big", *, leak_share: float = 0.15, nr_cpus: int | None = None) -> Cluster:
    """`platform:cluster`, e.g. gs101:big (2x Cortex-X1), gs101:mid, gs101:little."""
    plat, _, name = spec.partition(":")
    if plat not in platforms():  # a name, never a path: "../x" must not read any .json
        raise PlatformError(f"unknown platform {plat!r}", hint=f"known: {', '.join(platforms())}")
    try:
        raw = resources.files(__package__).joinpath("data", f"{plat}.json").read_text()
    except (FileNotFoundError, OSError):
        raise PlatformError(f"unknown platform {plat!r}", hint=f"known: {', '.join(platforms())}") from None
    doc = json.loads(raw)
    clusters = doc["clusters"]
    if name not in clusters:
        raise PlatformError(f"platform {plat} has no cluster {name!r}", hint=f"known: {', '.join(clusters)}")
    c = clusters[name]
    opps = sorted(c["opps"], key=lambda o: o["khz"])
    if not opps or any(o["uv"] <= 0 or o["khz"] <= 0 for o in opps):
        raise PlatformError(f"{plat}:{name}: malformed OPP table")
    return Cluster(platform=plat, name=name, core=c["core"], nr_cpus=int(nr_cpus or c["cpus"]),
                   freqs_khz=tuple(o["khz"] for o in opps), volts_uv=tuple(o["uv"] for o in opps),
                   dyn_coeff=int(c["dynamic_power_coefficient"]),
                   transition_latency_s=c["transition_latency_us"] / 1e6,
                   idle_min_residency_s=c["idle"]["min_residency_us"] / 1e6,
                   source=doc["source"], leak_share=float(leak_share))
