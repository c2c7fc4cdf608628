"""Run one command in a freshly booted guest and report how it ended.

One call = one boot: virtme-ng boots the pinned kernel over the host's root
filesystem (read-only, with tmpfs overlays), our guest script runs the command,
its output streams back through a virtio serial port while the kernel console
is captured separately and scanned for panics and oopses. The result says
whether the command passed, and a panic or a hang raises instead of ever
looking like a pass.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from .. import paths
from ..errors import EmulatorFault, GuestHang, GuestPanic, VmError
from .accel import detect_accel
from .console import ConsoleReport
from .kernel import Kernel, ensure_kernel
from .qemu import Qemu, TcgMode, resolve_qemu, select_tcg
from .topology import Topology

# tsc=unstable: TCG's TSC is not reliable across emulated CPUs.
KERNEL_ARGS = ["tsc=unstable"]
POLL_S = 0.1


@dataclass
class GuestResult:
    returncode: int
    output: str
    console: str
    report: ConsoleReport
    accel: str
    kernel: dict
    topology: dict
    qemu: dict
    tcg: str | None  # "multi" | "single" under TCG, None under KVM
    wall_s: float
    boot_to_command_s: float | None   # guest uptime when the command started
    launch_to_command_s: float | None  # host wall time from launching QEMU to that moment
    command_s: float | None
    rundir: Path
    extra: dict = field(default_factory=dict)
    # Boots before this one that ended in an emulator fault (see vm.console), with their console logs.
    emulator_faults: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"returncode": self.returncode, "accel": self.accel, "tcg": self.tcg, "qemu": self.qemu,
                "kernel": self.kernel, "topology": self.topology, "wall_s": round(self.wall_s, 2),
                "boot_to_command_s": self.boot_to_command_s, "launch_to_command_s": self.launch_to_command_s,
                "command_s": self.command_s, "emulator_faults": self.emulator_faults,
                "console": self.report.summary()}


def find_vng() -> tuple[str, str]:
    """The vng executable and a PATH under which it finds virtme-run and modprobe."""
    venv_bin = Path(sys.executable).parent
    path = os.pathsep.join([str(venv_bin), os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    exe = shutil.which("vng", path=path)
    if not exe:
        raise VmError("virtme-ng (vng) not found", hint="pip install 'aios-lab[vm]', or run `make setup`")
    if not shutil.which("modprobe", path=path):
        raise VmError("modprobe not found (virtme-ng needs it)", hint="apt-get install kmod")
    return exe, path


def _numpy_at_least(major: int, minor: int) -> bool:
    from importlib import metadata

    try:
        parts = metadata.version("numpy").split(".")
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (metadata.PackageNotFoundError, ValueError, IndexError):
        return False


def _guest_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {
        "AIOS_LAB_ROOT": str(paths.project_root()),
        "AIOS_LAB_CACHE": str(paths.cache_dir()),
        "AIOS_LAB_BUILD": str(paths.build_dir()),
        "AIOS_LAB_IN_VM": "1",
        "PYTHONUNBUFFERED": "1",
        # The guest sees the host's home read-only; matplotlib would warn
        # and rebuild its font cache in a new temp dir on every import.
        "MPLCONFIGDIR": "/tmp/aios-lab-mpl",
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/sbin", "/usr/local/bin",
                                 "/usr/sbin", "/usr/bin", "/sbin", "/bin"]),
    }
    for k in ("AIOS_LAB_LIBBPF",):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update(extra or {})
    return env


def build_vng_argv(kernel: Kernel, topo: Topology, accel: str, rundir: Path, rwdirs: list[Path],
                   cwd: Path, guest_cmd: str | None, qemu: Qemu, tcg: TcgMode | None) -> tuple[list[str], str]:
    vng, path = find_vng()
    qemu_opts = [topo.qemu_smp(), *qemu.data_opts()]
    if accel == "tcg":
        # Multi-threaded on QEMU >= 10 (select_tcg): 7.2 oopsed the guest
        # under it while sched_ext patches kernel text.
        qemu_opts.append((tcg or TcgMode.SINGLE).qemu_opt())
    if guest_cmd is not None:
        for name, fname in (("aios.output", "output"), ("aios.exit", "exitcode")):
            cid = name.replace(".", "_")
            qemu_opts.append(f"-chardev file,id={cid},path={rundir / fname}")
            qemu_opts.append(f"-device virtserialport,name={name},chardev={cid}")
    argv = [vng, "--verbose", "--run", str(kernel.vmlinuz), "--qemu", str(qemu.binary), "--user", "root",
            "--disable-microvm",
            *topo.vng_args(), "--cwd", str(cwd), "--rwdir", str(rundir)]
    for d in rwdirs:
        argv += ["--rwdir", str(d)]
    if accel == "tcg":
        argv.append("--disable-kvm")
    argv += ["--qemu-opts", " ".join(qemu_opts)]
    for a in KERNEL_ARGS:
        argv += ["--append", a]
    if guest_cmd is not None:
        argv += ["--exec", guest_cmd]
    return argv, path


def _host_nice(nice: int | None) -> int | None:
    """The host priority for QEMU: the argument, else AIOS_LAB_VM_NICE, else unchanged."""
    if nice is None:
        raw = os.environ.get("AIOS_LAB_VM_NICE")
        if not raw:
            return None
        try:
            nice = int(raw)
        except ValueError:
            raise VmError(f"AIOS_LAB_VM_NICE={raw!r} is not an integer", hint="use -20..19, e.g. -10") from None
    if not -20 <= nice <= 19:
        raise VmError(f"QEMU nice value {nice} is outside -20..19")
    if nice < 0 and os.geteuid() != 0:
        raise VmError(f"a negative nice value ({nice}) for QEMU needs root", hint="run as root or drop --nice")
    return nice


RT_PRIORITY = 1


def _host_rt(realtime: bool | None, vcpus: int) -> bool:
    """Whether QEMU runs under SCHED_RR, checked for safety.

    Real-time vCPU threads outrank every ordinary task on the host; what
    keeps the host alive is the kernel's RT throttle (sched_rt_runtime_us,
    95 % by default). Without it, as many spinning vCPUs as host CPUs could
    starve the host, so that combination is refused.
    """
    if realtime is None:
        realtime = os.environ.get("AIOS_LAB_VM_RT", "") not in ("", "0")
    if not realtime:
        return False
    if os.geteuid() != 0:
        raise VmError("real-time QEMU (--rt) needs root", hint="run as root or drop --rt")
    try:
        runtime = int(Path("/proc/sys/kernel/sched_rt_runtime_us").read_text())
    except (OSError, ValueError):
        runtime = -1
    if runtime < 0 and vcpus >= (os.cpu_count() or 1):
        raise VmError(f"--rt with {vcpus} vCPUs on {os.cpu_count()} host CPUs and RT throttling off "
                      "(sched_rt_runtime_us = -1) could starve the host",
                      hint="use fewer vCPUs than host CPUs, turn RT throttling on, or drop --rt")
    return True


def _host_sched(nice: int | None, rt: bool):
    """preexec_fn giving QEMU's process (and so every thread it starts) its host priority."""
    if nice is None and not rt:
        return None

    def apply() -> None:
        if nice is not None:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        if rt:
            # Round-robin, not FIFO: more vCPUs than host cores must still
            # take turns instead of the first ones running until they halt.
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
    return apply


