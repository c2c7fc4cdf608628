"""Scheduler benchmarks: the placement control, and the statistics behind every verdict."""
