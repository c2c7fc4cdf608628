"""A compiled BPF object file: open -> set rodata and map sizes -> load ->
attach -> close. These are the steps; aios_lab.bpf.loader.load() runs them in
order and closes the object on any error, which is how the project uses them.

    with BpfObject.open(path) as obj:
        obj.set_rodata_many({"slice_ns": 3_000_000})
        obj.load()
        link = obj.attach_struct_ops("my_ops")   # a sched_ext scheduler
        ...
"""
from __future__ import annotations

import ctypes
import os
import re
import struct
from pathlib import Path
from typing import Any, Iterator

from aios_lab.bpf import libbpf
from aios_lab.bpf.handle import Closeable
from aios_lab.bpf.btf import Btf, VarInfo
from aios_lab.bpf.maps import Map
from aios_lab.errors import BpfAttachError, BpfError, BpfLoadError, LayoutError

_OPENED, _LOADED, _CLOSED = "opened", "loaded", "closed"
MAP_TYPE_STRUCT_OPS = 26  # enum bpf_map_type


# Lines of the verifier's trace (instructions, source, precision tracking);
# the complaint is the first other line after the last of them.
_TRACE = re.compile(r"^\d+: \(|^; |^mark_precise|^last_idx|^regs=|^parent |^from \d+ to \d+")
_STATS = ("processed ", "verification time", "stack depth")


def verifier_complaint(lines: list[str]) -> str:
    """The verifier's own message in one program's log: the first line
    after its last trace line that is neither blank nor a statistic.
    Blank lines do not end the search: 7.x kernels print an explanation
    block, set off by a blank line, between the complaint and the stats."""
    last = max((i for i, ln in enumerate(lines) if _TRACE.match(ln)), default=-1)
    return next((ln.strip() for ln in lines[last + 1:] if ln.strip() and not ln.startswith(_STATS)), "")


def verifier_reason(log: list[str]) -> str:
    """The verifier's own complaint from a libbpf load log, e.g.
    "prog 'x': invalid access to map value, value_size=8 off=128 size=8"."""
    prog, block, reason = "", [], ""
    for line in log:
        m = re.search(r"prog '([^']+)': -- BEGIN PROG LOAD LOG --", line)
        if m:
            prog, block = m.group(1), []
        elif line.startswith("-- END PROG LOAD LOG --"):
            msg = verifier_complaint(block)
            if msg:
                reason = f"prog '{prog}': {msg}"
        else:
            block.append(line)
    return reason


class Link:
    """An attachment (tracing program or struct_ops map); destroying it detaches."""

    def __init__(self, ptr: int, what: str) -> None:
        self._ptr: int | None = ptr
        self.what = what

    def __repr__(self) -> str:
        return f"Link({self.what!r}, fd={self.fd if self._ptr else 'closed'})"

    @property
    def fd(self) -> int:
        if not self._ptr:
            raise BpfAttachError(f"link {self.what} is destroyed")
        return int(libbpf.func("bpf_link__fd")(self._ptr))

    @property
    def alive(self) -> bool:
        return bool(self._ptr)

    def pin(self, path: str | os.PathLike) -> None:
        """Pin in bpffs: the attachment then survives this process."""
        if not self._ptr:
            raise BpfAttachError(f"link {self.what} is destroyed")
        libbpf.call_int(BpfAttachError, f"cannot pin link {self.what} at {path}",
                        "bpf_link__pin", self._ptr, os.fsencode(path))

    def unpin(self) -> None:
        if self._ptr:
            libbpf.call_int(BpfAttachError, f"cannot unpin link {self.what}",
                            "bpf_link__unpin", self._ptr)

    def destroy(self) -> None:
        """Detach (unless pinned) and free; idempotent."""
        ptr, self._ptr = self._ptr, None
        if ptr:
            libbpf.call_int(BpfAttachError, f"cannot destroy link {self.what}",
                            "bpf_link__destroy", ptr)

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


# Offsets in struct bpf_prog_info (uapi/linux/bpf.h). The uapi struct only
# ever grows at the end, so these are fixed by the ABI; its bitfield
# (gpl_compatible) keeps it out of our BTF->ctypes mirror.
# tests/test_layouts.py checks them against the system's linux/bpf.h.
PROG_INFO_SIZE = 232
PROG_INFO_OFFSETS = {"id": (4, "<I"), "jited_prog_len": (16, "<I"), "xlated_prog_len": (20, "<I"),
                     "run_time_ns": (192, "<Q"), "run_cnt": (200, "<Q"), "verified_insns": (216, "<I")}


class BpfStats:
    """Turn on kernel.bpf_stats_enabled while in use (the kernel counts program
    run time only then; it costs two clock reads per program run) and put the
    previous value back."""

    PATH = Path("/proc/sys/kernel/bpf_stats_enabled")

    def __enter__(self) -> "BpfStats":
        self._old = self.PATH.read_text().strip()
        self.PATH.write_text("1")
        return self

    def __exit__(self, *exc: object) -> None:
        self.PATH.write_text(self._old)


