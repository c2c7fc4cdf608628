"""Every AIOS_LAB_* environment variable, in one place: `aios-lab --help`
prints them and docs/environment.md lists them (a test checks that each
variable the code reads is here and there)."""
from __future__ import annotations

# name, what it does (one line each; the default in the text).
VARIABLES: list[tuple[str, str]] = [
    ("AIOS_LAB_ROOT", "the tree with bpf/, policies/, workloads/, vm/ (default: the checkout, or "
                      "the data an installed wheel carries)"),
    ("AIOS_LAB_BUILD", "where BPF objects and vmlinux.h are built and looked up (default: ROOT/build)"),
    ("AIOS_LAB_CACHE", "downloads kept across checkouts: kernels, libbpf, probe results "
                       "(default: $XDG_CACHE_HOME/aios-lab or ~/.cache/aios-lab)"),
    ("AIOS_LAB_REGISTRY", "the policy registry folder: blobs/ and registry.sqlite with the audit log "
                          "(default: $XDG_DATA_HOME/aios-lab/registry or ~/.local/share/aios-lab/registry)"),
    ("AIOS_LAB_POLICY_PATH", "more policy folders, ':'-separated, searched after ROOT/policies; "
                             "`aios-lab build` compiles them too"),
    ("AIOS_LAB_SERVICE_SOCKET", "the root service's socket that `aios-lab mcp` sends deploy and rollback "
                                "requests to (default: /run/aios-lab/control.sock)"),
    ("AIOS_LAB_LIBBPF", "the libbpf.so.1 to load (default: the newest cached copy, else the system's)"),
    ("AIOS_LAB_LIBBPF_DEBUG", "set to 1 to keep libbpf's debug-level messages"),
    ("AIOS_LAB_ACCEL", "kvm or tcg: force the VM's accelerator instead of probing"),
    ("AIOS_LAB_RUN_DIR", "where deploy records the attached policy for status (default: /run/aios-lab)"),
    ("AIOS_LAB_FREQ_STATE", "freq run's state file of the settings to restore "
                            "(default: /run/aios-lab/freq-governor.json)"),
    ("AIOS_LAB_TCG", "multi or single: the TCG threading mode when KVM does not work "
                     "(default: multi on QEMU >= 10)"),
    ("AIOS_LAB_VM_NICE", "host nice value for QEMU (-20..19), as `vm run --nice`"),
    ("AIOS_LAB_VM_RT", "set to 1 to run QEMU under SCHED_RR on the host, as `vm run --rt` (root)"),
    ("AIOS_LAB_DEBIAN_MIRROR", "another Debian mirror for the pinned kernel's and QEMU's packages "
                               "(default: deb.debian.org)"),
    ("AIOS_LAB_VM_PLATFORM", "set by `aios-lab vm run` inside the guest: QEMU version, TCG mode, "
                             "host priority and topology (JSON), recorded in results and trace metadata"),
    ("AIOS_LAB_IN_VM", "set to 1 by `aios-lab vm run` inside the guest; recorded in trace metadata"),
    ("AIOS_LAB_REQUIRE_GUEST", "tests: 1 runs tests/guest (inside the VM) and fails, not skips, "
                               "without sched_ext"),
    ("AIOS_LAB_TRACE_PROCESSOR", "tests: path of Perfetto's trace_processor_shell, for the test "
                                 "that opens exported traces with it"),
]


def epilog() -> str:
    """The `aios-lab --help` epilog: the variables, one per line."""
    width = max(len(n) for n, _ in VARIABLES)
    rows = "\n".join(f"{name.ljust(width)}  {text}" for name, text in VARIABLES)
    # \b: click keeps the paragraph's lines as they are (no rewrapping).
    return "Environment variables (docs/environment.md):\n\n\b\n" + rows
