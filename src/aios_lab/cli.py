"""aios-lab command line: a thin click layer over the library.

Library functions raise typed exceptions (aios_lab.errors); this module is
the only place that turns them into one-line messages and exit codes.
"""
from __future__ import annotations

import functools
import json
import signal
import sys
import time
from pathlib import Path

import click

from . import __version__, exit_codes
from .cli_train import migration_cost_option, train as _train
from .cli_types import POSITIVE, Folder, InputFile, finite
from .cli_units import deprecated_ms_option
from .environment import epilog as _env_epilog
from .errors import AiosError, SchedulerEjected

ENV_EPILOG = _env_epilog()
SCX_STATS_PATH = "/var/run/scx/root/stats"  # aios_lab.scx_stats.DEFAULT_PATH, without importing it


class _Failure(click.ClickException):
    """`Error: <one line>` with the exit code of the contract (exit_codes)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


INTERVAL_S = finite(0.01, 3600)  # 0 would spin; more than an hour is a typo


def _fail(exc: BaseException) -> click.ClickException:
    if isinstance(exc, KeyboardInterrupt):
        return _Failure("interrupted", exit_codes.INTERRUPTED)
    return _Failure(exc.one_line(), exit_codes.code_for(exc))


def handle_errors(fn):
    """The CLI's error boundary: library exceptions become `Error: <one line>`
    with the documented exit code (aios_lab.exit_codes); Ctrl-C and SIGTERM
    that reach here exit 130 after the library's cleanup has run."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (AiosError, KeyboardInterrupt) as exc:
            raise _fail(exc) from None
    return wrapper


def _sigterm_as_interrupt() -> None:
    """SIGTERM takes the same clean path as Ctrl-C (detach, then exit)."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


class _OneLineErrors(click.Group):
    """click's own errors as one line too: `Error: <what> (see CMD --help)`
    instead of a usage block, with click's exit code (2 for usage)."""

    def main(self, *args, **kwargs):
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("Error: interrupted", err=True)
            sys.exit(exit_codes.INTERRUPTED)
        except click.ClickException as e:
            msg = e.format_message()
            if isinstance(e, click.UsageError) and e.ctx is not None:
                msg += f" (see {e.ctx.command_path} --help)"
            click.echo(f"Error: {msg}", err=True)
            sys.exit(e.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]}, epilog=ENV_EPILOG)
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


# --------------------------------------------------------------------------- build

@main.command()
@click.option("--force", is_flag=True, help="Recompile every object even when up to date.")
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
@click.option("--upstream", is_flag=True,
              help="Also build the kernel's example schedulers (scx_simple, scx_central, ...) from "
                   "the pinned kernel's Debian source package, as baselines (cached).")
@handle_errors
def build(force: bool, as_json: bool, upstream: bool) -> None:
    """Generate vmlinux.h and compile all BPF (policies on AIOS_LAB_POLICY_PATH too).

    On a host whose kernel has sched_ext: against its own BTF
    (/sys/kernel/btf/vmlinux) and the system libbpf when it is >= 1.2.
    Elsewhere: against the pinned VM kernel, fetched with libbpf 1.4.6.
    Idempotent: only changed sources are recompiled.

    Example: aios-lab build
    """
    from . import build as b
    from . import paths
    from .bpf_provision import provision

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    release = b.host_kernel()
    system = b.system_libbpf_version()
    if release is None or system is None or system < b.MIN_LIBBPF:
        provision(log=log)
    if release is not None:
        btf = b.HOST_BTF
        log(f"building against the running kernel's BTF ({btf}, {release})")
    else:
        from .vm.kernel import ensure_kernel

        from .vm.qemu import resolve_qemu

        kernel = ensure_kernel(log=log)
        # The VM's QEMU comes with the kernel: every VM test and benchmark needs it.
        resolve_qemu(log=log)
        btf, release = kernel.vmlinuz, kernel.release
    b.generate_vmlinux_h(btf, paths.build_dir() / "vmlinux.h", release)
    res = b.build_all(force=force)
    baselines = {}
    if upstream:
        from . import upstream as up

        baselines = up.build(log=log)
    if as_json:
        click.echo(json.dumps({"kernel": release, "btf": str(btf), "build_dir": str(paths.build_dir()),
                               "built": [str(p) for p in res.built],
                               "up_to_date": [str(p) for p in res.up_to_date],
                               "upstream": {k: str(v) for k, v in baselines.items()}}, indent=2))
        return
    if baselines:
        click.echo(f"upstream baselines: {', '.join(sorted(baselines))}")
    for p in res.built:
        click.echo(f"built {p.relative_to(paths.build_dir())}")
    click.echo(f"{len(res.built)} built, {len(res.up_to_date)} up to date (kernel {release})")


