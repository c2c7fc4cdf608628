"""DVFS: learned frequency policies and the simulator they are trained on.

Neither this machine nor any QEMU guest has a cpufreq driver or energy
counters (no /sys/devices/system/cpu/cpufreq, no RAPL powercap), so
training and evaluation run on a trace-driven simulator (`dvfs.sim`); every
figure it produces is labelled simulated. The learners are estimator
classes registered by name (dvfs.learners: `rl`, `sweep`). The learned
artefact is a `FreqTable` (dvfs.table) that deploys
to a real host through cpufreq sysfs (aios_lab.cpufreq) or into the kernel
through the `freq` sched_ext policy (policies/freq).
"""
