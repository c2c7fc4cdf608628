"""The pinned QEMU and the TCG threading mode.

Why a pinned QEMU at all: a load-balancing experiment needs a guest whose
makespan responds to placement, and that needs multi-threaded TCG (one host
thread per vCPU). Debian 12's QEMU 7.2 oopses the guest under MTTCG while
sched_ext patches kernel text ("Oops: int3", then a panic, on the first
attach); QEMU 10 from bookworm-backports ran 33 attach/detach cycles clean
(measured on the development machine). So the VM runs a QEMU fetched like the kernel: through a
private apt configuration, checked by sha256 against ``vm/qemu.json``,
unpacked into the cache and run by path. It links against Debian 12's own
libraries, which bookworm's ``qemu-system-x86`` (installed by ``make setup``)
brings, together with the firmware (SeaBIOS, iPXE) its data dir points to.

Fallbacks, each said loudly and recorded in every result (``Qemu.describe``):
the pinned version gone from the suite -> the newest QEMU >= ``min_version``
of the suite; no download possible -> a cached one; nothing at all -> the
host's ``qemu-system-x86_64``, which on QEMU < 10 forces single-threaded TCG.
"""
from __future__ import annotations

import enum
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import paths
from ..atomic import publish_dir
from ..debfetch import DebPackage, PrivateApt, check_pinned, extract, with_companions
from ..errors import KernelFetchError, QemuFetchError, VmError

# Below this, multi-threaded TCG races sched_ext's kernel text patching.
MTTCG_SAFE_FROM = (10, 0)
BINARY = "usr/bin/qemu-system-x86_64"
MODULE_DIR = "usr/lib/x86_64-linux-gnu/qemu"
DATA_DIR = "usr/share/qemu"
# The host's data dir holds the SeaBIOS/iPXE links the unpacked one lacks.
HOST_DATA_DIR = Path("/usr/share/qemu")


class TcgMode(enum.Enum):
    """How TCG maps vCPUs to host threads."""

    MULTI = "multi"    # one host thread per vCPU: placement changes the makespan
    SINGLE = "single"  # all vCPUs on one host thread: safe on any QEMU, blind to placement

    def qemu_opt(self) -> str:
        return f"-accel tcg,thread={self.value}"

    @classmethod
    def parse(cls, text: str, source: str = "--tcg") -> "TcgMode":
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise VmError(f"{source}={text!r}: TCG mode must be one of "
                          f"{', '.join(m.value for m in cls)}") from None


