"""aios-lab: learned Linux scheduling and DVFS on sched_ext, with real BPF."""

__version__ = "0.1.0"
