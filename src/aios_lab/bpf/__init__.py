"""A thin ctypes binding over libbpf (>= 1.2 for struct_ops links).

Nothing here needs a compiler at run time: objects are compiled ahead of time
(``aios_lab.build``) and opened, configured, loaded and attached from Python.
"""
from __future__ import annotations

from aios_lab.bpf.btf import Btf, Member, StructLayout, VarInfo, check_ctypes_layout
from aios_lab.bpf.fs import ensure_bpffs, ensure_tracefs, require_root
from aios_lab.bpf.libbpf import (find_libbpf, libbpf_version, num_possible_cpus, recent_log,
                                 require_struct_ops_link)
from aios_lab.bpf.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, Map
from aios_lab.bpf.loader import LiveObject, LoadSpec, load
from aios_lab.bpf.object import BpfObject, Link, Program
from aios_lab.bpf.ringbuf import RingArray, RingBuffer, bulk_supported

__all__ = [
    "BPF_ANY", "BPF_EXIST", "BPF_NOEXIST", "BpfObject", "Btf", "Link", "LiveObject", "LoadSpec", "Map", "Member",
    "Program", "RingArray", "RingBuffer", "StructLayout", "VarInfo", "check_ctypes_layout", "ensure_bpffs",
    "ensure_tracefs", "find_libbpf", "libbpf_version", "num_possible_cpus", "recent_log",
    "load", "require_root", "require_struct_ops_link", "bulk_supported",
]
