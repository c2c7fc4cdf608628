"""sched_ext as the kernel shows it in sysfs, and the exit info of a policy.

/sys/kernel/sched_ext/state is one of: enabling, enabled, disabling,
disabled. root/ops names the attached scheduler while one is attached.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import KernelFeatureMissing, PrivilegeError, SchedulerBusy

SYSFS = Path("/sys/kernel/sched_ext")

# enum scx_exit_kind (kernel/sched/ext_internal.h); names for reports.
EXIT_KINDS = {
    0: "none", 1: "done", 64: "unregistered from user space", 65: "unregistered from BPF",
    66: "unregistered from the kernel", 67: "disabled by sysrq-S", 68: "parent exited",
    69: "killed by parent", 1024: "runtime error", 1025: "scx_bpf_error", 1026: "runnable task stall",
    1027: "reenqueue error", 1028: "rescue error",
}
ERROR_KIND_MIN = 1024
# enum scx_exit_code: bits of exit_code the kernel sets when it disables a
# scheduler for a reason the scheduler should survive. On CPU hotplug (a CPU
# offlined or onlined, suspend/resume) a scheduler without ops.cpu_online/
# cpu_offline is disabled with RSN_HOTPLUG | ACT_RESTART; scx schedulers
# then reload and attach again (scx_utils: UserExitInfo::should_restart).
ECODE_RSN_HOTPLUG = 1 << 32
ECODE_RSN_CGROUP_OFFLINE = 1 << 33
ECODE_ACT_RESTART = 1 << 48


def _read(name: str, root: Path | None = None) -> str | None:
    root = root or SYSFS
    try:
        return (root / name).read_text().strip()
    except OSError:
        return None


@dataclass(frozen=True)
class SchedExtState:
    state: str
    ops: str | None
    enable_seq: int | None
    nr_rejected: int | None
    switch_all: int | None
    hotplug_seq: int | None

    def describe(self) -> dict:
        return {"state": self.state, "ops": self.ops, "enable_seq": self.enable_seq,
                "nr_rejected": self.nr_rejected, "switch_all": self.switch_all, "hotplug_seq": self.hotplug_seq}


def available(root: Path | None = None) -> bool:
    return ((root or SYSFS) / "state").exists()


def require(root: Path | None = None) -> None:
    if not available(root):
        raise KernelFeatureMissing(
            f"this kernel ({os.uname().release}) has no sched_ext ({root or SYSFS} missing)",
            hint="run inside the sched_ext VM: aios-lab vm run -- aios-lab ...")


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def read_state(root: Path | None = None) -> SchedExtState:
    require(root)
    ops = _read("root/ops", root)
    return SchedExtState(state=_read("state", root) or "unknown", ops=ops or None,
                         enable_seq=_int(_read("enable_seq", root)), nr_rejected=_int(_read("nr_rejected", root)),
                         switch_all=_int(_read("switch_all", root)), hotplug_seq=_int(_read("hotplug_seq", root)))


# How people stop the scheduler that holds sched_ext, by how it was started.
STOP_OTHER_HINT = ("stop it first: `scxctl stop` if scx_loader started it, `systemctl stop scx` "
                   "(or scx_loader) for the scx service, Ctrl-C or kill of its loader process "
                   "(scx_rusty, scx_lavd, ... or another aios-lab deploy), or "
                   "`bpftool struct_ops unregister name <ops>` for one attached without a link")


def wait_free(timeout_s: float, root: Path | None = None) -> None:
    """require_free(), after giving a scheduler that is being disabled (an
    ejection's teardown runs in a kernel worker) up to `timeout_s` to go."""
    deadline = time.monotonic() + timeout_s
    while read_state(root).state == "disabling" and time.monotonic() < deadline:
        time.sleep(0.002)
    require_free(root)


def require_free(root: Path | None = None) -> None:
    """Refuse when another scheduler holds sched_ext (only one root scheduler)."""
    st = read_state(root)
    if st.state != "disabled":
        who = st.ops or "an unknown scheduler"
        raise SchedulerBusy(f"sched_ext is {st.state} with {who} attached", hint=STOP_OTHER_HINT)


def require_privileges() -> None:
    if os.geteuid() != 0:
        raise PrivilegeError("attaching a sched_ext scheduler needs root (CAP_BPF + CAP_SYS_ADMIN)")


@dataclass(frozen=True)
class ExitInfo:
    """What the kernel told the policy in ops.exit (struct aios_exit_info)."""

    kind: int
    exit_cpu: int
    exit_code: int
    flags: int
    reason: str
    msg: str
    at_ns: int = 0      # CLOCK_MONOTONIC when ops.exit ran; 0 from objects built without it
    dump: str = ""      # the head of the kernel's debug dump (empty for a clean exit)

    @property
    def kind_name(self) -> str:
        return EXIT_KINDS.get(self.kind, f"kind {self.kind}")

    @property
    def is_error(self) -> bool:
        return self.kind >= ERROR_KIND_MIN

    @property
    def should_restart(self) -> bool:
        """The kernel asks to be attached again (CPU hotplug and the like)."""
        return not self.is_error and bool(self.exit_code & ECODE_ACT_RESTART)

    @property
    def restart_reason(self) -> str:
        if self.exit_code & ECODE_RSN_HOTPLUG:
            return "CPU hotplug"
        if self.exit_code & ECODE_RSN_CGROUP_OFFLINE:
            return "cgroup offline"
        return "restart requested"

    def describe(self) -> dict:
        return {"kind": self.kind, "kind_name": self.kind_name, "exit_code": self.exit_code,
                "restart": self.should_restart,
                "exit_cpu": self.exit_cpu, "reason": self.reason, "msg": self.msg, "at_ns": self.at_ns}

    def one_line(self) -> str:
        text = f"{self.reason or self.kind_name} (kind {self.kind}"
        if self.exit_code:
            text += f", code {self.exit_code}"
        text += ")"
        return text + (f": {self.msg}" if self.msg else "")


VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")


def require_kfuncs(names: list[str], btf_path: Path | None = None) -> None:
    """Refuse, naming them, when the running kernel lacks kfuncs a policy needs.

    libbpf would also fail at load, but with a relocation error; this says
    which feature is missing before anything is loaded.
    """
    if not names:
        return
    from ..bpf.btf import KIND_FUNC, Btf

    path = btf_path or VMLINUX_BTF
    if not path.exists():
        raise KernelFeatureMissing(f"this kernel exposes no BTF ({path} missing)",
                                   hint="aios-lab needs CONFIG_DEBUG_INFO_BTF=y")
    with Btf.parse(path) as btf:
        missing = [n for n in names if not btf.has(n, KIND_FUNC)]
    if missing:
        raise KernelFeatureMissing(f"kernel {os.uname().release} lacks kfunc(s) {', '.join(missing)}",
                                   hint="use the pinned VM kernel: aios-lab vm run -- ...")
