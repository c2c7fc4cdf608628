"""The kernel's own example schedulers (tools/sched_ext) as baselines.

scx_simple, scx_central, scx_flatcg and the others are built from Debian's
source package of the pinned VM kernel (linux-source-MAJOR.MINOR, the same
source version as the kernel the VM boots), fetched through the private apt
configuration, unpacked and compiled into the cache by `aios-lab build
--upstream`; nothing from them is committed. Each is a loader binary that
attaches its scheduler and runs until SIGINT, so a run here starts it, waits
until sched_ext is enabled with its ops, and stops it with SIGINT after the
workload. They need clang >= 16 (clang-14 emits no BTF for their extern
kfuncs): Debian 12 has clang-19.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import paths
from .atomic import publish_dir
from .build import extract_vmlinux_elf
from .debfetch import PrivateApt, extract
from .errors import BuildError, SchedExtError, SchedulerEjected
from .sched import sched_ext

# Name -> the ops name it attaches as (/sys/kernel/sched_ext/root/ops).
SCHEDULERS = {"scx_simple": "simple", "scx_central": "central", "scx_flatcg": "flatcg",
              "scx_qmap": "qmap", "scx_pair": "pair", "scx_userland": "userland", "scx_sdt": "sdt",
              "scx_cpu0": "cpu0"}
CLANGS = ("clang-19", "clang-18", "clang-17", "clang-16")
# What tools/sched_ext's Makefile reads from the source tree (it builds its
# own libbpf and bpftool from tools/).
SOURCE_PARTS = ("tools/", "include/uapi/", "include/linux/", "arch/x86/include/", "scripts/",
                "kernel/bpf/", "Makefile")


def _root(version: str) -> Path:
    return paths.cache_dir() / "upstream" / version


def built(version: str | None = None) -> dict[str, Path]:
    """The upstream schedulers built for the pinned kernel: name -> binary."""
    if version is None:
        from .vm.kernel import KernelPin

        version = KernelPin.load().version
    record = _root(version) / "complete.json"
    if not record.exists():
        return {}
    names = json.loads(record.read_text())["built"]
    return {n: _root(version) / "bin" / n for n in names if (_root(version) / "bin" / n).exists()}


def is_upstream(name: str) -> bool:
    return name in SCHEDULERS


def find_clang() -> str:
    for name in CLANGS:
        if shutil.which(name):
            return name
    raise BuildError("the kernel's example schedulers need clang >= 16 (clang-14 emits no BTF for "
                     "their extern kfuncs)", hint="apt-get install clang-19 (Debian 12 has it)")


def build(log=lambda m: None) -> dict[str, Path]:
    """Fetch the pinned kernel's source package, build tools/sched_ext into
    the cache; idempotent. Returns what built (some need newer compilers)."""
    from .vm.kernel import KernelPin, ensure_kernel

    pin = KernelPin.load()
    have = built(pin.version)
    if have:
        return have
    clang = find_clang()
    kernel = ensure_kernel(log=log)
    series = ".".join(pin.version.split(".")[:2])
    apt = PrivateApt(paths.cache_dir() / f"apt-{pin.suite}", [pin.suite])
    apt.update()
    pkg = apt.show(f"linux-source-{series}", pin.version)
    if pkg is None:
        raise BuildError(f"linux-source-{series} {pin.version} is not in {pin.suite}",
                         hint="the pinned kernel's source must match it; update vm/kernel.json")
    root = _root(pin.version)
    work = root.with_name(root.name + ".partial")
    src = work / "src"
    if not (work / "unpacked").exists():  # else a failed build left the sources: reuse them
        shutil.rmtree(work, ignore_errors=True)
        log(f"fetching {pkg.name} {pkg.version} ({pkg.size / 2**20:.0f} MiB)")
        extract(apt.download(pkg, paths.cache_dir() / "debs"), work / "deb")
        tarball = next((work / "deb" / "usr" / "src").glob("linux-source-*.tar.xz"))
        log("unpacking tools/sched_ext and what it builds from")
        top = tarball.name.removesuffix(".tar.xz")  # linux-source-7.3
        proc = subprocess.run(["tar", "-xJf", str(tarball), "-C", str(work), "--wildcards",
                               *[f"{top}/{p}*" for p in SOURCE_PARTS]], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"unpacking {tarball.name} failed: {proc.stderr.strip()[:300]}")
        (work / top).rename(src)
        shutil.rmtree(work / "deb")
        (work / "unpacked").touch()
    btf = work / "vmlinux"
    btf.write_bytes(extract_vmlinux_elf(kernel.vmlinuz))
    log(f"building tools/sched_ext with {clang} against {kernel.release}'s BTF")
    # clang-N does not bring llvm-strip-N; any llvm-strip strips a BPF object's DWARF.
    strip = next((s for s in (f"llvm-strip-{clang.split('-')[1]}", "llvm-strip-14", "llvm-strip")
                  if shutil.which(s)), "llvm-strip")
    proc = subprocess.run(["make", "-k", f"-j{os.cpu_count() or 1}", f"CLANG={clang}",
                           f"LLVM_STRIP={strip}", f"VMLINUX_BTF={btf}"],
                          cwd=src / "tools" / "sched_ext", capture_output=True, text=True)
    bins = src / "tools" / "sched_ext" / "build" / "bin"
    names = sorted(n for n in SCHEDULERS if (bins / n).exists())
    if not names:
        err = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()][:3]
        raise BuildError(f"no example scheduler built from {pkg.name}: {' | '.join(err)}")
    (work / "bin").mkdir()
    for n in names:
        shutil.copy2(bins / n, work / "bin" / n)
    failed = sorted(set(SCHEDULERS) - set(names))
    shutil.rmtree(src)
    btf.unlink()
    (work / "unpacked").unlink()
    (work / "complete.json").write_text(json.dumps(
        {"package": pkg.name, "version": pkg.version, "sha256": pkg.sha256, "clang": clang,
         "built": names, "failed": failed}, indent=2))
    publish_dir(work, root)
    if failed:
        log(f"not built with {clang}: {', '.join(failed)}")
    return built(pin.version)


class UpstreamRun:
    """One upstream scheduler attached by running its loader (the shape of
    sched.deployment.Deployment that bench/run.py uses)."""

    obj = None
    attach_s = None

    def __init__(self, name: str, binary: Path) -> None:
        self.name, self.binary, self.ops = name, binary, SCHEDULERS[name]
        self.proc: subprocess.Popen | None = None
        self.load_s: float | None = None

    def start(self, timeout_s: float = 60.0) -> "UpstreamRun":
        sched_ext.require_privileges()
        sched_ext.require_free()
        t0 = time.monotonic()
        self.proc = subprocess.Popen([str(self.binary)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        while time.monotonic() - t0 < timeout_s:
            st = sched_ext.read_state()
            if st.state == "enabled" and st.ops == self.ops:
                self.load_s = time.monotonic() - t0
                return self
            if self.proc.poll() is not None:
                err = [ln.strip() for ln in (self.proc.stderr.read() if self.proc.stderr else "")
                       .splitlines() if ln.strip()]
                raise SchedExtError(f"{self.name} exited with {self.proc.returncode} before attaching"
                                    + (f": {' | '.join(err[-3:])}" if err else ""))
            time.sleep(0.05)
        self.stop()
        raise SchedExtError(f"{self.name} did not attach within {timeout_s:.0f}s")

    def check(self) -> None:
        st = sched_ext.read_state()
        if self.proc is None or self.proc.poll() is not None or st.ops != self.ops:
            raise SchedulerEjected(f"{self.name} is no longer attached (sched_ext {st.state})", None)

    def read_stats(self) -> dict[str, int]:
        return {}

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sched_ext.read_state().state != "disabled":
            time.sleep(0.05)
        return None
