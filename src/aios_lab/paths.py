"""Where aios-lab keeps things: the project tree, the build tree and the cache."""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The source tree (holds bpf/, policies/, vm/); AIOS_LAB_ROOT overrides it."""
    env = os.environ.get("AIOS_LAB_ROOT")
    if env:
        root = Path(env).resolve()
        if not (root / "policies").is_dir():
            from .errors import SetupError

            raise SetupError(f"AIOS_LAB_ROOT={env} is not an aios-lab checkout (no policies/ folder there)",
                             hint="point it at the project tree, or unset it")
        return root
    # src/aios_lab/paths.py -> three levels up is the checkout.
    here = Path(__file__).resolve().parents[2]
    return here


def build_dir() -> Path:
    """Compiled BPF objects and the generated vmlinux.h (ignored by git)."""
    env = os.environ.get("AIOS_LAB_BUILD")
    return Path(env).resolve() if env else project_root() / "build"


def cache_dir() -> Path:
    """Downloads that outlive a checkout: kernels, libbpf, probe results."""
    env = os.environ.get("AIOS_LAB_CACHE")
    if env:
        return Path(env).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aios-lab"
