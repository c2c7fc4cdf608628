"""CPU topology from sysfs: which CPUs share a last-level cache, which a NUMA node.

Migration records carry same_llc/same_node, and trace metadata carries the
whole map, because what a migration costs depends on what it crosses. Every
path is taken relative to `root` so tests can lay out a fake sysfs tree.

LLC id: the lowest CPU in the shared_cpu_list of the CPU's highest-level
cache (level 3 on most x86 parts), so CPUs sharing that cache share the id.
Node: the N of /sys/devices/system/node/nodeN whose cpulist holds the CPU.
Where sysfs says nothing (no cache dirs, no node dirs) the answer is None,
never a guess.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

CPU_DIR = "sys/devices/system/cpu"
NODE_DIR = "sys/devices/system/node"


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11] (the kernel's cpulist format)."""
    out: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.update(range(int(lo), int(hi) + 1))
        else:
            out.add(int(part))
    return sorted(out)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _numbered(parent: Path, prefix: str) -> list[tuple[int, Path]]:
    """Children named <prefix><N>, sorted by N."""
    pat = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    found = [(int(m.group(1)), parent / n) for n in names if (m := pat.match(n))]
    return sorted(found)


@dataclass
class CpuTopology:
    """Online CPUs and their LLC / NUMA node / SMT-core grouping."""

    cpus: list[int]
    llc: dict[int, int] = field(default_factory=dict)        # cpu -> LLC id
    llc_level: int | None = None
    node: dict[int, int] = field(default_factory=dict)       # cpu -> NUMA node
    core: dict[int, int] = field(default_factory=dict)       # cpu -> lowest SMT sibling

    @classmethod
    def read(cls, root: str | os.PathLike = "/") -> "CpuTopology":
        base = Path(root)
        cpu_dir, node_dir = base / CPU_DIR, base / NODE_DIR
        online = _read(cpu_dir / "online")
        cpus = parse_cpu_list(online) if online else [n for n, _ in _numbered(cpu_dir, "cpu")]
        topo = cls(cpus=cpus)
        levels: dict[int, tuple[int, int]] = {}     # cpu -> (level, llc id)
        for cpu in cpus:
            cdir = cpu_dir / f"cpu{cpu}"
            for _, idx in _numbered(cdir / "cache", "index"):
                level, shared = _read(idx / "level"), _read(idx / "shared_cpu_list")
                if level is None or not shared or not level.isdigit():
                    continue
                if (_read(idx / "type") or "") == "Instruction":
                    continue  # an L1i never is the LLC; skip it for clarity
                lvl = int(level)
                if cpu not in levels or lvl > levels[cpu][0]:
                    levels[cpu] = (lvl, min(parse_cpu_list(shared)))
            sib = _read(cdir / "topology" / "thread_siblings_list")
            if sib:
                topo.core[cpu] = min(parse_cpu_list(sib))
        if levels:
            # Compare like with like: the highest level any CPU reports.
            top = max(lvl for lvl, _ in levels.values())
            topo.llc_level = top
            topo.llc = {c: i for c, (lvl, i) in levels.items() if lvl == top}
        for n, ndir in _numbered(node_dir, "node"):
            lst = _read(ndir / "cpulist")
            for cpu in parse_cpu_list(lst) if lst else []:
                topo.node[cpu] = n
        return topo

    def same_llc(self, a: int, b: int) -> bool | None:
        """Whether CPUs a and b share the last-level cache (None: unknown)."""
        if a in self.llc and b in self.llc:
            return self.llc[a] == self.llc[b]
        return None

    def same_node(self, a: int, b: int) -> bool | None:
        """Whether CPUs a and b are on the same NUMA node (None: unknown)."""
        if a in self.node and b in self.node:
            return self.node[a] == self.node[b]
        return None

    def describe(self) -> dict:
        """JSON-ready summary for trace metadata."""
        return {
            "online_cpus": list(self.cpus),
            "llc_level": self.llc_level,
            "nr_llcs": len(set(self.llc.values())),
            "nr_nodes": len(set(self.node.values())),
            "cpus": [{"cpu": c, "llc": self.llc.get(c), "node": self.node.get(c),
                      "core": self.core.get(c)} for c in self.cpus],
        }


def read_topology(root: str | os.PathLike = "/") -> CpuTopology:
    """The topology of the machine (or of a fake tree under `root`)."""
    return CpuTopology.read(root)
