"""The two things the verifier needs from an ELF file, read with struct.

A BPF object's undefined symbols and their binding (a `__weak` kfunc is
optional: the object tests bpf_ksym_exists() before calling it; a strong one
must be in the kernel or libbpf refuses the load), and a section's bytes (the
kernel image's .BTF). Only ELF64 little-endian, which is all BPF and x86_64
produce.
"""
from __future__ import annotations

import struct

from ...errors import InputError
from ..elf import section_headers

ELF_MAGIC = b"\x7fELF"
SHT_SYMTAB = 2
SHN_UNDEF = 0
STB_GLOBAL, STB_WEAK = 1, 2


def _check(data: bytes, what: str) -> None:
    if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        raise InputError(f"{what} is not a 64-bit little-endian ELF file")


def section(data: bytes, name: str, what: str = "ELF file") -> bytes | None:
    """The bytes of section `name`, or None when there is none."""
    _check(data, what)
    for sname, _t, off, size, _l in section_headers(data):
        if sname == name:
            return data[off:off + size]
    return None


def undefined_symbols(data: bytes, what: str = "ELF file") -> dict[str, str]:
    """name -> "weak" | "strong" for every undefined (extern) symbol."""
    _check(data, what)
    secs = section_headers(data)
    out: dict[str, str] = {}
    for _n, stype, off, size, link in secs:
        if stype != SHT_SYMTAB:
            continue
        str_off = secs[link][2]
        for i in range(size // 24):
            st_name, st_info, _other, st_shndx, _value, _size = struct.unpack_from("<IBBHQQ", data, off + 24 * i)
            bind = st_info >> 4
            if st_shndx != SHN_UNDEF or not st_name or bind not in (STB_GLOBAL, STB_WEAK):
                continue
            start = str_off + st_name
            out[data[start:data.index(b"\0", start)].decode()] = "weak" if bind == STB_WEAK else "strong"
    return out