class Program:
    """A program of an object (read-only view; attach through BpfObject.attach)."""

    def __init__(self, obj: "BpfObject", ptr: int) -> None:
        self._obj = obj
        self.ptr = ptr
        self.name = libbpf.func("bpf_program__name")(ptr).decode()
        self.section = (libbpf.func("bpf_program__section_name")(ptr) or b"").decode()

    def __repr__(self) -> str:
        return f"Program({self.name!r}, section={self.section!r})"

    @property
    def fd(self) -> int:
        return int(libbpf.func("bpf_program__fd")(self.ptr))

    @property
    def type(self) -> int:
        return int(libbpf.func("bpf_program__type")(self.ptr))

    def run_stats(self) -> dict[str, int]:
        """The kernel's counters for this loaded program: id, run_cnt, run_time_ns,
        and what the verifier and the JIT made of it (verified_insns, jited/xlated
        lengths in bytes).

        run_cnt/run_time_ns only grow while the sysctl kernel.bpf_stats_enabled
        is 1 (see BpfStats)."""
        buf = ctypes.create_string_buffer(PROG_INFO_SIZE)
        size = ctypes.c_uint(PROG_INFO_SIZE)
        libbpf.call_int(BpfError, f"cannot get info for program {self.name}", "bpf_obj_get_info_by_fd",
                        self.fd, buf, ctypes.byref(size))
        return {k: struct.unpack_from(fmt, buf.raw, off)[0] for k, (off, fmt) in PROG_INFO_OFFSETS.items()}


