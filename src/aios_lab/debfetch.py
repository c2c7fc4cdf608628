"""Download Debian packages through a private apt configuration.

The pinned VM kernel (trixie-backports) and a libbpf new enough for struct_ops
links (bookworm-backports) come from suites the host must not be switched to:
adding them to the host's sources could upgrade the host. So apt runs with its
own sources list, state and cache directories under our cache, and we only ever
``apt-get download`` and unpack with ``dpkg-deb -x``; nothing is installed.
apt verifies each .deb against the suite's signed Release file (sha256), and we
check the sha256 again ourselves before unpacking.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import KernelFetchError

DEBIAN_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Re-read the package lists after this long: backports move weekly.
LISTS_MAX_AGE_S = 6 * 3600


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    filename: str
    sha256: str
    size: int


class PrivateApt:
    """apt-get/apt-cache confined to ``root`` and the given suites."""

    def __init__(self, root: Path, suites: list[str], mirror: str = DEBIAN_MIRROR) -> None:
        self.root = Path(root)
        self.suites = list(suites)
        self.mirror = mirror

    def _options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::State": r / "state",
            "Dir::State::status": r / "state" / "status",
            "Dir::Cache": r / "cache",
            "APT::Architecture": "amd64",
            # Our private state dir has no lock holder to coordinate with.
            "Debug::NoLocking": "1",
            # The _apt user cannot write into root's cache; downloads are
            # verified by hash either way.
            "APT::Sandbox::User": "root",
        }
        out: list[str] = []
        for k, v in opts.items():
            out += ["-o", f"{k}={v}"]
        return out

    def _prepare(self) -> None:
        for d in ("state/lists/partial", "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "state" / "status").touch()
        lines = [f"deb [signed-by={KEYRING}] {self.mirror} {s} main" for s in self.suites]
        src = self.root / "sources.list"
        text = "\n".join(lines) + "\n"
        if not src.exists() or src.read_text() != text:
            src.write_text(text)
            # New suites: the old lists no longer describe them.
            shutil.rmtree(self.root / "state" / "lists", ignore_errors=True)
            (self.root / "state/lists/partial").mkdir(parents=True, exist_ok=True)

    def _run(self, tool: str, args: list[str], cwd: Path | None = None) -> str:
        exe = shutil.which(tool)
        if not exe:
            raise KernelFetchError(f"{tool} not found", hint="this needs a Debian/Ubuntu host with apt")
        proc = subprocess.run([exe, "-q", *self._options(), *args], capture_output=True, text=True, cwd=cwd)
        if proc.returncode != 0:
            err = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "W:"))] or proc.stderr.splitlines()
            raise KernelFetchError(f"{tool} {args[0]} failed: {' '.join(err)[:400]}",
                                   hint="check network access to the Debian archive")
        return proc.stdout

    def update(self, force: bool = False) -> None:
        self._prepare()
        stamp = self.root / "state" / "updated"
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE_S:
            return
        self._run("apt-get", ["update"])
        stamp.touch()

    def names(self, prefix: str) -> list[str]:
        """Package names starting with ``prefix`` that the suites carry now."""
        out = self._run("apt-cache", ["pkgnames", prefix])
        return sorted(set(out.split()))

    def show(self, name: str, version: str | None = None) -> DebPackage | None:
        """The record of ``name`` (a given version, or the candidate); None if absent."""
        try:
            out = self._run("apt-cache", ["show", name])
        except KernelFetchError:
            return None
        best: DebPackage | None = None
        for block in out.strip().split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                if ":" in line and not line.startswith(" "):
                    k, _, v = line.partition(":")
                    fields[k.strip()] = v.strip()
            if fields.get("Package") != name:
                continue
            pkg = DebPackage(name, fields.get("Version", ""), fields.get("Filename", ""),
                             fields.get("SHA256", ""), int(fields.get("Size", "0") or 0))
            if version is None or pkg.version == version:
                if best is None:
                    best = pkg
        return best

    def download(self, pkg: DebPackage, dest: Path) -> Path:
        """Fetch one exact version into ``dest``; verified by sha256."""
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / os.path.basename(pkg.filename)
        if target.exists() and sha256_of(target) == pkg.sha256:
            return target
        self._run("apt-get", ["download", f"{pkg.name}={pkg.version}"], cwd=dest)
        # apt names the file with the epoch URL-escaped; find it by package.
        candidates = sorted(dest.glob(f"{pkg.name}_*.deb"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise KernelFetchError(f"apt-get download left no .deb for {pkg.name}")
        got = candidates[-1]
        digest = sha256_of(got)
        if digest != pkg.sha256:
            got.unlink()
            raise KernelFetchError(f"{pkg.name} {pkg.version}: sha256 {digest} != archive's {pkg.sha256}")
        if got != target:
            os.replace(got, target)
        return target


def with_companions(apt: PrivateApt, first: DebPackage, names: list[str], suite: str,
                    error: type[Exception]) -> list[DebPackage]:
    """``first`` and each of ``names`` at exactly ``first``'s version (the
    packages of one source build must match)."""
    pkgs = [first]
    for name in names:
        p = apt.show(name, first.version)
        if p is None:
            raise error(f"{name} {first.version} not found in {suite}")
        pkgs.append(p)
    return pkgs


def check_pinned(pkgs: list[DebPackage], sha256: dict[str, str], pin_file: str,
                 error: type[Exception]) -> None:
    """Refuse a pinned version whose archive hash is not the pin's."""
    for p in pkgs:
        want = sha256.get(p.name)
        if want and want != p.sha256:
            raise error(f"{p.name}: archive sha256 {p.sha256} differs from the pin {want}",
                        hint=f"the archive changed under a pinned version; check {pin_file}")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract(deb: Path, root: Path) -> None:
    exe = shutil.which("dpkg-deb")
    if not exe:
        raise KernelFetchError("dpkg-deb not found", hint="this needs a Debian/Ubuntu host")
    Path(root).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([exe, "-x", str(deb), str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelFetchError(f"dpkg-deb could not unpack {deb.name}: {proc.stderr.strip()[:300]}")
