"""Ahead-of-time BPF build: vmlinux.h from the pinned kernel's BTF, then clang.

Every ``*.bpf.c`` under ``bpf/``, ``policies/`` and ``tests/`` is compiled to a
CO-RE object in the build tree, mirroring its source path. An object is rebuilt
only when its source or one of the headers clang reported (``-MD``) changed, or
when the compile flags changed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .atomic import atomic_path, open_atomic
from .errors import BuildError

# Directories whose *.bpf.c we compile, relative to the project root.
SOURCE_DIRS = ("bpf", "policies", "tests")

CLANG_CANDIDATES = ("clang-14", "clang-15", "clang-16", "clang-17", "clang-18", "clang-19", "clang")

# -fms-extensions: the 7.x BTF dumps anonymous tagged members (struct foo;
# inside another struct) that plain C rejects.
BASE_FLAGS = [
    "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
    "-fms-extensions", "-Wno-microsoft-anon-tag", "-Wall", "-Wno-unused-function",
    "-Werror=implicit-function-declaration",
]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ELF_MAGIC = b"\x7fELF"
BTF_MAGIC = b"\x9f\xeb"  # 0xeB9F, little-endian

# On a host whose own kernel has sched_ext, build against its BTF (what the
# objects will be loaded into) rather than the pinned VM kernel's.
HOST_BTF = Path("/sys/kernel/btf/vmlinux")
HOST_SCHED_EXT = Path("/sys/kernel/sched_ext")
# libbpf attaches .struct_ops.link (sched_ext through a link) from 1.2 on.
MIN_LIBBPF = (1, 2)
SYSTEM_LIBBPF_VERSION_H = Path("/usr/include/bpf/libbpf_version.h")


def host_kernel() -> str | None:
    """The running kernel's release when `aios-lab build` should target it:
    it has sched_ext and exposes its BTF. None otherwise (the pinned VM
    kernel is the target then)."""
    if HOST_SCHED_EXT.is_dir() and HOST_BTF.is_file():
        return os.uname().release
    return None


def system_libbpf_version(header: Path = SYSTEM_LIBBPF_VERSION_H) -> tuple[int, int] | None:
    """The system libbpf's version from its installed headers (libbpf-dev),
    or None without them."""
    import re

    try:
        text = header.read_text()
    except OSError:
        return None
    major = re.search(r"#define\s+LIBBPF_MAJOR_VERSION\s+(\d+)", text)
    minor = re.search(r"#define\s+LIBBPF_MINOR_VERSION\s+(\d+)", text)
    return (int(major.group(1)), int(minor.group(1))) if major and minor else None


def find_clang() -> str:
    for name in CLANG_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BuildError("clang not found", hint="install clang-14 (apt-get install clang-14) or run `make setup`")


def find_bpftool() -> str:
    for cand in ("bpftool", "/usr/sbin/bpftool"):
        found = shutil.which(cand)
        if found:
            return found
    raise BuildError("bpftool not found", hint="apt-get install bpftool, or run `make setup`")


def libbpf_include_dir() -> Path | None:
    """Headers of the libbpf we load at run time (bpf_helpers.h etc.)."""
    from .bpf_provision import provisioned_root

    root = provisioned_root()
    if root and (root / "usr/include/bpf/bpf_helpers.h").exists():
        return root / "usr/include"
    if Path("/usr/include/bpf/bpf_helpers.h").exists():
        return Path("/usr/include")
    return None


def extract_vmlinux_elf(vmlinuz: Path) -> bytes:
    """Decompress the ELF image inside a bzImage (Debian 7.x kernels use zstd)."""
    data = vmlinuz.read_bytes()
    if data[:4] == ELF_MAGIC:
        return data
    zstd = shutil.which("zstd")
    if not zstd:
        raise BuildError("zstd not found (needed to unpack the kernel image)", hint="apt-get install zstd")
    start = 0
    while True:
        i = data.find(ZSTD_MAGIC, start)
        if i < 0:
            break
        # zstd exits non-zero on the trailing non-zstd bytes but has written the
        # whole frame by then; the ELF magic tells us whether this was the kernel.
        proc = subprocess.run([zstd, "-dc"], input=data[i:], capture_output=True)
        if proc.stdout[:4] == ELF_MAGIC:
            return proc.stdout
        start = i + 1
    raise BuildError(f"no zstd-compressed ELF found in {vmlinuz}",
                     hint="the pinned kernel is expected to be a zstd bzImage")


def generate_vmlinux_h(vmlinuz: Path, out: Path, release: str) -> Path:
    """Dump the kernel's BTF as C: from a kernel image (the pinned VM kernel)
    or a raw BTF file (a host's /sys/kernel/btf/vmlinux). Regenerated only
    when the kernel release changes."""
    stamp = out.with_suffix(".release")
    if out.exists() and stamp.exists() and stamp.read_text().strip() == release:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    elf = out.parent / f".vmlinux-{release}.elf"
    try:
        with open(vmlinuz, "rb") as fh:
            raw_btf = fh.read(2) == BTF_MAGIC
        if raw_btf:
            elf = vmlinuz  # bpftool reads raw BTF as it is; nothing to unpack
        else:
            elf.write_bytes(extract_vmlinux_elf(vmlinuz))
        with open_atomic(out, "wb") as fh:
            proc = subprocess.run([find_bpftool(), "btf", "dump", "file", str(elf), "format", "c"],
                                  stdout=fh, stderr=subprocess.PIPE)
            if proc.returncode != 0:
                raise BuildError(f"bpftool could not dump BTF of {vmlinuz}: "
                                 f"{proc.stderr.decode(errors='replace').strip()}")
        stamp.write_text(release + "\n")
    finally:
        if elf != vmlinuz:
            elf.unlink(missing_ok=True)
    return out


def compile_flags(build: Path | None = None) -> list[str]:
    build = build or paths.build_dir()
    root = paths.project_root()
    flags = list(BASE_FLAGS) + [f"-I{build}", f"-I{root / 'bpf' / 'include'}"]
    inc = libbpf_include_dir()
    if inc is None:
        raise BuildError("libbpf headers (bpf/bpf_helpers.h) not found",
                         hint="run `aios-lab build` (fetches libbpf) or apt-get install libbpf-dev")
    flags.append(f"-I{inc}")
    return flags


def _flags_digest(flags: list[str]) -> str:
    return hashlib.sha256("\0".join(flags).encode()).hexdigest()[:16]


def _deps_of(depfile: Path) -> list[Path]:
    """Parse a make-style dependency file written by clang -MD."""
    text = depfile.read_text().replace("\\\n", " ")
    _, _, rhs = text.partition(":")
    return [Path(tok) for tok in rhs.split()]


def is_stale(src: Path, out: Path, flags: list[str]) -> bool:
    depfile = out.with_suffix(".d")
    flagfile = out.with_suffix(".flags")
    if not (out.exists() and depfile.exists() and flagfile.exists()):
        return True
    if flagfile.read_text().strip() != _flags_digest(flags):
        return True
    mtime = out.stat().st_mtime
    for dep in [src, *_deps_of(depfile)]:
        try:
            if dep.stat().st_mtime > mtime:
                return True
        except FileNotFoundError:
            return True
    return False


def compile_bpf(src: Path, out: Path, extra_flags: list[str] | None = None, force: bool = False) -> Path:
    """Compile one BPF C file to a CO-RE object; a no-op when up to date."""
    src, out = Path(src).resolve(), Path(out).resolve()
    flags = compile_flags() + [f"-I{src.parent}"] + list(extra_flags or [])
    if not force and not is_stale(src, out, flags):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    depfile = out.with_suffix(".d")
    with atomic_path(out) as tmp:
        cmd = [find_clang(), *flags, "-MD", "-MF", str(depfile), "-MT", str(out), "-c", str(src), "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
            raise BuildError(f"clang failed on {src}: {first}")
    out.with_suffix(".flags").write_text(_flags_digest(flags) + "\n")
    return out


def object_path(src: Path) -> Path:
    """Where the object for a source lives: build/<relative source path>.o,
    or, for a source outside the tree (a policy folder on
    AIOS_LAB_POLICY_PATH), build/external/<digest of its folder>/<name>.o, so
    that two folders' same-named files never share an object."""
    src = Path(src).resolve()
    try:
        rel = src.relative_to(paths.project_root())
    except ValueError:
        digest = hashlib.sha256(str(src.parent).encode()).hexdigest()[:12]
        rel = Path("external") / f"{src.parent.name}-{digest}" / src.name
    return paths.build_dir() / rel.with_name(rel.name.removesuffix(".c") + ".o")


@dataclass
class BuildResult:
    built: list[Path]
    up_to_date: list[Path]


def sources() -> list[Path]:
    """Every BPF source of the tree, then those of policy folders on
    AIOS_LAB_POLICY_PATH."""
    from .sched.policy import search_path

    root = paths.project_root()
    found: list[Path] = []
    for d in SOURCE_DIRS:
        found.extend(sorted((root / d).rglob("*.bpf.c")))
    for extra in search_path()[1:]:
        found.extend(sorted(Path(extra).glob("*/*.bpf.c")))
    return list(dict.fromkeys(p.resolve() for p in found))


def build_all(force: bool = False) -> BuildResult:
    """Compile every BPF source; vmlinux.h must exist (see ensure_vmlinux_h)."""
    if not (paths.build_dir() / "vmlinux.h").exists():
        raise BuildError("build/vmlinux.h is missing", hint="run `aios-lab build` (it fetches the pinned kernel first)")
    result = BuildResult([], [])
    flags = compile_flags()
    for src in sources():
        out = object_path(src)
        if not force and not is_stale(src, out, flags + [f"-I{src.parent}"]):
            result.up_to_date.append(out)
            continue
        compile_bpf(src, out, force=True)
        result.built.append(out)
    return result


@dataclass
class ProjectBuild:
    """What `aios-lab build` did: the kernel and BTF it built against, the
    objects, and the upstream baselines (name -> binary) when asked for."""
    release: str
    btf: Path
    result: BuildResult
    baselines: dict[str, Path]


def build_project(force: bool = False, upstream: bool = False, log=lambda m: None) -> ProjectBuild:
    """Everything `aios-lab build` does: on a host whose kernel has sched_ext,
    against its own BTF (and the system libbpf when it is recent enough);
    elsewhere against the pinned VM kernel, fetched with its QEMU; then
    vmlinux.h, every BPF object, and with ``upstream`` the kernel's example
    schedulers."""
    from .bpf_provision import provision

    release = host_kernel()
    system = system_libbpf_version()
    if release is None or system is None or system < MIN_LIBBPF:
        provision(log=log)
    if release is not None:
        btf = HOST_BTF
        log(f"building against the running kernel's BTF ({btf}, {release})")
    else:
        from .vm.kernel import ensure_kernel
        from .vm.qemu import resolve_qemu

        kernel = ensure_kernel(log=log)
        # The VM's QEMU comes with the kernel: every VM test and benchmark needs it.
        resolve_qemu(log=log)
        btf, release = kernel.vmlinuz, kernel.release
    generate_vmlinux_h(btf, paths.build_dir() / "vmlinux.h", release)
    result = build_all(force=force)
    baselines: dict[str, Path] = {}
    if upstream:
        from . import upstream as up

        baselines = up.build(log=log)
    return ProjectBuild(release, btf, result, baselines)