class BpfObject(Closeable):
    """One bpf_object: owns its programs, maps and the links we create from it."""

    def __init__(self, ptr: int, path: Path) -> None:
        self._ptr: int | None = ptr
        self.path = path
        self._state = _OPENED
        self._links: list[Link] = []
        self._btf: Btf | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "BpfObject":
        """Open (parse, not load) a BPF ELF object."""
        p = Path(path)
        ptr = libbpf.call_ptr(BpfLoadError, f"cannot open BPF object {p}", "bpf_object__open_file",
                              os.fsencode(p), None)
        return cls(ptr, p)

    def __repr__(self) -> str:
        return f"BpfObject({str(self.path)!r}, {self._state})"


    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise BpfError(f"BPF object {self.path} is closed")
        return self._ptr

    @property
    def loaded(self) -> bool:
        return self._state == _LOADED

    @property
    def name(self) -> str:
        return libbpf.func("bpf_object__name")(self.ptr).decode()

    # -- BTF and rodata ------------------------------------------------------------------

    @property
    def btf(self) -> Btf:
        """The object's own BTF (types of the C headers it was compiled with)."""
        if self._btf is None:
            ptr = libbpf.func("bpf_object__btf")(self.ptr)
            if not ptr:
                raise LayoutError(f"{self.path} has no BTF", hint="compile with clang -g")
            self._btf = Btf(ptr, owned=False, path=str(self.path))
        return self._btf

    def _rodata_map(self) -> int:
        # libbpf names internal maps "<obj name, 8 chars>.rodata"; the plain
        # `.rodata` section is the one holding `const volatile` globals.
        for m in self._iter_map_ptrs():
            if libbpf.func("bpf_map__is_internal")(m) and \
                    libbpf.func("bpf_map__name")(m).decode().endswith(".rodata"):
                return m
        raise LayoutError(f"{self.path} has no .rodata (no `const volatile` globals)")

    def rodata_vars(self) -> dict[str, VarInfo]:
        """`const volatile` globals: name -> offset/size in .rodata."""
        return self.btf.datasec(".rodata")

    def set_rodata(self, name: str, value: Any) -> None:
        """Set a `const volatile` global before load(): int, bool, or bytes/str for char arrays."""
        self.set_rodata_many({name: value})

    def set_rodata_many(self, values: dict[str, Any]) -> None:
        """Set several `const volatile` globals; all are validated before any is written."""
        self._check_rodata_writable()
        variables = self.rodata_vars()
        encoded: list[tuple[VarInfo, bytes]] = []
        for name, value in values.items():
            var = self._rodata_var(variables, name)
            encoded.append((var, self._encode(var, value)))
        self._write_rodata(encoded)

    def set_rodata_raw(self, name: str, raw: bytes) -> None:
        """Write exact bytes into a global (e.g. a struct); the size must match."""
        self._check_rodata_writable()
        var = self._rodata_var(self.rodata_vars(), name)
        if len(raw) != var.size:
            raise LayoutError(f"rodata {name} is {var.size} bytes, got {len(raw)}")
        self._write_rodata([(var, bytes(raw))])

    def get_rodata_raw(self, name: str) -> bytes:
        """The current bytes of a `const volatile` global (as set, or as compiled)."""
        var = self._rodata_var(self.rodata_vars(), name)
        size = ctypes.c_size_t()
        buf = libbpf.call_ptr(BpfLoadError, f"{self.path}: no initial value for .rodata",
                              "bpf_map__initial_value", self._rodata_map(), ctypes.byref(size))
        return ctypes.string_at(buf + var.offset, var.size)

    def _check_rodata_writable(self) -> None:
        if self._state != _OPENED:
            # After load the kernel has frozen .rodata (and libbpf re-mapped
            # it read-only): writing would be lost or crash the process.
            raise BpfLoadError(f"cannot set rodata of {self.path}: object is {self._state}; "
                               "set rodata between open() and load()")

    def _rodata_var(self, variables: dict[str, VarInfo], name: str) -> VarInfo:
        var = variables.get(name)
        if var is None:
            raise LayoutError(f"{self.path}: no `const volatile` global {name!r} in .rodata "
                              f"(have: {', '.join(sorted(variables)) or 'none'})")
        return var

    def _write_rodata(self, encoded: list[tuple[VarInfo, bytes]]) -> None:
        size = ctypes.c_size_t()
        buf = libbpf.call_ptr(BpfLoadError, f"{self.path}: no initial value for .rodata",
                              "bpf_map__initial_value", self._rodata_map(), ctypes.byref(size))
        for var, raw in encoded:
            if var.offset + len(raw) > size.value:
                raise LayoutError(f"rodata {var.name} at {var.offset}+{len(raw)} is outside "
                                  f".rodata ({size.value} bytes)")
        for var, raw in encoded:
            ctypes.memmove(buf + var.offset, raw, len(raw))

    def _encode(self, var: VarInfo, value: Any) -> bytes:
        """Bytes for `value` as the variable's BTF type, with type/range checks."""
        desc = self.btf.describe(var.type_id)
        if desc.split("[")[0] in ("char", "u8", "s8") and desc.endswith("]"):
            raw = value.encode() if isinstance(value, str) else value
            if not isinstance(raw, (bytes, bytearray)):
                raise LayoutError(f"rodata {var.name} is {desc}: give bytes or str, "
                                  f"not {type(value).__name__}")
            if len(raw) > var.size:
                raise LayoutError(f"rodata {var.name} holds {var.size} bytes, got {len(raw)}")
            return bytes(raw).ljust(var.size, b"\0")
        if desc == "bool":
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise LayoutError(f"rodata {var.name} is bool, got {value!r}")
            return bytes([int(value)])
        if desc[0] in "us" and desc[1:].isdigit():
            if not isinstance(value, int):  # bool is an int: True -> 1
                raise LayoutError(f"rodata {var.name} is {desc}, got {type(value).__name__}")
            bits = int(desc[1:])
            signed = desc[0] == "s"
            lo, hi = (-(1 << bits - 1), (1 << bits - 1) - 1) if signed else (0, (1 << bits) - 1)
            if not lo <= value <= hi:
                raise LayoutError(f"rodata {var.name} is {desc}: {value} is out of range [{lo}, {hi}]")
            return int(value).to_bytes(var.size, "little", signed=signed)
        if desc in ("f32", "f64") and isinstance(value, (int, float)):
            return struct.pack("<f" if desc == "f32" else "<d", float(value))
        raise LayoutError(f"rodata {var.name} has type {desc}, which set_rodata does not handle; "
                          "use set_rodata_raw")

    # -- map sizes -------------------------------------------------------------------------

    def set_max_entries(self, name: str, n: int) -> None:
        """Size a map before load() (a ring buffer: bytes, a power-of-two
        number of pages; other maps: entries)."""
        if self._state != _OPENED:
            raise BpfLoadError(f"cannot size map {name} of {self.path}: object is {self._state}; "
                               "size maps between open() and load()")
        ptr = libbpf.func("bpf_object__find_map_by_name")(self.ptr, name.encode())
        if not ptr:
            raise BpfError(f"{self.path}: no map {name!r} (have: {', '.join(self.map_names())})")
        libbpf.call_int(BpfError, f"cannot size map {name} to {n} entries",
                        "bpf_map__set_max_entries", ptr, n)

    # -- load ------------------------------------------------------------------------------

    def load(self) -> None:
        """Load into the kernel; BpfLoadError carries the verifier log on .log."""
        if self._state != _OPENED:
            raise BpfLoadError(f"{self.path} is {self._state}, cannot load")
        try:
            libbpf.call_int(BpfLoadError, f"cannot load BPF object {self.path}",
                            "bpf_object__load", self.ptr, hint="see .log for the verifier output")
        except BpfLoadError as exc:
            reason = verifier_reason(exc.log)
            if reason:
                raise BpfLoadError(f"{exc}: {reason}", exc.errno, exc.log, exc.hint) from None
            raise
        self._state = _LOADED

    def load_maps_only(self) -> None:
        """Create the object's maps without loading any program or struct_ops map.

        For inspecting and exercising a policy's maps (model slots, layouts)
        on a kernel that cannot run the policy itself, e.g. a host without
        sched_ext: the kfuncs it calls are __weak and resolve to nothing."""
        if self._state != _OPENED:
            raise BpfLoadError(f"{self.path} is {self._state}, cannot load")
        for prog in self.programs():
            libbpf.func("bpf_program__set_autoload")(prog.ptr, False)
        for m in self._iter_map_ptrs():
            if libbpf.func("bpf_map__type")(m) == MAP_TYPE_STRUCT_OPS:
                libbpf.func("bpf_map__set_autocreate")(m, False)
        self.load()

    # -- programs and maps -------------------------------------------------------------------

    def program(self, name: str) -> Program:
        ptr = libbpf.func("bpf_object__find_program_by_name")(self.ptr, name.encode())
        if not ptr:
            have = ", ".join(p.name for p in self.programs())
            raise BpfError(f"{self.path}: no program {name!r} (have: {have})")
        return Program(self, ptr)

    def programs(self) -> list[Program]:
        out, fn, cur = [], libbpf.func("bpf_object__next_program"), None
        while True:
            cur = fn(self.ptr, cur)
            if not cur:
                return out
            out.append(Program(self, cur))

    def _iter_map_ptrs(self) -> Iterator[int]:
        fn, cur = libbpf.func("bpf_object__next_map"), None
        while True:
            cur = fn(self.ptr, cur)
            if not cur:
                return
            yield cur

    def map_names(self) -> list[str]:
        return [libbpf.func("bpf_map__name")(m).decode() for m in self._iter_map_ptrs()]

    def map(self, name: str) -> Map:
        """A loaded map by name (internal maps too, e.g. "<obj>.bss")."""
        if self._state != _LOADED:
            raise BpfError(f"map {name!r}: {self.path} is not loaded yet")
        ptr = libbpf.func("bpf_object__find_map_by_name")(self.ptr, name.encode())
        if not ptr:
            raise BpfError(f"{self.path}: no map {name!r} (have: {', '.join(self.map_names())})")
        f = libbpf.func
        return Map(int(f("bpf_map__fd")(ptr)), f("bpf_map__name")(ptr).decode(),
                   int(f("bpf_map__type")(ptr)), int(f("bpf_map__key_size")(ptr)),
                   int(f("bpf_map__value_size")(ptr)), int(f("bpf_map__max_entries")(ptr)),
                   owner=self)

    # -- attach ------------------------------------------------------------------------------

    def attach(self, name: str) -> Link:
        """Attach a program by its section's default (tp_btf, fentry, ...)."""
        prog = self._require_loaded_program(name)
        ptr = libbpf.call_ptr(BpfAttachError, f"cannot attach program {name}",
                              "bpf_program__attach", prog.ptr)
        link = Link(ptr, name)
        self._links.append(link)
        return link

    def attach_struct_ops(self, map_name: str) -> Link:
        """Register a struct_ops map (e.g. a sched_ext scheduler) as a link."""
        libbpf.require_struct_ops_link()
        if self._state != _LOADED:
            raise BpfAttachError(f"{self.path} is not loaded; call load() first")
        ptr = libbpf.func("bpf_object__find_map_by_name")(self.ptr, map_name.encode())
        if not ptr:
            raise BpfAttachError(f"{self.path}: no struct_ops map {map_name!r}")
        link_ptr = libbpf.call_ptr(
            BpfAttachError, f"cannot attach struct_ops {map_name}", "bpf_map__attach_struct_ops",
            ptr, hint="the map must be in SEC(\".struct_ops.link\"); for sched_ext, another "
                      "scheduler may already be attached")
        link = Link(link_ptr, map_name)
        self._links.append(link)
        return link

    def _require_loaded_program(self, name: str) -> Program:
        if self._state != _LOADED:
            raise BpfAttachError(f"{self.path} is not loaded; call load() first")
        return self.program(name)

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Destroy our links, then the object; idempotent."""
        links, self._links = self._links, []
        errors: list[BpfError] = []
        for link in reversed(links):
            try:
                link.destroy()
            except BpfError as exc:
                errors.append(exc)
        if self._btf is not None:
            self._btf.close()  # not owned: only invalidates the view
            self._btf = None
        if self._ptr:
            ptr, self._ptr = self._ptr, None
            libbpf.func("bpf_object__close")(ptr)
        self._state = _CLOSED
        if errors:
            raise errors[0]