@dataclass(frozen=True)
class QemuPin:
    suite: str
    version: str
    min_version: tuple[int, ...]
    packages: tuple[str, ...]
    sha256: dict[str, str]

    @classmethod
    def load(cls, path: Path | None = None) -> "QemuPin":
        path = Path(path or paths.project_root() / "vm" / "qemu.json")
        try:
            data = json.loads(path.read_text())
            return cls(str(data["suite"]), str(data["version"]), parse_version(str(data["min_version"])),
                       tuple(str(p) for p in data["packages"]), dict(data.get("sha256", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise QemuFetchError(f"{path}: unreadable QEMU pin ({exc})",
                                 hint="restore vm/qemu.json from the repository") from None


@dataclass
class Qemu:
    """A QEMU ready to run: its binary, where it finds data and modules, and where it came from."""

    binary: Path
    version: tuple[int, ...]
    source: str                      # "pinned" | "suite-fallback" | "cached-fallback" | "system"
    root: Path | None = None         # the unpacked tree (None for the host's QEMU)
    debian_version: str = ""
    packages: dict[str, dict] = field(default_factory=dict)

    @property
    def version_text(self) -> str:
        return ".".join(str(v) for v in self.version)

    @property
    def mttcg_safe(self) -> bool:
        return self.version >= MTTCG_SAFE_FROM

    def data_opts(self) -> list[str]:
        """-L for our data dir first, then the host's (firmware links)."""
        if self.root is None:
            return []
        dirs = [self.root / DATA_DIR] + ([HOST_DATA_DIR] if HOST_DATA_DIR.is_dir() else [])
        return [f"-L {d}" for d in dirs]

    def env(self) -> dict[str, str]:
        """Load QEMU 10's own modules, not the host's 7.2 ones (which it refuses, noisily)."""
        if self.root is None:
            return {}
        return {"QEMU_MODULE_DIR": str(self.root / MODULE_DIR)}

    def describe(self) -> dict:
        return {"version": self.version_text, "debian_version": self.debian_version, "source": self.source,
                "binary": str(self.binary), "pinned": self.source == "pinned", "packages": self.packages}


def parse_version(text: str) -> tuple[int, ...]:
    """'10.0.2' or 'QEMU emulator version 10.0.2 (Debian ...)' -> (10, 0, 2)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise ValueError(f"no version in {text!r}")
    return tuple(int(g) for g in m.groups() if g is not None)


def _debian_upstream(version: str) -> tuple[int, ...]:
    """'1:10.0.2+ds-2+deb13u1~bpo12+1' -> (10, 0, 2)."""
    return parse_version(version.split(":")[-1])


def probe_version(binary: Path, env: dict[str, str] | None = None) -> tuple[int, ...]:
    """Run ``binary --version``: proves it runs on this host (its libraries load)."""
    try:
        proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, **(env or {})))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QemuFetchError(f"{binary} does not run: {exc}") from None
    first = (proc.stdout.splitlines() or [""])[0]
    if proc.returncode != 0 or "version" not in first:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise QemuFetchError(f"{binary} does not run on this host: {err[:200]}",
                             hint="apt-get install qemu-system-x86 (it brings the libraries QEMU links against)")
    return parse_version(first)


def _cache_root() -> Path:
    return paths.cache_dir() / "qemu"


def cached_qemu(pin: QemuPin) -> Qemu | None:
    """The newest unpacked QEMU, the pinned one first."""
    base = _cache_root()
    if not base.is_dir():
        return None
    found: list[Qemu] = []
    for d in base.iterdir():
        meta = d / "complete.json"
        if not meta.exists():
            continue
        try:
            m = json.loads(meta.read_text())
            pinned = m["debian_version"] == pin.version
            found.append(Qemu(d / BINARY, tuple(m["version"]), "pinned" if pinned else "cached-fallback", d,
                              m["debian_version"], m.get("packages", {})))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged entry is refetched, never trusted
    if not found:
        return None
    found.sort(key=lambda q: (q.source == "pinned", q.version), reverse=True)
    return found[0]


def _apt(pin: QemuPin) -> PrivateApt:
    # AIOS_LAB_DEBIAN_MIRROR: another Debian mirror (a local one, or a closed
    # port to check what happens when the archive refuses).
    mirror = os.environ.get("AIOS_LAB_DEBIAN_MIRROR")
    root = paths.cache_dir() / f"apt-{pin.suite}"
    return PrivateApt(root, [pin.suite], mirror) if mirror else PrivateApt(root, [pin.suite])


def ensure_qemu(log: Callable[[str], None] = lambda m: None, pin: QemuPin | None = None) -> Qemu:
    """Return a cached, verified QEMU, downloading the pinned one on first use (idempotent).

    Raises QemuFetchError when no QEMU >= min_version can be had at all.
    """
    pin = pin or QemuPin.load()
    cached = cached_qemu(pin)
    if cached is not None and cached.source == "pinned":
        return cached
    try:
        return _fetch(pin, log)
    except (KernelFetchError, QemuFetchError) as exc:
        if cached is not None:
            log(f"WARNING: cannot fetch the pinned QEMU {pin.version} ({exc}); using cached QEMU "
                f"{cached.version_text} ({cached.debian_version}). Results record it.")
            return cached
        raise QemuFetchError(f"no QEMU >= {'.'.join(map(str, pin.min_version))} could be fetched from Debian "
                             f"{pin.suite}: {exc}",
                             hint="check access to the Debian archive, or update vm/qemu.json") from None


def choose(pin: QemuPin, pinned: DebPackage | None, candidate: DebPackage | None,
           log: Callable[[str], None]) -> tuple[DebPackage, bool]:
    """The pinned package if the suite still has it, else its candidate when
    that is new enough (loudly); QemuFetchError otherwise."""
    if pinned is not None:
        return pinned, True
    if candidate is None or _debian_upstream(candidate.version) < pin.min_version:
        have = candidate.version if candidate else "none"
        raise QemuFetchError(f"{pin.packages[0]} {pin.version} is gone from {pin.suite} and its "
                             f"candidate ({have}) is older than {'.'.join(map(str, pin.min_version))}")
    log(f"WARNING: pinned QEMU {pin.version} is no longer in {pin.suite}; using {candidate.version} instead. "
        "Results will record it. Update vm/qemu.json to pin it.")
    return candidate, False


def _fetch(pin: QemuPin, log: Callable[[str], None]) -> Qemu:
    apt = _apt(pin)
    apt.update()
    pinned_pkg = apt.show(pin.packages[0], pin.version)
    first, pinned = choose(pin, pinned_pkg, None if pinned_pkg else apt.show(pin.packages[0]), log)
    pkgs = with_companions(apt, first, list(pin.packages[1:]), pin.suite, QemuFetchError)
    if pinned:
        check_pinned(pkgs, pin.sha256, "vm/qemu.json", QemuFetchError)
    root = _cache_root() / re.sub(r"[^A-Za-z0-9.+~-]", "_", first.version)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    dl = paths.cache_dir() / "debs"
    log(f"fetching QEMU {first.version} from Debian {pin.suite}")
    try:
        for p in pkgs:
            extract(apt.download(p, dl), tmp)
        env = {"QEMU_MODULE_DIR": str(tmp / MODULE_DIR)}
        version = probe_version(tmp / BINARY, env)
        if version < pin.min_version:
            raise QemuFetchError(f"{tmp / BINARY} reports version {version}, older than the pin's minimum")
        meta = {"debian_version": first.version, "version": list(version), "suite": pin.suite, "pinned": pinned,
                "packages": {p.name: {"version": p.version, "sha256": p.sha256} for p in pkgs}}
        (tmp / "complete.json").write_text(json.dumps(meta, indent=2))
        publish_dir(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for p in pkgs:  # the unpacked tree is what we keep
        (dl / Path(p.filename).name).unlink(missing_ok=True)
    return Qemu(root / BINARY, version, "pinned" if pinned else "suite-fallback", root, first.version,
                meta["packages"])


def system_qemu() -> Qemu | None:
    exe = shutil.which("qemu-system-x86_64")
    if not exe:
        return None
    try:
        return Qemu(Path(exe), probe_version(Path(exe)), "system")
    except QemuFetchError:
        return None


def resolve_qemu(log: Callable[[str], None] = lambda m: None) -> Qemu:
    """The QEMU the VM runs: the pinned one, else (loudly) the host's."""
    try:
        return ensure_qemu(log)
    except QemuFetchError as exc:
        host = system_qemu()
        if host is None:
            raise
        log(f"WARNING: {exc.one_line()}. Falling back to the host's QEMU {host.version_text} ({host.binary})"
            + ("" if host.mttcg_safe else ": single-threaded TCG only, so a makespan cannot judge load balancing"))
        return host


def select_tcg(qemu: Qemu, requested: TcgMode | None = None) -> tuple[TcgMode, str]:
    """The TCG mode to run (multi where QEMU is >= 10) and why.

    ``requested`` (or AIOS_LAB_TCG) asks for one explicitly; multi on a QEMU
    that oopses the guest under it is refused rather than run.
    """
    source = "requested"
    if requested is None and os.environ.get("AIOS_LAB_TCG"):
        requested, source = TcgMode.parse(os.environ["AIOS_LAB_TCG"], "AIOS_LAB_TCG"), "AIOS_LAB_TCG"
    if requested is TcgMode.MULTI and not qemu.mttcg_safe:
        raise VmError(f"multi-threaded TCG on QEMU {qemu.version_text} oopses the guest under sched_ext",
                      hint="run `aios-lab vm build` to fetch the pinned QEMU 10, or use --tcg single")
    if requested is not None:
        return requested, f"{requested.value}-threaded TCG ({source})"
    if qemu.mttcg_safe:
        return TcgMode.MULTI, f"multi-threaded TCG (QEMU {qemu.version_text})"
    return TcgMode.SINGLE, (f"single-threaded TCG: QEMU {qemu.version_text} < 10 oopses the guest under "
                            "multi-threaded TCG; placement cannot change a makespan")
