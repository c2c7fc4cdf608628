"""Mount the pseudo file systems BPF work needs: bpffs and tracefs.

Neither is mounted at boot on every system (our host has no /sys/fs/bpf), and
pinning maps/links or reading trace_pipe fails with confusing errors without
them, so callers ensure them up front.
"""
from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from aios_lab.errors import KernelFeatureMissing, PrivilegeError

BPFFS = Path("/sys/fs/bpf")
TRACEFS = Path("/sys/kernel/tracing")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.restype = ctypes.c_int
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_void_p]


def require_root(what: str = "this operation") -> None:
    """Raise PrivilegeError unless running as root (BPF needs CAP_BPF/CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        raise PrivilegeError(f"{what} needs root")


def mounted(target: Path, fstype: str, mounts: str = "/proc/mounts") -> bool:
    """Whether `target` is a mount point of type `fstype` (per /proc/mounts)."""
    want = os.path.realpath(target)
    try:
        with open(mounts, encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == fstype:
                    # /proc/mounts escapes spaces etc. as octal (\040)
                    point = fields[1].encode().decode("unicode_escape")
                    if os.path.realpath(point) == want:
                        return True
    except OSError:
        return False
    return False


def _ensure(target: Path, fstype: str, source: str) -> Path:
    if mounted(target, fstype):
        return target
    require_root(f"mounting {fstype} at {target}")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KernelFeatureMissing(f"cannot create mount point {target}: {exc.strerror}") from exc
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        if err == errno.EBUSY and mounted(target, fstype):
            return target  # somebody else mounted it meanwhile
        if err == errno.EPERM:
            raise PrivilegeError(f"mounting {fstype} at {target} was refused: {os.strerror(err)}",
                                 hint="needs CAP_SYS_ADMIN in the initial mount namespace")
        raise KernelFeatureMissing(
            f"cannot mount {fstype} at {target}: {os.strerror(err)} (errno {err})",
            hint=f"the kernel needs CONFIG_{'BPF_SYSCALL' if fstype == 'bpf' else 'TRACING'}")
    return target


def ensure_bpffs() -> Path:
    """Make sure bpffs is mounted at /sys/fs/bpf (for pinning); returns the path."""
    return _ensure(BPFFS, "bpf", "bpf")


def ensure_tracefs() -> Path:
    """Make sure tracefs is mounted at /sys/kernel/tracing; returns the path."""
    return _ensure(TRACEFS, "tracefs", "tracefs")
