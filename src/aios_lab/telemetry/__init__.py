"""Per-task and per-CPU scheduler telemetry: BPF collectors, columnar traces."""
