"""The QEMU VM that boots a pinned sched_ext kernel over the host's root filesystem."""
