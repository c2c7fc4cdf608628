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
import shutil
import subprocess
from pathlib import Path

from .. import paths
from ..errors import VmError

# Seen when the guest kernel got all the way to mounting root: KVM works.
_BOOTED_MARKERS = ("VFS: Unable to mount root fs", "Kernel panic - not syncing")
PROBE_TIMEOUT_S = 60


def find_qemu() -> str:
    exe = shutil.which("qemu-system-x86_64")
    if not exe:
        raise VmError("qemu-system-x86_64 not found", hint="apt-get install qemu-system-x86, or run `make setup`")
    return exe


def qemu_version(qemu: str) -> str:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def _probe_kvm(qemu: str, vmlinuz: Path) -> tuple[bool, str]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm missing or not accessible"
    cmd = [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nographic", "-no-reboot",
           "-kernel", str(vmlinuz), "-append", "console=ttyS0 panic=-1 loglevel=3"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        text = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        return False, f"KVM probe boot did not finish in {PROBE_TIMEOUT_S}s ({exc})"
    if any(m in text for m in _BOOTED_MARKERS):
        return True, "guest kernel booted under KVM"
    last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["no output"]
    return False, f"KVM probe failed: {last[0][:200]}"


def detect_accel(vmlinuz: Path, release: str) -> tuple[str, str]:
    """Return ("kvm"|"tcg", reason). AIOS_LAB_ACCEL=kvm|tcg overrides the probe."""
    forced = os.environ.get("AIOS_LAB_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, "forced by AIOS_LAB_ACCEL"
    qemu = find_qemu()
    key = f"{platform.release()}|{qemu_version(qemu)}|{release}"
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
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=2))
    os.replace(tmp, cache)
    return accel, reason
