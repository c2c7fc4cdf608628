"""The exit-code contract of the aios-lab command line, in one table.

Scripts (and `aios-lab demo` itself) tell failures apart by these codes; the
README's "Exit codes" section is this table, and a test checks they agree.
The CLI's error boundary maps every library exception through `code_for`.
"""
from __future__ import annotations

from . import errors as E

OK = 0
FAILURE = 1        # anything else that went wrong (a libbpf call, a build, the VM)
USAGE = 2          # click: unknown option, missing argument, a value outside its range
BAD_INPUT = 3      # a malformed file (trace, model, table, manifest, workload, state) or output path
ENVIRONMENT = 4    # missing kernel feature, not root, no cpufreq/RAPL, a bad AIOS_LAB_* variable
EJECTED = 5        # the kernel ejected the policy (watchdog stall, scx_bpf_error); a rollout rolled back
COMMAND_FAILED = 6  # collect's workload could not start or failed (the trace is still written)
CELLS_FAILED = 7   # sweep run: cells still failing after their retries (the finished ones are kept)
INTEGRITY = 8      # a registry blob that does not match its hash, or a broken audit chain
VERIFY_FAILED = 9  # verify: the policy failed a stage; deploy: an entry without a passing verification
INTERRUPTED = 130  # Ctrl-C or SIGTERM (what was collected so far is kept)

TABLE = {
    OK: "success",
    FAILURE: "failure: a libbpf call, a build, the VM, or another error the message names",
    USAGE: "usage error: unknown option, missing argument, an option value out of range",
    BAD_INPUT: "bad input: a malformed trace, model, table, manifest, workload or state file, "
               "or a refused output path",
    ENVIRONMENT: "environment: a missing kernel feature, not root, no cpufreq or RAPL, "
                 "another scheduler attached, a bad AIOS_LAB_* variable",
    EJECTED: "the kernel ejected the policy (watchdog stall, scx_bpf_error), or policy deploy rolled it "
             "back (ejected or a guard breached) to the last known good one",
    COMMAND_FAILED: "collect's command could not start or exited with a failure",
    CELLS_FAILED: "sweep run: cells still failed after their retries (listed; the next run tries them again)",
    INTEGRITY: "integrity: a policy registry blob does not match its hash, or the audit log's "
               "hash chain is broken (edited, deleted or reordered records)",
    VERIFY_FAILED: "verify: the policy failed a stage (the report names the check and why); policy deploy: "
                   "the entry has no passing verification or is quarantined",
    INTERRUPTED: "interrupted by Ctrl-C or SIGTERM",
}

# Most specific first: the first class an exception is an instance of wins.
_BY_CLASS: tuple[tuple[type[E.AiosError], int], ...] = (
    (E.SchedulerEjected, EJECTED),
    (E.IntegrityError, INTEGRITY),
    (E.DeployRefused, VERIFY_FAILED),
    (E.CommandFailed, COMMAND_FAILED),
    (E.CpufreqPermissionError, ENVIRONMENT),
    (E.PrivilegeError, ENVIRONMENT),
    (E.KernelFeatureMissing, ENVIRONMENT),
    (E.SchedulerBusy, ENVIRONMENT),
    (E.CpufreqUnavailable, ENVIRONMENT),
    (E.EnergyUnavailable, ENVIRONMENT),
    (E.SetupError, ENVIRONMENT),
    (E.InputError, BAD_INPUT),
    (E.OutputError, BAD_INPUT),
    (E.TraceError, BAD_INPUT),
    (E.ModelError, BAD_INPUT),
    (E.PolicyError, BAD_INPUT),
    (E.RegistryError, BAD_INPUT),
)


def code_for(exc: BaseException) -> int:
    """The exit code for an exception that reached the CLI's boundary."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    return FAILURE
