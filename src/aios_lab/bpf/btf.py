"""Read BTF type information through libbpf, and mirror C structs as ctypes.

The C headers shared between BPF programs and Python are the one source of
truth: clang compiles them into the object's BTF, and this module turns a BTF
struct into a ``ctypes.Structure`` whose every offset and the total size equal
BTF's (explicit padding, ``_pack_ = 1``), so Python never re-declares layouts.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

from aios_lab.bpf import libbpf
from aios_lab.bpf.handle import Closeable
from aios_lab.errors import BpfLoadError, LayoutError

# BTF_KIND_* (include/uapi/linux/btf.h)
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)

INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4


class _BtfType(ctypes.Structure):
    # struct btf_type; `size_or_type` is the union { size; type; }.
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_or_type", ctypes.c_uint32)]


def _u32s(addr: int, n: int) -> list[int]:
    return list((ctypes.c_uint32 * n).from_address(addr))


@dataclass(frozen=True)
class Member:
    """One struct/union member: byte offset and size, and a type description."""

    name: str
    offset: int
    size: int
    type: str                      # e.g. "u32", "s64", "bool", "char[16]", "struct x", "ptr"
    type_id: int
    layout: StructLayout | None = None   # for nested struct/union members


@dataclass(frozen=True)
class StructLayout:
    """A struct or union as BTF describes it."""

    name: str
    size: int
    is_union: bool
    members: list[Member] = field(default_factory=list)

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise LayoutError(f"struct {self.name} has no member {name!r}")


@dataclass(frozen=True)
class VarInfo:
    """A global variable of a DATASEC (e.g. a `const volatile` in .rodata)."""

    name: str
    offset: int
    size: int
    type_id: int


class Btf(Closeable):
    """A read-only view of one BTF blob (parsed from a file or owned by an object)."""

    def __init__(self, ptr: int, owned: bool = True, path: str = "") -> None:
        # owned=False: the BTF belongs to a bpf_object, which frees it and
        # calls close() on this view first so it cannot dangle.
        self._ptr: int | None = ptr
        self._owned = owned
        self._path = path
        self._ctypes_cache: dict[str, type] = {}

    @classmethod
    def parse(cls, path: str | Path) -> "Btf":
        """Parse BTF from an ELF object or a raw BTF file (e.g. /sys/kernel/btf/vmlinux)."""
        ptr = libbpf.call_ptr(BpfLoadError, f"cannot parse BTF from {path}", "btf__parse",
                              str(path).encode(), None)
        return cls(ptr, True, str(path))

    def close(self) -> None:
        if self._ptr and self._owned:
            libbpf.func("btf__free")(self._ptr)
        self._ptr = None

    # -- raw access ------------------------------------------------------------

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise LayoutError("BTF handle is closed")
        return self._ptr

    def find(self, name: str, kind: int) -> int:
        """Type id of `name` with BTF kind `kind`, or LayoutError."""
        tid = libbpf.func("btf__find_by_name_kind")(self.ptr, name.encode(), kind)
        if tid < 0:
            where = f" in {self._path}" if self._path else ""
            raise LayoutError(f"BTF has no {_KIND_NAMES.get(kind, kind)} {name!r}{where}")
        return int(tid)

    def has(self, name: str, kind: int) -> bool:
        return libbpf.func("btf__find_by_name_kind")(self.ptr, name.encode(), kind) >= 0

    def _type(self, tid: int) -> tuple[_BtfType, int]:
        addr = libbpf.func("btf__type_by_id")(self.ptr, tid)
        if not addr:
            raise LayoutError(f"BTF type id {tid} does not exist")
        return _BtfType.from_address(addr), int(addr)

    def _name(self, off: int) -> str:
        raw = libbpf.func("btf__name_by_offset")(self.ptr, off)
        return raw.decode() if raw else ""

    @staticmethod
    def _kind(t: _BtfType) -> int:
        return (t.info >> 24) & 0x1F

    def _resolve(self, tid: int) -> tuple[int, _BtfType, int]:
        """Skip typedef/const/volatile/restrict/type_tag to the underlying type."""
        while True:
            t, addr = self._type(tid)
            if self._kind(t) not in _MODIFIERS:
                return tid, t, addr
            tid = t.size_or_type

    # -- public readers --------------------------------------------------------

    def struct(self, name: str) -> StructLayout:
        """The layout of `struct name` (or `union name`, or a typedef to either)."""
        for kind in (KIND_STRUCT, KIND_UNION, KIND_TYPEDEF):
            tid = libbpf.func("btf__find_by_name_kind")(self.ptr, name.encode(), kind)
            if tid > 0:
                rtid, t, _ = self._resolve(int(tid))
                if self._kind(t) in (KIND_STRUCT, KIND_UNION):
                    return self._layout(rtid, name)
        raise LayoutError(f"BTF has no struct {name!r}" + (f" in {self._path}" if self._path else ""),
                          hint="is the struct used by the BPF program? clang only emits used types")

    def has_member(self, struct: str, member: str) -> bool:
        """Whether `struct struct` has a member `member`, looking into anonymous
        members (a kernel's config-dependent fields, e.g. task_struct's
        sched_info, without mirroring the whole struct: kernel structs have
        bitfields, which struct() refuses)."""
        tid = libbpf.func("btf__find_by_name_kind")(self.ptr, struct.encode(), KIND_STRUCT)
        if tid <= 0:
            return False
        todo = [int(tid)]
        while todo:
            t, addr = self._type(todo.pop())
            for i in range(t.info & 0xFFFF):
                name_off, m_type = _u32s(addr + 12 + 12 * i, 2)
                name = self._name(name_off)
                if name == member:
                    return True
                if not name:
                    rtid, rt, _ = self._resolve(m_type)
                    if self._kind(rt) in (KIND_STRUCT, KIND_UNION):
                        todo.append(rtid)
        return False

    def enum(self, name: str) -> dict[str, int]:
        """The enumerators of `enum name` (32- or 64-bit)."""
        for kind in (KIND_ENUM, KIND_ENUM64):
            tid = libbpf.func("btf__find_by_name_kind")(self.ptr, name.encode(), kind)
            if tid > 0:
                t, addr = self._type(int(tid))
                return self._enum_values(t, addr)
        raise LayoutError(f"BTF has no enum {name!r}")

    def datasec(self, section: str) -> dict[str, VarInfo]:
        """Variables of a DATASEC such as ".rodata": name -> offset/size."""
        tid = self.find(section, KIND_DATASEC)
        t, addr = self._type(tid)
        vlen = t.info & 0xFFFF
        out: dict[str, VarInfo] = {}
        base = addr + ctypes.sizeof(_BtfType)
        for i in range(vlen):
            vtype, off, size = _u32s(base + 12 * i, 3)
            var, _ = self._type(vtype)
            if self._kind(var) != KIND_VAR:
                continue
            name = self._name(var.name_off)
            out[name] = VarInfo(name, off, size, var.size_or_type)
        return out

    def type_size(self, tid: int) -> int:
        size = libbpf.func("btf__resolve_size")(self.ptr, tid)
        if size < 0:
            raise LayoutError(f"cannot resolve the size of BTF type {tid}")
        return int(size)

    def describe(self, tid: int) -> str:
        """A short type description used in Member.type."""
        rtid, t, addr = self._resolve(tid)
        kind = self._kind(t)
        if kind == KIND_INT:
            enc = (_u32s(addr + 12, 1)[0] >> 24) & 0xF
            if enc & INT_BOOL:
                return "bool"
            if enc & INT_CHAR or self._name(t.name_off) == "char":
                return "char"
            return ("s" if enc & INT_SIGNED else "u") + str(t.size_or_type * 8)
        if kind in (KIND_ENUM, KIND_ENUM64):
            signed = bool(t.info >> 31)
            return ("s" if signed else "u") + str(t.size_or_type * 8)
        if kind == KIND_PTR:
            return "ptr"
        if kind == KIND_FLOAT:
            return f"f{t.size_or_type * 8}"
        if kind == KIND_ARRAY:
            elem, _idx, n = _u32s(addr + 12, 3)
            return f"{self.describe(elem)}[{n}]"
        if kind in (KIND_STRUCT, KIND_UNION):
            word = "struct" if kind == KIND_STRUCT else "union"
            return f"{word} {self._name(t.name_off) or '<anon>'}"
        raise LayoutError(f"unsupported BTF kind {_KIND_NAMES.get(kind, kind)} (type id {rtid})")

    # -- internals ---------------------------------------------------------------

    def _enum_values(self, t: _BtfType, addr: int) -> dict[str, int]:
        vlen, kind = t.info & 0xFFFF, self._kind(t)
        signed = bool(t.info >> 31)
        base = addr + 12
        out: dict[str, int] = {}
        for i in range(vlen):
            if kind == KIND_ENUM:
                name_off, raw = _u32s(base + 8 * i, 2)
                val = raw - (1 << 32) if signed and raw >= 1 << 31 else raw
            else:
                name_off, lo, hi = _u32s(base + 12 * i, 3)
                val = (hi << 32) | lo
                if signed and val >= 1 << 63:
                    val -= 1 << 64
            out[self._name(name_off)] = val
        return out

    def _layout(self, tid: int, label: str) -> StructLayout:
        t, addr = self._type(tid)
        kind = self._kind(t)
        kflag = bool(t.info >> 31)
        name = self._name(t.name_off) or label
        members: list[Member] = []
        for i in range(t.info & 0xFFFF):
            m_name_off, m_type, m_off = _u32s(addr + 12 + 12 * i, 3)
            m_name = self._name(m_name_off)
            bit_off, bit_size = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
            rtid, rt, raddr = self._resolve(m_type)
            if not kflag and self._kind(rt) == KIND_INT:
                enc = _u32s(raddr + 12, 1)[0]
                if (enc >> 16) & 0xFF or (enc & 0xFF) != rt.size_or_type * 8:
                    bit_size = enc & 0xFF
            if bit_size or bit_off % 8:
                raise LayoutError(f"struct {name}: member {m_name or '<anon>'} is a bitfield; "
                                  "bitfields cannot be mirrored in Python, use whole integers")
            size = self.type_size(m_type)
            nested = None
            if self._kind(rt) in (KIND_STRUCT, KIND_UNION):
                nested = self._layout(rtid, self._name(rt.name_off) or f"{name}.{m_name or 'anon'}")
            members.append(Member(m_name, bit_off // 8, size, self.describe(m_type), m_type, nested))
        return StructLayout(name, t.size_or_type, kind == KIND_UNION, members)

    # -- ctypes mirror -------------------------------------------------------------

    def ctypes_type(self, name: str) -> type:
        """A ctypes Structure/Union equal in size and offsets to BTF's `struct name`."""
        if name not in self._ctypes_cache:
            self._ctypes_cache[name] = layout_to_ctypes(self.struct(name), self)
        return self._ctypes_cache[name]

    def _scalar_ctype(self, tid: int) -> type:
        rtid, t, addr = self._resolve(tid)
        kind = self._kind(t)
        if kind == KIND_ARRAY:
            elem, _idx, n = _u32s(addr + 12, 3)
            return self._scalar_ctype(elem) * n
        if kind in (KIND_STRUCT, KIND_UNION):
            return layout_to_ctypes(self._layout(rtid, self._name(t.name_off) or "anon"), self)
        desc = self.describe(tid)
        if desc in _SCALARS:
            return _SCALARS[desc]
        raise LayoutError(f"no ctypes equivalent for BTF type {desc} (id {tid})")