# --------------------------------------------------------------------------- vm

@main.group()
def vm() -> None:
    """The QEMU VM that boots the pinned sched_ext kernel.

    Example: aios-lab vm run --cpus 4 --numa 2 -- cat /sys/kernel/sched_ext/state
    """


@vm.command("build")
@click.option("--json", "as_json", is_flag=True, help="Print the kernel and accelerator as JSON.")
@handle_errors
def vm_build(as_json: bool) -> None:
    """Download, verify and unpack the pinned kernel and QEMU; pick KVM or TCG (idempotent).

    Example: aios-lab vm build
    """
    from .vm.accel import detect_accel
    from .vm.kernel import ensure_kernel
    from .vm.qemu import resolve_qemu, select_tcg

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
    from .vm.topology import Topology, parse_memory, parse_topology

    return Topology(cpus=cpus, memory_mb=parse_memory(memory), numa_nodes=numa, **parse_topology(topology))


def _vm_options(fn):
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
    from .vm.qemu import TcgMode

    return TcgMode(tcg) if tcg else None


@vm.command("run", context_settings={"ignore_unknown_options": True})
@_vm_options
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
@handle_errors
def vm_run(cpus, memory, numa, topology, tcg, timeout, rwdir, console, keep, nice, rt, command) -> None:
    """Boot the VM, run COMMAND in it as root, stream its output, exit with its code.

    The host's root filesystem is the guest's (read-only, with tmpfs
    overlays), so the project, its virtualenv and build/ are all there.
    A guest kernel panic, oops or hang is an error, never a pass.

    Example: aios-lab vm run --cpus 4 --numa 2 -- aios-lab deploy fifo --duration 5
    """
    from .vm import runner

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
@_vm_options
@handle_errors
def vm_shell(cpus, memory, numa, topology, tcg) -> None:
    """Boot the VM with an interactive root shell on the console.

    Example: aios-lab vm shell --cpus 4 --numa 2
    """
    import os

    from .vm import runner
    from .vm.accel import detect_accel
    from .vm.kernel import ensure_kernel
    from .vm.qemu import resolve_qemu, select_tcg

    kernel = ensure_kernel(log=lambda m: click.echo(m, err=True))
    qemu = resolve_qemu(log=lambda m: click.echo(m, err=True))
    accel, _ = detect_accel(kernel.vmlinuz, kernel.release, qemu)
    topo = _topology(cpus, memory, numa, topology)
    rundir = runner._new_rundir()
    mode = select_tcg(qemu, _tcg(tcg))[0] if accel == "tcg" else None
    argv, path = runner.build_vng_argv(kernel, topo, accel, rundir, [], Path.cwd(), None, qemu, mode)
    argv.remove("--verbose")
    os.environ.update(qemu.env())
    os.environ["PATH"] = path
    os.execv(argv[0], argv)


# --------------------------------------------------------------------------- policies

@main.group()
def policy() -> None:
    """Policies: folders under policies/ with BPF source and a manifest.

    Example: aios-lab policy list
    """


@policy.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include test-only policies.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def policy_list(show_all: bool, as_json: bool) -> None:
    """List the policies aios-lab can deploy.

    Example: aios-lab policy list --json
    """
    from . import policy as pol

    pols = [p for p in pol.discover().values() if show_all or not p.test_only]
    if as_json:
        click.echo(json.dumps([{"name": p.name, "kind": p.kind, "summary": p.summary,
                                "built": p.object_path.exists(),
                                "tunables": {n: t.default for n, t in p.tunables.items()}} for p in pols], indent=2))
        return
    for p in pols:
        built = "" if p.object_path.exists() else "  (not built: run `aios-lab build`)"
        click.echo(f"{p.name:12} {p.kind:10} {p.summary}{built}")
        for t in p.tunables.values():
            click.echo(f"{'':12} --set {t.name}=<{t.type}> (default {t.default}): {t.help}")


