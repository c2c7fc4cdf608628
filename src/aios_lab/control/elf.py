"""The little of ELF the registry needs: that a blob is a BPF object, and its
sections with their sizes (what `policy diff` compares). Read from the
section header table directly; nothing is loaded."""
from __future__ import annotations

import struct

from ..errors import RegistryError

EM_BPF = 247
_ELF64_LE = b"\x7fELF\x02\x01"


def check_bpf_object(data: bytes, what: str = "object") -> None:
    """RegistryError unless `data` is a 64-bit little-endian ELF for BPF
    (what clang -target bpf writes on x86)."""
    if len(data) < 64 or data[:6] != _ELF64_LE:
        raise RegistryError(f"{what} is not a 64-bit little-endian ELF file",
                            hint="give the .bpf.o that `aios-lab build` compiled")
    machine = struct.unpack_from("<H", data, 18)[0]
    if machine != EM_BPF:
        raise RegistryError(f"{what} is an ELF for machine {machine}, not BPF ({EM_BPF})",
                            hint="give the .bpf.o that `aios-lab build` compiled")


def section_headers(data: bytes) -> list[tuple[str, int, int, int, int]]:
    """(name, type, offset, size, link) of every section header of an ELF64
    little-endian file; struct.error or IndexError when the table is damaged
    (the callers say in their own terms what was wrong)."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [struct.unpack_from("<IIQQQQII", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off, strtab_size = raw[shstrndx][4], raw[shstrndx][5]
    names = data[strtab_off:strtab_off + strtab_size]

    def name(off: int) -> str:
        return names[off:names.find(b"\0", off)].decode("utf-8", "replace")
    return [(name(r[0]), r[1], r[4], r[5], r[6]) for r in raw]


def sections(data: bytes) -> dict[str, int]:
    """{section name: size in bytes} of an ELF64 object (empty names and the
    null section left out)."""
    check_bpf_object(data)
    try:
        return {name: size for name, _t, _off, size, _l in section_headers(data)[1:] if name}
    except (struct.error, IndexError) as e:
        raise RegistryError(f"object's section table is damaged: {e}") from None
