"""Scheduler benchmarks: which schedulers (spec), one comparison run in the guest (run),
its summary and text table (summary), the demo's host side (demo), the placement control
(control), the statistics behind every verdict (verdict) and the attach/detach cycles
(stability)."""
