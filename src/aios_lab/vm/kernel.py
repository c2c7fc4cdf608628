"""The pinned guest kernel: resolve, download, verify, unpack, cache.

The pin lives in ``vm/kernel.json``. When the pinned version has left the
Debian suite (backports move on within weeks), we take the newest kernel of
the same suite and flavour whose config has sched_ext, warn loudly, and record
the version actually used: every result carries ``Kernel.release``.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import paths
from ..atomic import publish_dir
from ..debfetch import DebPackage, PrivateApt, check_pinned, extract, with_companions
from ..errors import KernelFeatureMissing, KernelFetchError


@dataclass
class KernelPin:
    suite: str
    flavour: str
    release: str
    version: str
    sha256: dict[str, str]
    required_config: dict[str, list[str]]

    @classmethod
    def load(cls, path: Path | None = None) -> "KernelPin":
        path = path or paths.project_root() / "vm" / "kernel.json"
        data = json.loads(Path(path).read_text())
        return cls(data["suite"], data["flavour"], data["release"], data["version"],
                   data.get("sha256", {}), data.get("required_config", {}))


@dataclass
class Kernel:
    """An unpacked kernel ready to boot: vmlinuz, its config and modules."""

    root: Path
    release: str
    version: str
    pinned: bool
    packages: dict[str, dict] = field(default_factory=dict)

    @property
    def moddir(self) -> Path:
        return self.root / "usr" / "lib" / "modules" / self.release

    @property
    def vmlinuz(self) -> Path:
        return self.moddir / "vmlinuz"

    @property
    def config_path(self) -> Path:
        return self.moddir / "config"

    def config(self) -> dict[str, str]:
        return parse_config(self.config_path.read_text())

    def describe(self) -> dict:
        return {"release": self.release, "debian_version": self.version, "pinned": self.pinned,
                "packages": self.packages}


def parse_config(text: str) -> dict[str, str]:
    cfg: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, _, v = line.partition("=")
            cfg[k] = v
        else:
            m = re.match(r"# (CONFIG_\w+) is not set", line)
            if m:
                cfg[m.group(1)] = "n"
    return cfg


def check_config(cfg: dict[str, str], required: dict[str, list[str]], release: str) -> None:
    """Refuse a kernel that lacks what the VM needs (sched_ext first of all)."""
    for opt, allowed in required.items():
        have = cfg.get(opt, "n")
        if have not in allowed:
            raise KernelFeatureMissing(
                f"kernel {release} has {opt}={have}, aios-lab needs {'/'.join(allowed)}",
                hint="pin a kernel with sched_ext in vm/kernel.json (e.g. Debian trixie-backports 7.x)")


def _cache_root() -> Path:
    return paths.cache_dir() / "kernels"


def cached_kernel() -> Kernel | None:
    """The kernel `vm build` unpacked, preferring the pinned release."""
    base = _cache_root()
    if not base.is_dir():
        return None
    pin = KernelPin.load()
    found = []
    for d in base.iterdir():
        meta = d / "complete.json"
        if meta.exists():
            m = json.loads(meta.read_text())
            found.append(Kernel(d, m["release"], m["version"], m["release"] == pin.release, m.get("packages", {})))
    if not found:
        return None
    found.sort(key=lambda k: (k.pinned, _version_key(k.version)), reverse=True)
    return found[0]


def _version_key(v: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"[.+~\-]", v.split(":")[-1]) if t]


def _apt(pin: KernelPin) -> PrivateApt:
    return PrivateApt(paths.cache_dir() / f"apt-{pin.suite}", [pin.suite])


def _candidate_releases(apt: PrivateApt, pin: KernelPin) -> list[str]:
    """Releases of the suite's flavour, newest first (e.g. 7.3.4+deb13-amd64)."""
    pat = re.compile(rf"^linux-binary-(\d+\.\d+\.\d+\+deb\d+-{re.escape(pin.flavour)})$")
    rels = [m.group(1) for n in apt.names("linux-binary-") if (m := pat.match(n))]
    return sorted(set(rels), key=_version_key, reverse=True)


def ensure_kernel(log: Callable[[str], None] = lambda m: None) -> Kernel:
    """Return a cached, verified kernel, downloading it on first use (idempotent)."""
    pin = KernelPin.load()
    cached = cached_kernel()
    if cached is not None and cached.pinned:
        return cached
    apt = _apt(pin)
    apt.update()
    tried: list[str] = []
    releases = [pin.release] + [r for r in _candidate_releases(apt, pin) if r != pin.release]
    for release in releases:
        base = apt.show(f"linux-base-{release}")
        if base is None:
            tried.append(f"{release}: not in {pin.suite}")
            continue
        pinned = release == pin.release and base.version == pin.version
        if not pinned:
            log(f"WARNING: pinned kernel {pin.release} ({pin.version}) is no longer in {pin.suite}; "
                f"trying {release} ({base.version}) instead. Results will record {release}. "
                "Update vm/kernel.json to pin it.")
        try:
            return _fetch_release(apt, pin, release, base, pinned, log)
        except KernelFeatureMissing as exc:
            tried.append(f"{release}: {exc}")
            log(f"WARNING: {exc}; trying an older kernel")
    if cached is not None:
        log(f"WARNING: no kernel with sched_ext downloadable from {pin.suite}; using cached {cached.release}")
        return cached
    raise KernelFetchError(f"no kernel with sched_ext found in {pin.suite}: " + "; ".join(tried),
                           hint="edit vm/kernel.json to pin a suite/version that has CONFIG_SCHED_CLASS_EXT=y")


def _fetch_release(apt: PrivateApt, pin: KernelPin, release: str, base: DebPackage,
                   pinned: bool, log: Callable[[str], None]) -> Kernel:
    root = _cache_root() / release
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    dl = paths.cache_dir() / "debs"
    pkgs = with_companions(apt, base, [f"linux-binary-{release}", f"linux-modules-{release}"], pin.suite,
                           KernelFetchError)
    if pinned:
        check_pinned(pkgs, pin.sha256, "vm/kernel.json", KernelFetchError)
    # Config first (linux-base is 1 MB): refuse before pulling 120 MB.
    log(f"fetching kernel {release} ({base.version}) from Debian {pin.suite}")
    extract(apt.download(base, dl), tmp)
    cfg = parse_config((tmp / "usr/lib/modules" / release / "config").read_text())
    check_config(cfg, pin.required_config, release)
    for p in pkgs[1:]:
        extract(apt.download(p, dl), tmp)
    # Debian's modules package ships no modules.dep; virtme's module finder needs it.
    depmod = shutil.which("depmod") or "/usr/sbin/depmod"
    subprocess.run([depmod, "-a", "-b", str(tmp / "usr"), release], check=False, capture_output=True)
    meta = {"release": release, "version": base.version, "suite": pin.suite, "pinned": pinned,
            "packages": {p.name: {"version": p.version, "sha256": p.sha256} for p in pkgs}}
    (tmp / "complete.json").write_text(json.dumps(meta, indent=2))
    publish_dir(tmp, root)
    for p in pkgs:  # the unpacked tree is what we keep
        (dl / Path(p.filename).name).unlink(missing_ok=True)
    return Kernel(root, release, base.version, pinned, meta["packages"])
