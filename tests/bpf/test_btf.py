"""BTF reading and ctypes mirroring (no root, no BPF syscall needed).

Compiles tests/data/bpf/host_probe.bpf.c with clang and reads its BTF through
libbpf; checks the ctypes mirror against BTF and against the host C compiler.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from aios_lab.bpf import Btf, BpfObject, check_ctypes_layout, find_libbpf, libbpf_version
from aios_lab.errors import LayoutError, SetupError

from tests.helpers import DATA

BPF_DIR = DATA / "bpf"


def compile_bpf_object(src: Path, out: Path) -> Path:
    from aios_lab.build import compile_bpf

    return compile_bpf(src, out)


@pytest.fixture(scope="module")
def probe_obj(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bpf") / "host_probe.bpf.o"
    return compile_bpf_object(BPF_DIR / "host_probe.bpf.c", out)


@pytest.fixture(scope="module")
def btf(probe_obj):
    with Btf.parse(probe_obj) as b:
        yield b


def test_libbpf_is_recent_enough():
    assert find_libbpf().is_file()
    assert libbpf_version() >= (1, 2)


def test_find_libbpf_order(tmp_path, monkeypatch):
    monkeypatch.delenv("AIOS_LAB_LIBBPF", raising=False)
    monkeypatch.setenv("AIOS_LAB_CACHE", str(tmp_path))
    for ver in ("1.2.0", "1.4.6-1~bpo12+1", "1.10.0-dirty"):
        lib = tmp_path / "libbpf" / ver / "usr/lib/x86_64-linux-gnu/libbpf.so.1"
        lib.parent.mkdir(parents=True)
        lib.write_bytes(b"")
    (tmp_path / "libbpf" / "9.9.9").mkdir()  # a version dir without the library
    assert find_libbpf().parts[-5] == "1.10.0-dirty"   # newest by numbers, not by string
    monkeypatch.setenv("AIOS_LAB_LIBBPF", str(tmp_path / "explicit.so"))
    with pytest.raises(SetupError):                     # explicit but missing: no silent fallback
        find_libbpf()
    (tmp_path / "explicit.so").write_bytes(b"")
    assert find_libbpf() == tmp_path / "explicit.so"


def test_struct_layout(btf):
    ev = btf.struct("hp_event")
    names = [m.name for m in ev.members]
    assert names == ["kind", "pid", "ts_ns", "magic", "comm", "cpu_lo", "flags", "seq",
                     "u", "pairs", "label"]
    assert ev.member("comm").type == "char[16]"
    assert ev.member("seq").type == "s32"
    assert ev.member("flags").offset == 42            # after a 1-byte hole
    u = ev.member("u")
    assert u.layout is not None and u.layout.is_union
    assert [m.offset for m in u.layout.members] == [0, 0]
    assert ev.member("pairs").type == "struct hp_pair[3]"
    assert btf.struct("hp_pair").size == 4             # tail padding
    assert ev.size % 8 == 0
    with pytest.raises(LayoutError, match="no_such"):
        btf.struct("no_such")
    with pytest.raises(LayoutError):
        ev.member("nope")


def test_enum(btf):
    assert btf.enum("hp_kind") == {"HP_EXEC": 1, "HP_SWITCH": 2}
    with pytest.raises(LayoutError):
        btf.enum("no_such_enum")


def test_rodata_datasec(btf):
    vars_ = btf.datasec(".rodata")
    assert set(vars_) == {"magic", "switch_weight", "switch_every", "exec_events", "label"}
    assert vars_["magic"].size == 8 and vars_["label"].size == 8
    assert btf.describe(vars_["exec_events"].type_id) == "bool"


def test_ctypes_mirror_matches_btf(btf):
    for name in ("hp_event", "hp_key", "hp_val", "hp_pair"):
        layout = btf.struct(name)
        ctype = btf.ctypes_type(name)
        assert ctypes.sizeof(ctype) == layout.size
        check_ctypes_layout(ctype, layout)
    ev_t = btf.ctypes_type("hp_event")
    ev = ev_t()
    ev.u.halves[0] = 1
    ev.pairs[2].a = 0xBEEF
    ev.comm = b"hello"
    raw = bytes(ev)
    assert raw[48:52] == (1).to_bytes(4, "little")
    assert raw[56 + 8:56 + 10] == (0xBEEF).to_bytes(2, "little")
    assert ev_t.from_buffer_copy(raw).comm == b"hello"


def test_check_ctypes_layout_names_the_bad_field(btf):
    layout = btf.struct("hp_val")

    class Wrong(ctypes.Structure):
        _fields_ = [("count", ctypes.c_uint64), ("delta", ctypes.c_uint32),
                    ("_pad", ctypes.c_uint32)]

    with pytest.raises(LayoutError, match="delta"):
        check_ctypes_layout(Wrong, layout)


def test_ctypes_mirror_agrees_with_c_compiler(btf, tmp_path):
    """The BTF-built ctypes classes agree with gcc's sizeof/offsetof on the shared header."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no host C compiler")
    structs = ("hp_event", "hp_key", "hp_val", "hp_pair")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "host_probe.h"',
             "int main(void) {"]
    for s in structs:
        lines.append(f'printf("{s} . %zu 0\\n", sizeof(struct {s}));')
        for m in btf.struct(s).members:
            lines.append(f'printf("{s} {m.name} %zu %zu\\n", offsetof(struct {s}, {m.name}), '
                         f'sizeof(((struct {s} *)0)->{m.name}));')
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    subprocess.run([cc, f"-I{BPF_DIR}", str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    seen = 0
    for line in out.splitlines():
        s, member, off, size = line.split()
        ctype = btf.ctypes_type(s)
        if member == ".":
            assert ctypes.sizeof(ctype) == int(off), s
        else:
            field = getattr(ctype, member)
            assert (field.offset, field.size) == (int(off), int(size)), f"{s}.{member}"
        seen += 1
    assert seen == sum(len(btf.struct(s).members) + 1 for s in structs)


def test_vmlinux_btf_enums_and_bitfields():
    path = Path("/sys/kernel/btf/vmlinux")
    if not path.exists():
        pytest.skip("kernel has no BTF")
    with Btf.parse(path) as vm:
        assert vm.enum("bpf_map_type")["BPF_MAP_TYPE_RINGBUF"] == 27
        # ENUM64 (pahole emits it for 64-bit enumerators): unsigned values stay unsigned.
        ctx = vm.enum("perf_callchain_context")
        assert ctx["PERF_CONTEXT_HV"] == 2**64 - 32
        with pytest.raises(LayoutError, match="bitfield"):
            vm.struct("task_struct")
        # The uapi struct our Map.from_fd relies on: leading fields as we declare them.
        info = vm.struct("bpf_map_info")
        assert [(m.name, m.offset) for m in info.members[:7]] == [
            ("type", 0), ("id", 4), ("key_size", 8), ("value_size", 12),
            ("max_entries", 16), ("map_flags", 20), ("name", 24)]
        from aios_lab.bpf.maps import _MapInfo
        assert ctypes.sizeof(_MapInfo) >= info.size


def test_has_member_looks_into_anonymous_members_without_mirroring():
    path = Path("/sys/kernel/btf/vmlinux")
    if not path.exists():
        pytest.skip("kernel has no BTF")
    with Btf.parse(path) as vm:
        # task_struct has bitfields (struct() refuses it) and config-dependent members.
        assert vm.has_member("task_struct", "__state") and vm.has_member("task_struct", "pid")
        assert not vm.has_member("task_struct", "no_such_member")
        assert not vm.has_member("no_such_struct", "pid")
        # sk_buff's list pointers sit inside an anonymous union of anonymous structs.
        assert vm.has_member("sk_buff", "next") and vm.has_member("sk_buff", "rbnode")


def test_set_rodata_validation(probe_obj):
    # Opening parses the ELF only; no kernel involvement, so no root needed.
    with BpfObject.open(probe_obj) as obj:
        obj.set_rodata_many({"magic": 2**64 - 1, "switch_weight": 7, "exec_events": False,
                             "label": "12345678"})
        with pytest.raises(LayoutError, match="out of range"):
            obj.set_rodata("switch_weight", 2**32)
        with pytest.raises(LayoutError, match="out of range"):
            obj.set_rodata("magic", -1)
        with pytest.raises(LayoutError, match="holds 8 bytes"):
            obj.set_rodata("label", "123456789")
        with pytest.raises(LayoutError, match="bool"):
            obj.set_rodata("exec_events", 2)
        with pytest.raises(LayoutError, match="u32"):
            obj.set_rodata("switch_weight", "7")
        with pytest.raises(LayoutError, match="have: "):
            obj.set_rodata("no_such_var", 1)
        # A failed batch writes nothing: validation happens before any write.
        with pytest.raises(LayoutError):
            obj.set_rodata_many({"switch_every": 5, "label": b"x" * 9})
        assert obj.get_rodata_raw("switch_every") == bytes(4)
        assert obj.get_rodata_raw("label") == b"12345678"
        assert obj.get_rodata_raw("magic") == b"\xff" * 8
        obj.set_rodata_raw("switch_every", (9).to_bytes(4, "little"))
        assert obj.get_rodata_raw("switch_every") == (9).to_bytes(4, "little")
        with pytest.raises(LayoutError):
            obj.set_rodata_raw("switch_every", b"\0")
        assert obj.btf.struct("hp_key").size == 8
    obj.close()  # idempotent
    assert os.path.exists(probe_obj)
