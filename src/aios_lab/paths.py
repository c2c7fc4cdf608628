"""Where aios-lab keeps things: the project tree, the build tree and the cache."""
from __future__ import annotations

import os
from pathlib import Path


# In an installed wheel the trees of the checkout (bpf/, policies/, workloads/,
# vm/ and the BPF objects compiled ahead of time in build/) live here, copied
# by setup.py's build_py.
PACKAGED_DATA = Path(__file__).resolve().parent / "_data"


def project_root() -> Path:
    """The tree that holds bpf/, policies/, workloads/ and vm/: AIOS_LAB_ROOT,
    else the checkout this module runs from, else the data an installed wheel
    carries."""
    env = os.environ.get("AIOS_LAB_ROOT")
    if env:
        root = Path(env).resolve()
        if not (root / "policies").is_dir():
            from .errors import SetupError

            raise SetupError(f"AIOS_LAB_ROOT={env} is not an aios-lab checkout (no policies/ folder there)",
                             hint="point it at the project tree, or unset it")
        return root
    # src/aios_lab/paths.py -> three levels up is the checkout.
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "policies").is_dir() and (checkout / "bpf").is_dir():
        return checkout
    return PACKAGED_DATA


def installed() -> bool:
    """True when running from a wheel's copy of the trees, not a checkout."""
    return project_root() == PACKAGED_DATA


def results_dir() -> Path:
    """Where runs are written by default: the checkout's results/, or, from a
    wheel, results/ in the current directory (never into site-packages)."""
    return Path("results").resolve() if installed() else project_root() / "results"


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


def data_dir() -> Path:
    """What aios-lab keeps for the user (the policy registry):
    $XDG_DATA_HOME/aios-lab or ~/.local/share/aios-lab."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "aios-lab"