def _new_rundir() -> Path:
    base = paths.cache_dir() / "vm-runs"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=base))


def shell_argv(topology: Topology, tcg: TcgMode | None = None,
               log: Callable[[str], None] | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that boot the guest with an interactive root
    shell on the console (`aios-lab vm shell` execs them)."""
    log = log or logging.getLogger(__name__).warning
    kernel = ensure_kernel(log)
    qemu = resolve_qemu(log)
    accel, _reason = detect_accel(kernel.vmlinuz, kernel.release, qemu)
    mode = select_tcg(qemu, tcg)[0] if accel == "tcg" else None
    argv, path = build_vng_argv(kernel, topology, accel, _new_rundir(), [], Path.cwd(), None, qemu, mode)
    argv.remove("--verbose")  # the console is the user's terminal
    return argv, {**os.environ, **qemu.env(), "PATH": path}


def _read_float(p: Path) -> float | None:
    try:
        return float(p.read_text().strip())
    except (OSError, ValueError):
        return None


class _GroupGuard:
    """Never leave a guest running after its runner is gone.

    QEMU runs in its own session (so a terminal's Ctrl-C reaches us, not it),
    so nothing would stop it when we die. SIGTERM and SIGHUP become an
    exception in the poll loop, whose ``finally`` kills the group; for a
    SIGKILL, which nothing catches, a detached shell polls our pid and kills
    the group once we are gone. Measured before this: a SIGTERMed `demo` left
    its QEMU running at nice -10.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.reaper = subprocess.Popen(
            ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; kill -KILL -{pgid} 2>/dev/null"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.old: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, self._raise)

    @staticmethod
    def _raise(signum, frame) -> None:
        # An interruption, as Ctrl-C is: the CLI exits 130 (exit_codes).
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}; the guest was stopped")

    def close(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        # The group is gone: a reaper left waiting could later kill a reused pgid.
        self.reaper.kill()
        self.reaper.wait()


class _Tail:
    """Incrementally read a file another process is appending to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.buf = bytearray()

    def read_new(self) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                data = fh.read()
        except FileNotFoundError:
            return b""
        self.pos += len(data)
        self.buf += data
        return data


def run(command: list[str] | str, *, topology: Topology | None = None, timeout_s: float = 900,
        rwdirs: list[Path] | None = None, cwd: Path | None = None, env: dict[str, str] | None = None,
        stream: IO[str] | None = None, console_stream: IO[str] | None = None, keep_rundir: bool = False,
        kernel: Kernel | None = None, tcg: TcgMode | None = None,
        log: Callable[[str], None] | None = None, nice: int | None = None,
        realtime: bool | None = None, emulator_fault_retries: int = 0) -> GuestResult:
    """Boot the guest, run ``command`` (a shell string or argv) and return its result.

    ``emulator_fault_retries`` boots again, up to that many times, when a boot
    ends in an EmulatorFault (vm.console: the emulator ran stale code; the
    command's results from that boot are void, so it runs again from the
    start and must tolerate that, e.g. by writing its outputs afresh). Every
    other panic, oops or hang is raised at once. The faults are logged and
    kept in ``GuestResult.emulator_faults``.
    """
    log = log or logging.getLogger(__name__).warning
    faults: list[str] = []
    while True:
        try:
            result = _boot(command, topology=topology, timeout_s=timeout_s, rwdirs=rwdirs, cwd=cwd, env=env,
                           stream=stream, console_stream=console_stream, keep_rundir=keep_rundir,
                           kernel=kernel, tcg=tcg, log=log, nice=nice, realtime=realtime)
        except EmulatorFault as exc:
            if len(faults) >= emulator_fault_retries:
                raise
            faults.append(str(exc))
            log(f"[vm] {exc}; booting again ({len(faults)} of {emulator_fault_retries})")
            if stream is not None:
                stream.write(f"\n[vm] emulator fault, the command runs again in a new boot "
                             f"({len(faults)} of {emulator_fault_retries})\n")
                stream.flush()
            continue
        result.emulator_faults = faults
        return result


def _boot(command: list[str] | str, *, topology: Topology | None, timeout_s: float,
          rwdirs: list[Path] | None, cwd: Path | None, env: dict[str, str] | None,
          stream: IO[str] | None, console_stream: IO[str] | None, keep_rundir: bool,
          kernel: Kernel | None, tcg: TcgMode | None, log: Callable[[str], None],
          nice: int | None, realtime: bool | None) -> GuestResult:
    """One boot of ``run``.

    Raises GuestPanic when the guest kernel panicked or oopsed (EmulatorFault
    when that was the emulator's doing), GuestHang when it
    did not finish within ``timeout_s`` (boot included), VmError when it could
    not be started or ended without reporting an exit code. ``tcg`` asks for a
    TCG mode (default: multi-threaded where QEMU is >= 10, see vm.qemu).
    ``nice`` (or AIOS_LAB_VM_NICE) runs QEMU at that host priority: a
    benchmark boot at -10 takes the host's cores ahead of other work on it, so
    that the guest's makespans measure the guest more than the host.
    ``realtime`` (or AIOS_LAB_VM_RT=1) runs QEMU under SCHED_RR instead (see
    ``_host_sched``): on a loaded 2-core host (load average 11) the placement
    control read x2.13 with 2 vCPUs under SCHED_RR against x0.98-x1.21 at
    nice 0 or -10.
    """
    topo = topology or Topology()
    kernel = kernel or ensure_kernel(log)
    qemu = resolve_qemu(log)
    accel, _reason = detect_accel(kernel.vmlinuz, kernel.release, qemu)
    tcg_mode = select_tcg(qemu, tcg)[0] if accel == "tcg" else None
    rundir = _new_rundir()
    cwd = Path(cwd or os.getcwd()).resolve()
    shell = command if isinstance(command, str) else shlex.join(command)
    (rundir / "cmd.sh").write_text(shell + "\n")
    genv = _guest_env(env)
    genv["AIOS_GUEST_CWD"] = str(cwd)
    # So that results written in the guest record the platform they ran on.
    prio = _host_nice(nice)
    rt = _host_rt(realtime, topo.cpus)
    genv["AIOS_LAB_VM_PLATFORM"] = json.dumps({"accel": accel, "tcg": tcg_mode.value if tcg_mode else None,
                                               "qemu": qemu.version_text, "qemu_source": qemu.source,
                                               "host_nice": prio, "host_rt": rt, "topology": topo.describe()})
    if accel == "tcg":
        # numpy's AVX2 kernels died with a general protection fault on a
        # vpgatherqq under TCG (1 of 2 runs of the same training, console
        # log kept in the 2026-11-25 note); the SSE4.2 baseline is enough here.
        # The group names are numpy >= 2.4's; older ones are left alone.
        if _numpy_at_least(2, 4):
            genv.setdefault("NPY_DISABLE_CPU_FEATURES", "X86_V3 X86_V4")
    (rundir / "env.sh").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in genv.items()))
    for f in ("output", "exitcode"):
        (rundir / f).touch()
    guest_script = paths.project_root() / "vm" / "guest-run.sh"
    argv, path = build_vng_argv(kernel, topo, accel, rundir, list(rwdirs or []), cwd,
                                f"sh {guest_script} {rundir}", qemu, tcg_mode)
    (rundir / "argv.txt").write_text(shlex.join(argv) + "\n")
    host_env = dict(os.environ, PATH=path, **qemu.env())
    t0 = time.monotonic()
    with open(rundir / "vng.stdout", "wb") as vout, open(rundir / "console.log", "wb") as vcon:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=vout, stderr=vcon, env=host_env,
                                cwd=str(cwd), start_new_session=True, preexec_fn=_host_sched(prio, rt))
    out_tail, con_tail = _Tail(rundir / "output"), _Tail(rundir / "console.log")
    report = ConsoleReport()
    partial = b""
    timed_out = False
    launch_to_command = None
    start_file = rundir / "guest-start"
    try:
        guard = _GroupGuard(proc.pid)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    try:
        while True:
            done = proc.poll() is not None
            if launch_to_command is None and start_file.exists():
                launch_to_command = time.monotonic() - t0
            data = out_tail.read_new()
            if data and stream is not None:
                stream.write(data.decode(errors="replace"))
                stream.flush()
            cdata = con_tail.read_new()
            if cdata:
                partial += cdata
                *lines, partial = partial.split(b"\n")
                for ln in lines:
                    text = ln.decode(errors="replace")
                    report.feed(text)
                    if console_stream is not None:
                        console_stream.write(text + "\n")
            if done:
                break
            if time.monotonic() - t0 > timeout_s:
                timed_out = True
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        guard.close()
    wall = time.monotonic() - t0
    if partial:
        report.feed(partial.decode(errors="replace"))
    output = out_tail.buf.decode(errors="replace")
    console = con_tail.buf.decode(errors="replace")
    start, end = _read_float(rundir / "guest-start"), _read_float(rundir / "guest-end")
    last_console = " | ".join(ln for ln in console.splitlines()[-3:] if ln.strip())
    if report.emulator_fault:
        raise EmulatorFault(f"{report.summary()} (console log: {rundir / 'console.log'})",
                            hint="run it again; --tcg single has never shown it but cannot reward placement")
    if report.failed:
        raise GuestPanic(f"{report.summary()} (console log: {rundir / 'console.log'})")
    if timed_out:
        where = "before the command started" if start is None else "while the command ran"
        raise GuestHang(f"guest did not finish within {timeout_s:.0f}s ({where}); "
                        f"{report.summary()}; last console: {last_console[:300]}",
                        hint=f"console log: {rundir / 'console.log'}")
    code_text = (rundir / "exitcode").read_text().strip()
    if not code_text.lstrip("-").isdigit():
        raise VmError(f"guest ended without reporting an exit code (vng exit {proc.returncode}); "
                      f"last console: {last_console[:300]}", hint=f"console log: {rundir / 'console.log'}")
    result = GuestResult(returncode=int(code_text), output=output, console=console, report=report, accel=accel,
                         kernel=kernel.describe(), topology=topo.describe(), qemu=qemu.describe(),
                         tcg=tcg_mode.value if tcg_mode else None, wall_s=wall,
                         boot_to_command_s=start, launch_to_command_s=launch_to_command, command_s=(end - start) if start and end else None,
                         rundir=rundir)
    if not keep_rundir:
        shutil.rmtree(rundir, ignore_errors=True)
    return result
