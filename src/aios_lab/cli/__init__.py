"""aios-lab command line: a thin click layer over the library.

This root registers one module per thing a user does; no command module
imports another (only the shared `group`, `options` and `types`):

  setup     build, vm          compile the BPF; the pinned sched_ext kernel in QEMU
  policies  policy, deploy,    discover, attach and watch policies
            status
  verify    verify             the staged verifier (static, kernel verifier, liveness)
  control   policy submit,     the policy registry, its audit log, the root
            show, history,     service of the privilege split, the MCP server
            diff, audit,       for agents
            service, mcp
  data      collect, analyze,  record telemetry traces and read them
            profile, compare,
            export
  train     train              learn models from traces and the DVFS simulator
  freq      freq               cpufreq and RAPL on a real host
  bench     demo, bench-       benchmarks in the VM, experiment sweeps
            schedulers, sweep

Library functions raise typed exceptions (aios_lab.errors); no command
catches them: the class of every group (group.AiosGroup) is the one place
that turns them into one-line messages and exit codes.
"""
from __future__ import annotations

import signal

import click

from aios_lab import __version__
from aios_lab.environment import epilog

from . import bench, control, data, freq, policies, setup, train, verify
from .group import AiosGroup


def _sigterm_as_interrupt() -> None:
    """SIGTERM takes the same clean path as Ctrl-C (detach, then exit)."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


@click.group(cls=AiosGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=epilog())
@click.version_option(__version__, prog_name="aios-lab")
def main() -> None:
    """Learned scheduling and DVFS on sched_ext, with real BPF.

    Exit codes: 0 ok, 1 failure, 2 usage, 3 bad input, 4 environment (kernel
    feature, root), 5 policy ejected, 6 collect's command failed, 130
    interrupted (see README, "Exit codes").

    Example: aios-lab vm run --cpus 4 -- aios-lab deploy fifo --duration 10
    """
    # Every command cleans up on SIGTERM as on Ctrl-C (temporary files,
    # scratch, attached BPF); commands with their own handler replace this.
    _sigterm_as_interrupt()


# The order of `aios-lab --help` is click's (alphabetical); this is the
# order of a user's path through the tool.
for _command in (setup.build, setup.vm,
                 policies.policy, policies.deploy, policies.status,
                 verify.verify, control.audit, control.service, control.mcp,
                 data.collect, data.analyze, data.profile, data.compare, data.export,
                 train.train,
                 freq.freq,
                 bench.demo, bench.bench_schedulers, bench.sweep):
    main.add_command(_command)
for _command in control.REGISTRY_COMMANDS:
    policies.policy.add_command(_command)
