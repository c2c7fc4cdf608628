"""Frequency control and energy measurement on a real host.

* `sysfs`: cpufreq policies under /sys/devices/system/cpu/cpufreq: read them,
  set the governor, the speed (userspace governor), min/max, EPP.
* `energy`: RAPL energy counters under /sys/class/powercap, with wrap-around.
* `governor_loop`: a userspace governor applying a learned FreqTable, which
  always puts the machine back (even after SIGKILL, through a state file).

Neither this project's CI host nor any QEMU guest has a cpufreq driver or
RAPL (no /sys/devices/system/cpu/cpufreq, no powercap): both raise a clear "unavailable" error there,
and the tests run this code against sysfs trees they lay out. Every function
takes a `root` (default "/") that is prefixed to the sysfs paths.
"""
from .energy import EnergyMeter, RaplZone, find_zones, zones_status
from .governor_loop import default_state_file, governor_state, restore_saved, run_table_governor
from .sysfs import Cpufreq, PolicyInfo

__all__ = ["Cpufreq", "PolicyInfo", "EnergyMeter", "RaplZone", "find_zones", "zones_status",
           "run_table_governor", "restore_saved", "governor_state", "default_state_file"]