# --------------------------------------------------------------------------- deploy / status

def _check_command(command: tuple[str, ...]) -> None:
    """With ignore_unknown_options a mistyped option (`--durration 1`) would
    become the command: refuse that, and a program that does not exist,
    before anything is attached or written."""
    if command and command[0].startswith("-"):
        raise click.UsageError(f"no such option: {command[0]} (a command to run goes after --)")
    if command:
        from .child import check_command

        check_command(list(command))


def _parse_sets(sets: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for s in sets:
        k, sep, v = s.partition("=")
        if not sep:
            raise click.BadParameter(f"{s!r} is not KEY=VALUE", param_hint="--set")
        out[k.strip()] = v.strip()
    return out


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--set", "sets", multiple=True, help="Tunable KEY=VALUE (repeatable); see `policy list`.")
@click.option("--duration", type=POSITIVE, default=None, help="Detach after this many seconds (default: Ctrl-C).")
@click.option("--interval", type=INTERVAL_S, default=1.0, show_default=True, help="Seconds between stats lines.")
@click.option("--json", "as_json", is_flag=True, help="Print stats lines and the final summary as JSON.")
@click.option("--model", "model_path", type=InputFile(), default=None,
              help="Learning policies: model file (mllb) or frequency table (freq) to verify and push "
                   "before attaching (mllb: implies --mode model).")
@click.option("--mode", type=click.Choice(["collect", "model"]), default=None,
              help="Learning policies: who decides, the heuristic (collect) or the model.")
@click.option("--decisions", "decisions_out", type=click.Path(file_okay=False), default=None,
              help="Learning policies: write the logged decisions to this trace directory (for `train lb`).")
@click.option("--retrain-every", type=POSITIVE, default=None,
              help="Learning policies: every N seconds, retrain on the decisions so far and swap the model in.")
@click.option("--retrain-min-rows", type=click.IntRange(min=10), default=500, show_default=True,
              help="With --retrain-every: skip a retrain until this many decisions have outcomes.")
@click.option("--backend", type=click.Choice(["sched_ext", "cpufreq"]), default="sched_ext", show_default=True,
              help="Frequency-table policies: sched_ext (the table in BPF, scx_bpf_cpuperf_set) or cpufreq "
                   "(a user-space governor writing cpufreq sysfs on a host that has a cpufreq driver).")
@click.option("--watch", is_flag=True,
              help="Frequency-table policies: re-read --model when the file changes and swap it in live.")
@click.option("--stats-socket", type=click.Path(dir_okay=False), default=str(SCX_STATS_PATH),
              show_default=True,
              help="Serve the policy's counters here over the scx_stats protocol (JSON lines on a "
                   "Unix socket, as scx schedulers do), for scx's stats tools.")
@click.option("--no-stats-socket", is_flag=True, help="Do not serve scx_stats.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def deploy(name: str, sets, duration, interval, as_json, model_path, mode, decisions_out, retrain_every,
           retrain_min_rows, backend, watch, stats_socket, no_stats_socket, command) -> None:
    """Attach policy NAME to sched_ext and print its stats until Ctrl-C or --duration.

    With a COMMAND (after --) the policy is detached when COMMAND exits, and
    the exit status is COMMAND's. The scheduler is detached on Ctrl-C,
    SIGTERM, --duration, or if this process dies (the kernel drops the
    struct_ops link). If the kernel ejects the policy (watchdog stall,
    scx_bpf_error) the reason is reported and the exit status is 5; if it
    disables it asking for a restart (a CPU went offline or online), the
    policy is attached again after a short backoff, as scx schedulers do.

    Example: aios-lab deploy fifo --set slice_ns=5000000 --duration 30;
    aios-lab deploy mllb --decisions traces/d1 -- make -j4;
    aios-lab deploy mllb --model lb.model --retrain-every 30;
    aios-lab deploy freq --model table.json --watch -- make -j4;
    sudo aios-lab deploy freq --backend cpufreq --model table.json --duration 60
    """
    from . import policy as pol
    from .deploy_loop import DeployLoop

    _sigterm_as_interrupt()
    _check_command(command)
    if stats_socket and not no_stats_socket:
        from .scx_stats import check_socket_path

        check_socket_path(stats_socket)
    policy = pol.get(name)
    learning = any(x is not None for x in (model_path, mode, decisions_out, retrain_every))
    if learning and policy.model is None:
        raise click.UsageError(f"policy {name} learns nothing: --model/--mode/--decisions/--retrain-every "
                               "apply to learning policies (see `aios-lab policy list`)")
    freq_table = policy.model is not None and policy.model.kind == "freq-table"
    if freq_table:
        tree_only = [flag for flag, v in (("--mode", mode), ("--decisions", decisions_out),
                                          ("--retrain-every", retrain_every)) if v is not None]
        if tree_only:
            raise click.UsageError(f"policy {name} deploys a frequency table: {'/'.join(tree_only)} apply to "
                                   "decision-tree policies (mllb); use --model TABLE [--watch]")
    if backend == "cpufreq":
        # Deploy (a): the same table from user space through cpufreq sysfs.
        if not freq_table or not model_path:
            raise click.UsageError("--backend cpufreq applies a frequency table: "
                                   "aios-lab deploy freq --backend cpufreq --model TABLE")
        if command or sets or watch:
            raise click.UsageError("--backend cpufreq takes --model, --duration and --json only "
                                   "(no COMMAND, --set or --watch)")
        from .cli_freq import _run as run_cpufreq

        run_cpufreq(Path(model_path), 0.01, duration, Path("/"), Path("/"), as_json)
        return
    if watch and not (freq_table and model_path):
        raise click.UsageError("--watch needs a frequency-table policy and --model TABLE "
                               "(e.g. aios-lab deploy freq --model table.json --watch)")
    loop = DeployLoop(policy, _parse_sets(sets), model_path=model_path, mode=mode,
                      decisions_out=Path(decisions_out) if decisions_out else None,
                      retrain_every_s=retrain_every, retrain_min_rows=retrain_min_rows, command=list(command),
                      watch_model=watch, stats_socket=None if no_stats_socket else stats_socket)

    def show(event: dict) -> None:
        if as_json:
            click.echo(json.dumps(event))
        elif event["event"] == "attached":
            extra = f", mode {event['mode']}" if event.get("mode") else ""
            if "table" in event:
                t = event["table"]
                extra += (f", table version {t['version']} from {t['source']}" if t else
                          ", no table: perf targets are left as they are")
            click.echo(f"attached {name} (load {event['load_s']:.3f}s, attach {event['attach_s']:.3f}s{extra}); "
                       "Ctrl-C to detach")
        elif event["event"] == "stats":
            rates = "  ".join(f"{k.lower()}={v}" for k, v in event["delta"].items())
            click.echo(f"[{event['t']:7.1f}s] {rates}")
        elif event["event"] == "retrained":
            click.echo(f"[{event['t']:7.1f}s] retrained on {event['rows']} decisions: held-out accuracy "
                       f"{event['accuracy']:.3f}, agreement {event['agreement']:.3f}; model {event['version']} "
                       f"now in slot {event['slot']}")
        elif event["event"] == "retrain_skipped":
            click.echo(f"[{event['t']:7.1f}s] retrain skipped: {event['why']}")
        elif event["event"] == "table_swapped":
            click.echo(f"[{event['t']:7.1f}s] table version {event['version']} from {event['source']} "
                       f"now in slot {event['slot']}")
        elif event["event"] == "swap_rejected":
            click.echo(f"[{event['t']:7.1f}s] table not swapped, the live one stays: {event['why']}")
        elif event["event"] == "command_exited":
            click.echo(f"command exited with {event['exit_code']} after {event['elapsed_s']:.2f}s", err=True)
        elif event["event"] == "restarting":
            click.echo(f"[{event['t']:7.1f}s] the kernel disabled {name} ({event['reason']}: "
                       f"{event['exit']['msg'] or event['exit']['reason']}); attaching again in "
                       f"{event['backoff_s']:g}s", err=True)
        elif event["event"] == "restarted":
            click.echo(f"[{event['t']:7.1f}s] {name} attached again (restart {event['restarts']})", err=True)
        elif event["event"] == "stats_socket_unavailable":
            click.echo(f"scx_stats not served at {event['path']}: {event['why']}", err=True)
        elif event["event"] == "decisions_written":
            click.echo(f"decisions trace written: {event['path']} ({event['rows']} decisions)")

    result = loop.run(duration_s=duration, interval_s=interval, on_event=show)
    if result.ejected is not None:
        info = result.exit_info
        click.echo(json.dumps({"event": "ejected", "policy": name, "exit": info.describe() if info else None})
                   if as_json else f"ejected: {result.ejected}", err=not as_json)
        sys.exit(exit_codes.EJECTED)
    info = result.exit_info
    summary = {"event": "detached", "policy": name, "stats": result.final_stats,
               "exit": info.describe() if info else None}
    if result.table_swaps:
        summary["table_swaps"] = result.table_swaps
    click.echo(json.dumps(summary) if as_json else
               f"detached {name}: {info.one_line() if info else 'no exit info'}; totals: "
               + ", ".join(f"{k.lower()}={v}" for k, v in result.final_stats.items()))
    if result.command_exit is not None and result.command_exit != 0:
        sys.exit(result.command_exit)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def status(as_json: bool) -> None:
    """Show sched_ext state, the attached policy and its stats.

    Example: aios-lab status --json
    """
    from .controller import live_status

    st = live_status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    s = st["sched_ext"]
    click.echo(f"sched_ext: {s['state']}" + (f" ({s['ops']})" if s["ops"] else "")
               + f", enable_seq {s['enable_seq']}, nr_rejected {s['nr_rejected']}")
    p = st.get("policy")
    if p:
        click.echo(f"policy: {p['name']} (pid {p['pid']}, up {p['uptime_s']}s)")
        m = p.get("model")
        if m:
            what = "table" if m.get("kind") == "freq-table" else "model"
            click.echo(f"  {what} version {m['version'] or 'none'} ({m.get('swaps', 0)} swaps)" if "version" in m
                       else f"  {what} version unknown: {m.get('error', 'unreadable')}")
        for k, v in (p.get("stats") or {}).items():
            click.echo(f"  {k.lower():12} {v}")
    elif s["ops"]:
        click.echo("policy: not attached by aios-lab")


# --------------------------------------------------------------------------- telemetry

@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--duration", type=POSITIVE, default=None, help="Stop after this many seconds.")
@click.option("--interval", type=finite(0.01, 60), default=1.0, show_default=True,
              help="Seconds per task/CPU interval row (it used to take milliseconds; "
                   "values above 60 are refused, so an old `--interval 500` cannot silently mean 500 s).")
@deprecated_ms_option("--interval-ms", "--interval")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Trace directory to create (default: results/traces/<timestamp>).")
@click.option("--no-wakeups", is_flag=True, help="Do not record individual wakeup events (they are frequent).")
@click.option("--wakeup-sample", type=click.IntRange(min=1), default=1, show_default=True,
              help="Record 1 in N wakeup events, at random (per-task wakeup counts and waits still see all).")
@click.option("--no-switches", is_flag=True,
              help="Do not record each context switch (the switches table: Perfetto lanes, exact "
                   "wait percentiles); the heaviest stream.")
# = telemetry.collect.DEFAULT_STREAM_BUDGET (not imported: it pulls in pyarrow; a test checks)
@click.option("--stream-budget", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Records/s per CPU the switch and wakeup streams each keep; above it they are sampled by "
                   "whole 16.8 ms windows, each row weighted (docs/trace-format.md). 0: record every event.")
@click.option("--no-bpf", is_flag=True, help="Only sample /proc (what a collection without root gets).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the trace's path and metrics as JSON (as `analyze --json`).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def collect(duration, interval, interval_ms, out, no_wakeups, wakeup_sample, no_switches, stream_budget, no_bpf,
            as_json, command) -> None:
    """Record per-task and per-CPU scheduler telemetry into a trace directory.

    Runs COMMAND (after --) and stops when it exits, or stops after
    --duration, or at Ctrl-C. BPF collectors need root; without it only
    /proc is sampled and the trace says so. See docs/trace-format.md.
    When COMMAND fails the trace is still written and the exit status is 6.

    Example: aios-lab collect --interval 0.5 --out /tmp/t1 -- hackbench -p -g 4 -l 100
    """
    from .analysis.metrics import trace_metrics
    from .analysis.report import format_metrics
    from .telemetry.collect import CollectOptions, collect as run_collect
    from .errors import CommandFailed
    from .safe_output import check_output
    from .telemetry.trace import Trace

    _check_command(command)
    if out:
        check_output(out, folder=True, what="trace")
    seconds = interval if interval_ms is None else interval_ms / 1000
    opts = CollectOptions(out=Path(out) if out else None, duration_s=duration,
                          interval_ms=max(1, round(seconds * 1000)),
                          command=list(command), wakeup_events=not no_wakeups,
                          wakeup_sample=wakeup_sample, switch_events=not no_switches,
                          stream_budget=stream_budget or None, bpf="off" if no_bpf else "auto")
    if not command and duration is None:
        click.echo("collecting until Ctrl-C ...", err=True)
    path = run_collect(opts, echo=lambda m: click.echo(m, err=True))
    trace = Trace.open(path)
    metrics = trace_metrics(trace)
    if as_json:
        click.echo(json.dumps({"trace": str(path), "metrics": metrics}, indent=2, default=str))
    else:
        click.echo(f"trace written: {path}")
        click.echo(format_metrics(metrics))
    rc = trace.metadata.get("workload_exit_code")
    if command and trace.metadata.get("ended_by") == "command" and rc != 0:
        raise CommandFailed(f"the command {command[0]} exited with status {rc}; the trace of its run is "
                            f"kept at {path}")


# --------------------------------------------------------------------------- experiments

@main.command()
@click.option("--cpus", default=None, type=click.IntRange(1, 256),
              help="vCPUs of the VM (default: 4, or the host's CPU count if smaller: more vCPUs than host "
                   "cores reward consolidation, not balancing).")
@click.option("--numa", default=None, type=click.IntRange(1, 64),
              help="NUMA nodes of the VM (default: 2 with 4 vCPUs, else 1).")
@click.option("--workload", default="build", show_default=True, help="Workload name (see workloads/).")
@click.option("--repeat", default=2, show_default=True, type=click.IntRange(1, 1000),
              help="Runs per scheduler, interleaved.")
@click.option("--policies", default="eevdf,fifo,mllb-collect,mllb-model,mllb-stay", show_default=True,
              help="Schedulers to compare; <policy>-model trains a model first; <policy>-stay is the "
                   "never-migrate control.")
@click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the JSON result.")
@click.option("--nice", type=click.IntRange(-20, 19), default=None,
              help="Host priority of QEMU (env AIOS_LAB_VM_NICE), e.g. -10 on a shared host.")
@click.option("--rt", is_flag=True, default=None,
              help="Run QEMU under SCHED_RR (env AIOS_LAB_VM_RT=1), so that host load moves the guest less.")
@click.option("--json", "as_json", is_flag=True,
              help="Progress on stderr; the full result as JSON on stdout.")
@handle_errors
def demo(cpus, numa, workload, repeat, policies, out, nice, rt, as_json) -> None:
    """The whole loop in the VM: collect with mllb, train, deploy the model, compare.

    Boots the pinned sched_ext kernel, runs the workload once under mllb's
    collect mode and trains a model on its logged decisions, then runs it
    under each scheduler in turn (a trace of every run), and prints the
    comparison of makespan, migrations and BPF decision cost. Ends by writing
    the HTML comparison report of all its traces (`aios-lab compare`) and
    printing its path.

    Example: aios-lab demo --cpus 4 --numa 2 --repeat 2
    """
    from .experiment import run_demo
    from .safe_output import check_folder

    check_folder(out, what="--out")
    from .experiment import demo_topology

    cpus, numa = demo_topology(cpus, numa)
    result = run_demo(cpus=cpus, numa=numa, workload=workload, repeat=repeat, out_dir=Path(out),
                      echo=lambda m: click.echo(m, err=as_json),
                      policies=[p for p in policies.split(",") if p], nice=nice, realtime=rt)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))


