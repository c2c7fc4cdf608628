"""Setting up: `aios-lab build` (the BPF objects) and `aios-lab vm` (the
pinned sched_ext kernel in QEMU)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .group import AiosGroup
from .types import Folder, finite

@click.command()
@click.option("--force", is_flag=True, help="Recompile every object even when up to date.")
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
@click.option("--upstream", is_flag=True,
              help="Also build the kernel's example schedulers (scx_simple, scx_central, ...) from "
                   "the pinned kernel's Debian source package, as baselines (cached).")
def build(force: bool, as_json: bool, upstream: bool) -> None:
    """Generate vmlinux.h and compile all BPF (policies on AIOS_LAB_POLICY_PATH too).

    On a host whose kernel has sched_ext: against its own BTF
    (/sys/kernel/btf/vmlinux) and the system libbpf when it is >= 1.2.
    Elsewhere: against the pinned VM kernel, fetched with libbpf 1.4.6.
    Idempotent: only changed sources are recompiled.

    Example: aios-lab build
    """
    from aios_lab import paths
    from aios_lab.build import build_project

    done = build_project(force=force, upstream=upstream, log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps({"kernel": done.release, "btf": str(done.btf), "build_dir": str(paths.build_dir()),
                               "built": [str(p) for p in done.result.built],
                               "up_to_date": [str(p) for p in done.result.up_to_date],
                               "upstream": {k: str(v) for k, v in done.baselines.items()}}, indent=2))
        return
    if done.baselines:
        click.echo(f"upstream baselines: {', '.join(sorted(done.baselines))}")
    for p in done.result.built:
        click.echo(f"built {p.relative_to(paths.build_dir())}")
    click.echo(f"{len(done.result.built)} built, {len(done.result.up_to_date)} up to date (kernel {done.release})")


@click.group(cls=AiosGroup)
def vm() -> None:
    """The QEMU VM that boots the pinned sched_ext kernel.

    Example: aios-lab vm run --cpus 4 --numa 2 -- cat /sys/kernel/sched_ext/state
    """


@vm.command("build")
@click.option("--json", "as_json", is_flag=True, help="Print the kernel and accelerator as JSON.")
def vm_build(as_json: bool) -> None:
    """Download, verify and unpack the pinned kernel and QEMU; pick KVM or TCG (idempotent).

    Example: aios-lab vm build
    """
    from aios_lab.vm.accel import detect_accel
    from aios_lab.vm.kernel import ensure_kernel
    from aios_lab.vm.qemu import resolve_qemu, select_tcg

    kernel = ensure_kernel(log=lambda m: click.echo(m, err=True))
    qemu = resolve_qemu(log=lambda m: click.echo(m, err=True))
    accel, reason = detect_accel(kernel.vmlinuz, kernel.release, qemu)
    if as_json:
        click.echo(json.dumps({"release": kernel.release, "version": kernel.version,
                               "pinned": kernel.pinned, "root": str(kernel.root),
                               "qemu": qemu.describe(), "accel": accel, "accel_reason": reason,
                               "tcg": select_tcg(qemu)[0].value if accel == "tcg" else None}, indent=2))
        return
    pin = "pinned" if kernel.pinned else "NOT the pinned version"
    click.echo(f"kernel {kernel.release} ({kernel.version}, {pin}) at {kernel.root}")
    qpin = "pinned" if qemu.source == "pinned" else f"NOT the pinned version: {qemu.source}"
    click.echo(f"QEMU {qemu.version_text} ({qemu.debian_version or 'host'}, {qpin}) at {qemu.binary}")
    click.echo(f"accelerator: {accel} ({reason})")
    if accel == "tcg":
        click.echo(f"TCG: {select_tcg(qemu)[1]}")


def _topology(cpus: int, memory: str, numa: int, topology: str | None):
    from aios_lab.vm.topology import Topology, parse_memory, parse_topology

    return Topology(cpus=cpus, memory_mb=parse_memory(memory), numa_nodes=numa, **parse_topology(topology))


def vm_options(fn):
    """The VM's shape and TCG mode, for `vm run` and `vm shell`."""
    fn = click.option("--cpus", default=2, show_default=True, type=click.IntRange(1, 256), help="Number of vCPUs.")(fn)
    fn = click.option("--memory", default="2G", show_default=True, help="Guest memory, e.g. 2G.")(fn)
    fn = click.option("--numa", default=1, show_default=True, type=click.IntRange(1, 64),
                      help="NUMA nodes; CPUs and memory are split evenly, one socket (LLC) per node.")(fn)
    fn = click.option("--topology", default=None,
                      help="sockets=S,cores=C,threads=T (default: one socket per NUMA node).")(fn)
    fn = click.option("--tcg", type=click.Choice(["multi", "single"]), default=None,
                      help="TCG threading when KVM does not work (default: multi on QEMU >= 10; "
                           "env AIOS_LAB_TCG). single cannot judge load balancing.")(fn)
    return fn


