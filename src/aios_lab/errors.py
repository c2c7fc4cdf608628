"""Typed exceptions of the aios-lab library.

The library raises these; only the CLI turns them into one-line messages.
Every message says what is wrong and, where it can, what to do about it.
"""
from __future__ import annotations


class AiosError(Exception):
    """Base class: anything the CLI should report as a clean one-line error."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint

    def one_line(self) -> str:
        msg = str(self)
        return f"{msg} ({self.hint})" if self.hint else msg


class KernelFeatureMissing(AiosError):
    """The running kernel lacks something we need (sched_ext, BTF, a tracepoint)."""


class PrivilegeError(AiosError):
    """The operation needs root (or CAP_BPF/CAP_SYS_ADMIN)."""

    hint = "run as root, e.g. with sudo, or inside the VM: aios-lab vm run -- ..."


class BpfError(AiosError):
    """A libbpf call failed. Carries errno and libbpf's own log lines."""

    def __init__(self, message: str, errno: int = 0, log: list[str] | None = None,
                 hint: str = "") -> None:
        self.errno = errno
        self.log = list(log or [])
        super().__init__(message, hint)

    def one_line(self) -> str:
        import os

        base = str(self)
        if self.errno:
            base += f": {os.strerror(self.errno)} (errno {self.errno})"
        # The last libbpf line is usually the one that says why (verifier
        # rejection, missing BTF id, ...); the full log is on .log.
        last = [ln for ln in self.log if ln.strip()]
        if last:
            base += f"; libbpf: {last[-1].strip()}"
        return f"{base} ({self.hint})" if self.hint else base


class BpfLoadError(BpfError):
    """Opening or loading a BPF object failed (verifier, BTF, relocation)."""


class BpfAttachError(BpfError):
    """Attaching a program or struct_ops map failed."""


class BpfMapError(BpfError):
    """A map lookup/update/delete failed, or a value had the wrong size."""


class LayoutError(AiosError):
    """A struct/enum shared with BPF is missing from BTF or disagrees with Python."""


class SchedExtError(AiosError):
    """sched_ext refused or lost our scheduler."""


class SchedulerBusy(SchedExtError):
    """Another sched_ext scheduler is already attached."""


class SchedulerEjected(SchedExtError):
    """The kernel disabled our scheduler (watchdog stall, scx_bpf_error, ...)."""

    def __init__(self, message: str, exit_info=None) -> None:
        self.exit_info = exit_info
        super().__init__(message)


class PolicyError(AiosError):
    """A policy folder or manifest is missing or malformed."""


class BuildError(AiosError):
    """Compiling BPF or generating vmlinux.h failed."""


class KernelFetchError(AiosError):
    """The pinned VM kernel could not be found, downloaded, or verified."""


class VmError(AiosError):
    """The VM could not be started or its command could not be run."""


class GuestPanic(VmError):
    """The guest kernel panicked or oopsed."""


class EmulatorFault(GuestPanic):
    """The guest oopsed on an instruction its memory no longer holds: the
    emulator ran a stale translation of code the kernel had just patched.
    A fault of the platform (multi-threaded TCG), not of the kernel or the
    policy under test; the boot's results are void, a new boot is valid."""


class GuestHang(VmError):
    """The guest did not finish within its timeout."""


class TraceError(AiosError):
    """A trace directory is missing, malformed, truncated or corrupt, or a
    writer was given rows that do not fit the schema."""


class ModelError(AiosError):
    """A learned model is invalid, corrupt, of an unknown format, or could not be
    trained or written (bad tree, checksum mismatch, no training data)."""


class CpufreqError(AiosError):
    """Reading or writing cpufreq sysfs failed: a missing or read-only attribute,
    a value the kernel rejected (EINVAL, EBUSY), or a saved state that could not
    be put back."""


class CpufreqUnavailable(CpufreqError):
    """This machine has no cpufreq driver (no policyN under
    /sys/devices/system/cpu/cpufreq), as in every QEMU guest."""

    hint = ("frequency control needs a real host with a cpufreq driver: acpi-cpufreq, "
            "intel_pstate, amd-pstate ...; here, use the DVFS simulator")


class CpufreqPermissionError(CpufreqError, PrivilegeError):
    """Changing cpufreq settings (or writing the governor's state file) needs root."""

    hint = "run as root, e.g. with sudo (the VM has no cpufreq, so it cannot help here)"


class EnergyError(AiosError):
    """A RAPL energy counter could not be read or made no sense."""


class EnergyUnavailable(EnergyError):
    """No RAPL energy counters under /sys/class/powercap on this machine."""

    hint = ("RAPL needs a real Intel or AMD host with the intel_rapl_msr module loaded; "
            "AMD shows up under the same intel-rapl names on recent kernels; "
            "QEMU guests and most cloud VMs have none")


class QemuFetchError(VmError):
    """The pinned QEMU could not be found, downloaded, verified or run."""


class InputError(AiosError):
    """A file or an option value given to aios-lab is malformed, too large,
    or of the wrong kind (a FIFO, a device, a folder where a file belongs)."""


class OutputError(AiosError):
    """An output path was refused: a device, FIFO, socket or directory, a
    path inside one of the command's inputs, or a file it may not replace."""


class SetupError(AiosError):
    """The environment is misconfigured: an AIOS_LAB_* variable names
    something that does not exist or is not what it should be."""


class CommandFailed(AiosError):
    """A command aios-lab ran for the user (collect's workload) could not be
    started or exited with a failure; what aios-lab recorded is still kept."""

    def __init__(self, message: str, returncode: int | None = None, hint: str = "") -> None:
        self.returncode = returncode
        super().__init__(message, hint)


class RegistryError(AiosError):
    """A policy registry reference matches no entry or several, or a submit
    or record was given something the registry cannot keep."""


class ServiceRefused(AiosError):
    """The root service refused a request: the caller is not allowed, the
    entry has no passing verification, an argument does not fit the
    manifest, or the rate limit is reached."""


class DeployRefused(AiosError):
    """A rollout refused its entry: no passing verification, or quarantined
    after repeated failed rollouts (an explicit, audited override exists)."""


class IntegrityError(AiosError):
    """Stored evidence does not check out: a registry blob that does not
    match its hash, or an audit log whose hash chain is broken."""


class RegistryCorrupt(IntegrityError, RegistryError):
    """A registry blob is missing or does not match its sha256."""


class AuditChainBroken(IntegrityError):
    """The audit log was edited, truncated or reordered; `problems` lists
    each broken record (seq, what is wrong)."""

    def __init__(self, message: str, problems: list | None = None, hint: str = "") -> None:
        self.problems = list(problems or [])
        super().__init__(message, hint)


class MissingDependency(AiosError):
    """An optional Python package a command needs is not installed."""