@main.command("bench-schedulers", hidden=False)
@click.option("--workload", default="cpu-spin", show_default=True, help="Workload name (see workloads/).")
@click.option("--policies", default="eevdf,fifo", show_default=True,
              help="Comma-separated; 'eevdf' means no sched_ext policy (the kernel's fair class).")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 1000),
              help="Runs per scheduler, interleaved.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write results here.")
@click.option("--trace-dir", type=click.Path(file_okay=False), default=None,
              help="Collect a telemetry trace of every run into this directory.")
@click.option("--model", "model_path", type=InputFile(exists=True), default=None,
              help="Model for <policy>-model runs (default: train one here first).")
@click.option("--model-out", type=click.Path(dir_okay=False), default=None,
              help="Where to save the model trained here (default: results/<policy>-<workload>.model).")
@click.option("--train-runs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Runs to train the model on: the first in collect mode, each later one under "
                   "the model trained so far; the model is trained on all of them.")
@migration_cost_option
@click.option("--control/--no-control", default=True, show_default=True,
              help="First run the placement control (CPU-bound spinners pinned to one CPU vs free); "
                   "without it no load-balancing verdict is judged.")
@click.option("--control-loops", type=click.IntRange(min=1000), default=None,
              help="Work per control spinner (shell loop iterations; default 60000).")
