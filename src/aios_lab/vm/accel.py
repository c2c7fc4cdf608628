"""Pick KVM when it really boots our kernel, TCG otherwise.

/dev/kvm existing is not enough: on nested "kvm-pvm" hosts a stock kernel dies
with "KVM internal error" or QEMU aborts setting an MSR. So we boot the pinned
kernel once under KVM with no root filesystem; reaching the root-mount panic
proves KVM runs it. The answer is cached per (host kernel, QEMU, guest kernel).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

from .. import paths
from ..atomic import write_text_atomic
from .qemu import Qemu

# Seen when the guest kernel got all the way to mounting root: KVM works.
_BOOTED_MARKERS = ("VFS: Unable to mount root fs", "Kernel panic - not syncing")
PROBE_TIMEOUT_S = 60


def _probe_kvm(qemu: Qemu, vmlinuz: Path) -> tuple[bool, str]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm missing or not accessible"
    cmd = [str(qemu.binary), *" ".join(qemu.data_opts()).split(), "-accel", "kvm", "-cpu", "host", "-m", "256",
           "-smp", "1", "-nographic", "-no-reboot",
           "-kernel", str(vmlinuz), "-append", "console=ttyS0 panic=-1 loglevel=3"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              env=dict(os.environ, **qemu.env()))
        text = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        return False, f"KVM probe boot did not finish in {PROBE_TIMEOUT_S}s ({exc})"
    if any(m in text for m in _BOOTED_MARKERS):
        return True, "guest kernel booted under KVM"
    last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["no output"]
    return False, f"KVM probe failed: {last[0][:200]}"


def detect_accel(vmlinuz: Path, release: str, qemu: Qemu) -> tuple[str, str]:
    """Return ("kvm"|"tcg", reason). AIOS_LAB_ACCEL=kvm|tcg overrides the probe."""
    forced = os.environ.get("AIOS_LAB_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, "forced by AIOS_LAB_ACCEL"
    key = f"{platform.release()}|QEMU {qemu.version_text} {qemu.binary}|{release}"
    cache = paths.cache_dir() / "accel.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]["accel"], known[key]["reason"] + " (cached)"
    ok, reason = _probe_kvm(qemu, vmlinuz)
    accel = "kvm" if ok else "tcg"
    known[key] = {"accel": accel, "reason": reason}
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cache, json.dumps(known, indent=2))
    return accel, reason
