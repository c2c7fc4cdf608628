"""The kernel a policy is verified for, and that kernel's BTF.

The target is what `aios-lab build` compiles against: the running kernel
when it has sched_ext (its /sys/kernel/btf/vmlinux), otherwise the pinned VM
kernel, whose BTF is taken out of its image once and cached as raw BTF next
to the other downloads.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ... import build, paths
from ...errors import BuildError
from .elf import section
from .report import sha256_file


@dataclass(frozen=True)
class Target:
    release: str
    btf: Path          # raw BTF, or an ELF holding .BTF
    where: str         # "host" or "vm"

    def describe(self) -> dict:
        return {"release": self.release, "btf": str(self.btf), "btf_sha256": sha256_file(self.btf),
                "kernel_stages_in": self.where}


def _pinned_btf(vmlinuz: Path, release: str) -> Path:
    out = paths.cache_dir() / "btf" / f"{release}.btf"
    if out.is_file():
        return out
    raw = section(build.extract_vmlinux_elf(vmlinuz), ".BTF", str(vmlinuz))
    if not raw:
        raise BuildError(f"the kernel image {vmlinuz} has no .BTF section",
                         hint="the pinned kernel is built with CONFIG_DEBUG_INFO_BTF=y; re-run `aios-lab vm build`")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, out)
    return out


def resolve(log=None) -> Target:
    release = build.host_kernel()
    if release is not None:
        return Target(release, build.HOST_BTF, "host")
    from ...vm.kernel import cached_kernel, ensure_kernel

    kernel = cached_kernel() or ensure_kernel(log or (lambda m: None))
    return Target(kernel.release, _pinned_btf(kernel.vmlinuz, kernel.release), "vm")