@click.option("--control-repeat", type=click.IntRange(min=1), default=None,
              help="Interleaved runs of each control arm (default 3).")
@click.option("--json", "as_json", is_flag=True,
              help="Progress on stderr; the results as JSON on stdout.")
@handle_errors
def bench_schedulers(workload, policies, repeat, json_out, trace_dir, model_path, model_out, train_runs,
                     migration_cost_us, control, control_loops, control_repeat, as_json) -> None:
    """Run a workload under each scheduler in turn on this (sched_ext) kernel.

    Measures makespan and migrations (counted by a BPF program on
    sched_migrate_task), and with --trace-dir the work-conservation loss and
    wait percentiles of every run. First, the placement control says whether
    this platform can reward a good placement at all (ratio >= 1.5); every
    ratio comes with a Mann-Whitney U test. `<policy>-stay` is the
    never-migrate control. Runs inside the VM; `aios-lab demo` calls it there.

    Example: aios-lab vm run --cpus 4 -- aios-lab bench-schedulers --repeat 3
    """
    from .experiment import bench_schedulers as bench
    from .safe_output import check_folder, check_output

    # Outputs are checked before an hour of benchmarking, not after it.
    inputs = [model_path] if model_path else []
    for out, what in ((json_out, "--json-out"), (model_out, "--model-out")):
        if out:
            check_output(out, inputs=inputs, what=what)
    if trace_dir:
        check_folder(trace_dir, what="--trace-dir")
    res = bench(workload=workload, policies=[p for p in policies.split(",") if p], repeat=repeat,
                echo=lambda m: click.echo(m, err=as_json),
                trace_dir=Path(trace_dir) if trace_dir else None,
                model_path=Path(model_path) if model_path else None,
                model_out=Path(model_out) if model_out else None, train_runs=train_runs,
                migration_cost_ns=int(migration_cost_us * 1000), control=control,
                control_loops=control_loops, control_repeat=control_repeat)
    from .experiment import format_summary

    click.echo(json.dumps(res, indent=2, default=str) if as_json else format_summary(res))
    if json_out:
        from .atomic import write_json_atomic

        write_json_atomic(Path(json_out), res)


main.add_command(_train)

from .cli_freq import freq as _freq  # noqa: E402  (its commands import handle_errors from here)

main.add_command(_freq)

from .cli_analysis import analyze as _analyze, compare as _compare, export as _export  # noqa: E402

for _cmd in (_analyze, _compare, _export):
    main.add_command(_cmd)

from .cli_sweep import sweep as _sweep  # noqa: E402

main.add_command(_sweep)

from .cli_verify import verify as _verify  # noqa: E402

main.add_command(_verify)

if __name__ == "__main__":
    main()
