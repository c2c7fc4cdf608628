"""Inside the guest: the platform the VM runner booted us on.

The runner hands the guest its QEMU version, TCG mode, host priority and
topology in AIOS_LAB_VM_PLATFORM (JSON), so that results and traces written
in the guest record them beside the kernel release.
"""
from __future__ import annotations

import json
import os

ENV = "AIOS_LAB_VM_PLATFORM"


def current() -> dict | None:
    """The platform record, or None outside a VM started by aios-lab."""
    raw = os.environ.get(ENV)
    if not raw:
        return None
    try:
        got = json.loads(raw)
    except ValueError:
        return None
    return got if isinstance(got, dict) else None


def describe(platform: dict | None) -> str | None:
    """'QEMU 10.0.2 tcg multi-threaded' (None when not in a VM)."""
    if not platform:
        return None
    mode = f" {platform['tcg']}-threaded" if platform.get("tcg") else ""
    host = " (QEMU at SCHED_RR on the host)" if platform.get("host_rt") else ""
    if platform.get("host_nice") is not None:
        host += f" (QEMU at nice {platform['host_nice']})"
    return f"QEMU {platform.get('qemu')} {platform.get('accel')}{mode}{host}"