_SCALARS: dict[str, type] = {
    "bool": ctypes.c_bool, "char": ctypes.c_char, "ptr": ctypes.c_uint64,
    "u8": ctypes.c_uint8, "u16": ctypes.c_uint16, "u32": ctypes.c_uint32, "u64": ctypes.c_uint64,
    "s8": ctypes.c_int8, "s16": ctypes.c_int16, "s32": ctypes.c_int32, "s64": ctypes.c_int64,
    "f32": ctypes.c_float, "f64": ctypes.c_double,
}

_KIND_NAMES = {KIND_INT: "int", KIND_PTR: "ptr", KIND_ARRAY: "array", KIND_STRUCT: "struct",
               KIND_UNION: "union", KIND_ENUM: "enum", KIND_TYPEDEF: "typedef",
               KIND_DATASEC: "datasec", KIND_VAR: "var", KIND_ENUM64: "enum64",
               KIND_FUNC: "func", KIND_FLOAT: "float"}


def layout_to_ctypes(layout: StructLayout, btf: Btf) -> type:
    """Build the ctypes class for a layout; padding fields make offsets explicit."""
    base = ctypes.Union if layout.is_union else ctypes.Structure
    fields: list[tuple[str, type]] = []
    anonymous: list[str] = []
    pos = 0
    for i, m in enumerate(layout.members):
        ctype = btf._scalar_ctype(m.type_id)
        if ctypes.sizeof(ctype) != m.size:
            raise LayoutError(f"struct {layout.name}.{m.name}: ctypes size "
                              f"{ctypes.sizeof(ctype)} != BTF size {m.size}")
        fname = m.name or f"_anon{i}"
        if not m.name:
            anonymous.append(fname)
        if layout.is_union:
            if m.offset:
                raise LayoutError(f"union {layout.name}.{fname} at non-zero offset {m.offset}")
            fields.append((fname, ctype))
            continue
        if m.offset < pos:
            raise LayoutError(f"struct {layout.name}.{fname}: overlaps the previous member")
        if m.offset > pos:
            fields.append((f"_pad{pos}", ctypes.c_uint8 * (m.offset - pos)))
        fields.append((fname, ctype))
        pos = m.offset + m.size
    if not layout.is_union and layout.size > pos:
        fields.append((f"_pad{pos}", ctypes.c_uint8 * (layout.size - pos)))
    ns: dict[str, object] = {"_pack_": 1, "_fields_": fields, "__doc__":
                             f"ctypes mirror of BTF {'union' if layout.is_union else 'struct'} {layout.name}"}
    if anonymous:
        ns["_anonymous_"] = anonymous
    cls = type(layout.name.replace(".", "_") or "anon", (base,), ns)
    if ctypes.sizeof(cls) < layout.size and layout.is_union:
        # A union padded past its largest member (alignment): grow it.
        ns["_fields_"] = fields + [("_pad", ctypes.c_uint8 * layout.size)]
        cls = type(cls.__name__, (base,), ns)
    check_ctypes_layout(cls, layout)
    return cls


def check_ctypes_layout(ctype: type, layout: StructLayout) -> None:
    """Raise LayoutError naming the first member whose offset/size differ from BTF."""
    if ctypes.sizeof(ctype) != layout.size:
        raise LayoutError(f"{ctype.__name__}: size {ctypes.sizeof(ctype)} != "
                          f"BTF struct {layout.name} size {layout.size}")
    for i, m in enumerate(layout.members):
        fname = m.name or f"_anon{i}"
        desc = getattr(ctype, fname, None)
        if desc is None:
            raise LayoutError(f"{ctype.__name__} lacks field {fname!r} of struct {layout.name}")
        if desc.offset != m.offset or desc.size != m.size:
            raise LayoutError(f"{ctype.__name__}.{fname}: offset/size {desc.offset}/{desc.size} "
                              f"!= BTF {layout.name}.{fname} {m.offset}/{m.size}")
