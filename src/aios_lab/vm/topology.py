"""Guest CPU topology: vCPUs, sockets/cores/threads and NUMA nodes.

Load-balancing experiments need more than one LLC and NUMA node. Under QEMU's
x86 CPU models each socket reports its own L3, so ``sockets=2`` gives two LLCs;
``numa=2`` splits CPUs and memory evenly over two nodes (node i gets a
contiguous CPU range), which yields MC + NUMA scheduling domains in the guest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import VmError


@dataclass(frozen=True)
class Topology:
    cpus: int = 2
    memory_mb: int = 2048
    sockets: int | None = None
    cores: int | None = None
    threads: int = 1
    numa_nodes: int = 1

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise VmError(f"--cpus must be >= 1, got {self.cpus}")
        if self.memory_mb < 256:
            raise VmError(f"guest memory {self.memory_mb} MiB is too small", hint="use at least 512M")
        if self.numa_nodes < 1 or self.cpus % self.numa_nodes:
            raise VmError(f"{self.cpus} vCPUs cannot be split evenly over {self.numa_nodes} NUMA nodes")
        if self.memory_mb % self.numa_nodes:
            raise VmError(f"{self.memory_mb} MiB cannot be split evenly over {self.numa_nodes} NUMA nodes")
        s, c, t = self.smp()
        if s * c * t != self.cpus:
            raise VmError(f"sockets*cores*threads = {s}*{c}*{t} != --cpus {self.cpus}")

    def smp(self) -> tuple[int, int, int]:
        """(sockets, cores per socket, threads per core)."""
        sockets = self.sockets or (self.numa_nodes if self.numa_nodes > 1 else 1)
        threads = self.threads or 1
        cores = self.cores or max(1, self.cpus // (sockets * threads))
        return sockets, cores, threads

    def vng_args(self) -> list[str]:
        args = ["--cpus", str(self.cpus), "--memory", f"{self.memory_mb}M"]
        if self.numa_nodes > 1:
            per_cpu = self.cpus // self.numa_nodes
            per_mem = self.memory_mb // self.numa_nodes
            for n in range(self.numa_nodes):
                lo, hi = n * per_cpu, (n + 1) * per_cpu - 1
                args += ["--numa", f"{per_mem}M,cpus={lo}-{hi}" if hi > lo else f"{per_mem}M,cpus={lo}"]
        return args

    def qemu_smp(self) -> str:
        s, c, t = self.smp()
        return f"-smp {self.cpus},sockets={s},cores={c},threads={t}"

    def describe(self) -> dict:
        s, c, t = self.smp()
        return {"cpus": self.cpus, "memory_mb": self.memory_mb, "sockets": s, "cores": c,
                "threads": t, "numa_nodes": self.numa_nodes}


def parse_memory(text: str) -> int:
    """'2G' / '1536M' / '2048' -> MiB."""
    m = re.fullmatch(r"\s*(\d+)\s*([GgMm]?)i?[Bb]?\s*", text)
    if not m:
        raise VmError(f"cannot read memory size {text!r}", hint="use e.g. 2G or 1536M")
    n, unit = int(m.group(1)), m.group(2).upper()
    return n * 1024 if unit == "G" else n


def parse_topology(text: str | None) -> dict:
    """'sockets=2,cores=2,threads=1' -> dict of ints (empty for None)."""
    if not text:
        return {}
    out: dict[str, int] = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or k.strip() not in ("sockets", "cores", "threads") or not v.strip().isdigit():
            raise VmError(f"cannot read topology {text!r}", hint="use e.g. sockets=2,cores=2,threads=1")
        out[k.strip()] = int(v)
    return out