def _tcg(tcg: str | None):
    from aios_lab.vm.qemu import TcgMode

    return TcgMode(tcg) if tcg else None


@vm.command("run", context_settings={"ignore_unknown_options": True})
@vm_options
@click.option("--timeout", default=900.0, show_default=True, type=finite(1, 7 * 86400),
              help="Seconds for boot plus command.")
@click.option("--rwdir", multiple=True, type=Folder(),
              help="Host directory the guest may write (repeatable).")
@click.option("--console", is_flag=True, help="Also stream the guest kernel console to stderr.")
@click.option("--keep", is_flag=True, help="Keep the run directory (console log, output) for inspection.")
@click.option("--nice", type=click.IntRange(-20, 19), default=None,
              help="Host priority of QEMU (env AIOS_LAB_VM_NICE); -10 for benchmarks on a shared host.")
@click.option("--rt", is_flag=True, default=None,
              help="Run QEMU under SCHED_RR (env AIOS_LAB_VM_RT=1): benchmark guests keep their host cores "
                   "under host load. Root; the kernel's RT throttle leaves the host 5 %.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def vm_run(cpus, memory, numa, topology, tcg, timeout, rwdir, console, keep, nice, rt, command) -> None:
    """Boot the VM, run COMMAND in it as root, stream its output, exit with its code.

    The host's root filesystem is the guest's (read-only, with tmpfs
    overlays), so the project, its virtualenv and build/ are all there.
    A guest kernel panic, oops or hang is an error, never a pass.

    Example: aios-lab vm run --cpus 4 --numa 2 -- aios-lab deploy fifo --duration 5
    """
    from aios_lab.vm import runner

    topo = _topology(cpus, memory, numa, topology)
    res = runner.run(list(command), topology=topo, timeout_s=timeout, rwdirs=[Path(d) for d in rwdir],
                     stream=sys.stdout, console_stream=sys.stderr if console else None, keep_rundir=keep,
                     tcg=_tcg(tcg), log=lambda m: click.echo(m, err=True), nice=nice, realtime=rt)
    mode = f" {res.tcg}-threaded" if res.tcg else ""
    click.echo(f"[vm] {res.kernel['release']} QEMU {res.qemu['version']} {res.accel}{mode} {topo.cpus} vCPUs: "
               "command started "
               f"{res.boot_to_command_s}s after boot, exit {res.returncode}, {res.wall_s:.1f}s in all"
               + (f"; run dir {res.rundir}" if keep else ""), err=True)
    if res.report.warnings:
        click.echo(f"[vm] guest kernel warnings: {res.report.warnings[0]} (+{len(res.report.warnings) - 1} more)",
                   err=True)
    sys.exit(res.returncode)


@vm.command("shell")
@vm_options
def vm_shell(cpus, memory, numa, topology, tcg) -> None:
    """Boot the VM with an interactive root shell on the console.

    Example: aios-lab vm shell --cpus 4 --numa 2
    """
    import os

    from aios_lab.vm import runner

    argv, env = runner.shell_argv(_topology(cpus, memory, numa, topology), _tcg(tcg),
                                  log=lambda m: click.echo(m, err=True))
    os.execve(argv[0], argv, env)
