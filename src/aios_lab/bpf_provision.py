"""A libbpf new enough for sched_ext, fetched without touching the host.

sched_ext schedulers must attach through a struct_ops *link* so that the
kernel detaches them when the controller dies (even by SIGKILL). libbpf only
handles ``SEC(".struct_ops.link")`` from 1.2 on; Debian 12 ships 1.1. We fetch
bookworm-backports' libbpf 1.4.6 (it needs only glibc 2.28; trixie's 1.5 needs
glibc 2.38) and load it by path. Measured on the dev machine: libbpf 1.1 fails
to load a `.struct_ops.link` map with -524 (ENOTSUPP).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import paths
from .atomic import publish_dir
from .debfetch import PrivateApt, extract

LIBBPF_SUITE = "bookworm-backports"
LIBBPF_VERSION = "1:1.4.6-1~bpo12+1"
LIBBPF_PACKAGES = ("libbpf1", "libbpf-dev")
LIBDIR = "usr/lib/x86_64-linux-gnu"


def _base() -> Path:
    return paths.cache_dir() / "libbpf"


def provisioned_root() -> Path | None:
    """The unpacked libbpf tree, if one was provisioned (newest first)."""
    base = _base()
    if not base.is_dir():
        return None
    roots = sorted((p for p in base.iterdir() if (p / "complete.json").exists()), reverse=True)
    return roots[0] if roots else None


def provision(log=lambda m: None) -> Path:
    """Fetch and unpack libbpf1 + libbpf-dev; idempotent. Returns the tree root.

    The pinned version is preferred; when the suite has moved on, the newest
    1.x it carries is taken and the version actually used is recorded.
    """
    existing = provisioned_root()
    if existing is not None:
        return existing
    apt = PrivateApt(paths.cache_dir() / "apt-bookworm-backports", [LIBBPF_SUITE])
    apt.update()
    pkgs = []
    for name in LIBBPF_PACKAGES:
        pkg = apt.show(name, LIBBPF_VERSION) or apt.show(name)
        if pkg is None:
            from .errors import KernelFetchError

            raise KernelFetchError(f"{name} not found in {LIBBPF_SUITE}")
        if pkg.version != LIBBPF_VERSION:
            log(f"WARNING: pinned {name} {LIBBPF_VERSION} is gone from {LIBBPF_SUITE}; using {pkg.version}")
        pkgs.append(pkg)
    version = pkgs[0].version.split(":")[-1]
    root = _base() / version
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    dl = paths.cache_dir() / "debs"
    for pkg in pkgs:
        extract(apt.download(pkg, dl), tmp)
    (tmp / "complete.json").write_text(json.dumps(
        {"suite": LIBBPF_SUITE, "packages": {p.name: {"version": p.version, "sha256": p.sha256} for p in pkgs}},
        indent=2))
    publish_dir(tmp, root)
    return root


def library_path() -> Path | None:
    root = provisioned_root()
    if root is None:
        return None
    lib = root / LIBDIR / "libbpf.so.1"
    return lib if lib.exists() else None
