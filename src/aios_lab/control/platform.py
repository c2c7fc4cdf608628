"""What a policy was verified or measured on: the kernel release, the
identity of the kernel's BTF (what CO-RE relocated the object against) and
the CPU topology. Recorded with every run, because a verdict on one kernel
and machine says little about another."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RegistryError

HOST_BTF = Path("/sys/kernel/btf/vmlinux")


@dataclass(frozen=True)
class Platform:
    kernel_release: str
    # sha256 of the kernel's BTF blob: the kernel's BTF object id
    # (`bpftool btf`) changes every boot; the content identifies the build.
    btf_id: str
    topology: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def current(cls, btf: Path = HOST_BTF) -> "Platform":
        """This machine (or, inside `aios-lab vm run`, the guest)."""
        from ..telemetry.topology import read_topology

        return cls(os.uname().release, btf_digest(btf), read_topology().describe())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Platform":
        try:
            release, btf, topo = d["kernel_release"], d["btf_id"], d.get("topology", {})
        except (KeyError, TypeError):
            raise RegistryError("a platform needs kernel_release and btf_id") from None
        if not (isinstance(release, str) and isinstance(btf, str) and isinstance(topo, dict)):
            raise RegistryError("platform: kernel_release and btf_id are strings, topology an object")
        return cls(release, btf, topo)

    def to_dict(self) -> dict[str, Any]:
        return {"kernel_release": self.kernel_release, "btf_id": self.btf_id, "topology": self.topology}


def btf_digest(path: Path = HOST_BTF) -> str:
    """sha256 of a BTF file, or "none" where the kernel exposes none."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return "none"
    return h.hexdigest()
