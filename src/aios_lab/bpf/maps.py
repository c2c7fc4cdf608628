"""BPF maps through their file descriptor.

Everything here uses libbpf's fd-level calls (bpf_map_lookup_elem & co.), so
a :class:`Map` works the same whether it came from a loaded object or from a
path pinned in bpffs. Sizes are checked in Python before any syscall, because
the kernel would otherwise read or write past our buffers.
"""
from __future__ import annotations

import ctypes
import os
import struct
from typing import Iterator, Sequence

from aios_lab.bpf import libbpf
from aios_lab.errors import BpfMapError

# enum bpf_map_type values we care about (uapi/linux/bpf.h)
MAP_TYPE_HASH, MAP_TYPE_ARRAY, MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY = 1, 2, 5, 6
MAP_TYPE_LRU_PERCPU_HASH, MAP_TYPE_RINGBUF, MAP_TYPE_STRUCT_OPS = 10, 27, 26
PERCPU_TYPES = frozenset({MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_LRU_PERCPU_HASH,
                          21})  # 21 = BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE

# update flags
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

_ENOENT = 2


class _MapInfo(ctypes.Structure):
    # Leading fields of struct bpf_map_info; the kernel accepts a longer,
    # zero-filled buffer, so the tail padding keeps us forward compatible.
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16), ("_rest", ctypes.c_uint8 * 216)]


def _buf(data: bytes) -> ctypes.Array:
    return ctypes.create_string_buffer(bytes(data), len(data) or 1)


class Map:
    """A BPF map: metadata plus lookup/update/delete/iterate/batch by fd."""

    def __init__(self, fd: int, name: str, type: int, key_size: int, value_size: int,
                 max_entries: int, owns_fd: bool = False, owner: object | None = None) -> None:
        self.fd = fd
        self.name = name
        self.type = type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self._owns_fd = owns_fd
        self._owner = owner  # keeps the BpfObject (and so the fd) alive

    def __repr__(self) -> str:
        return (f"Map({self.name!r}, type={self.type}, fd={self.fd}, key={self.key_size}, "
                f"value={self.value_size}, max_entries={self.max_entries})")

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_fd(cls, fd: int, owns_fd: bool = False) -> "Map":
        """Describe a map fd with BPF_OBJ_GET_INFO_BY_FD."""
        info = _MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        libbpf.call_int(BpfMapError, f"cannot get info for map fd {fd}", "bpf_obj_get_info_by_fd",
                        fd, ctypes.byref(info), ctypes.byref(size))
        return cls(fd, info.name.decode(errors="replace"), info.type, info.key_size,
                   info.value_size, info.max_entries, owns_fd=owns_fd)

    @classmethod
    def from_id(cls, map_id: int) -> "Map":
        """Open a live map by its kernel-wide id (fails once the kernel freed it)."""
        return cls._adopt(libbpf.call_int(BpfMapError, f"cannot open map id {map_id}",
                                          "bpf_map_get_fd_by_id", ctypes.c_uint32(map_id)))

    @classmethod
    def _adopt(cls, fd: int) -> "Map":
        """Wrap an fd we opened; close it if describing it fails."""
        try:
            return cls.from_fd(fd, owns_fd=True)
        except BaseException:
            os.close(fd)
            raise

    @property
    def id(self) -> int:
        """The kernel-wide map id (stable while the map lives; never reused soon)."""
        info = _MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        libbpf.call_int(BpfMapError, f"cannot get info for map {self.name}", "bpf_obj_get_info_by_fd",
                        self.fd, ctypes.byref(info), ctypes.byref(size))
        return int(info.id)

    @classmethod
    def from_pinned(cls, path: str | os.PathLike) -> "Map":
        """Open a map pinned in bpffs (the fd is closed by close())."""
        return cls._adopt(libbpf.call_int(BpfMapError, f"cannot open pinned map {path}", "bpf_obj_get",
                                          os.fsencode(path)))

    def close(self) -> None:
        """Close the fd if this Map opened it (pinned maps); idempotent."""
        if self._owns_fd and self.fd >= 0:
            os.close(self.fd)
        if self._owns_fd:
            self.fd = -1

    def __enter__(self) -> "Map":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sizes ----------------------------------------------------------------------

    @property
    def is_percpu(self) -> bool:
        return self.type in PERCPU_TYPES

    @property
    def percpu_stride(self) -> int:
        """Per-CPU value slot size: the kernel rounds each CPU's value to 8 bytes."""
        return (self.value_size + 7) & ~7

    @property
    def value_buf_size(self) -> int:
        """Bytes a lookup writes: one value, or one 8-aligned slot per possible CPU."""
        if self.is_percpu:
            return self.percpu_stride * libbpf.num_possible_cpus()
        return self.value_size

    def _check_key(self, key: bytes) -> bytes:
        key = bytes(key)
        if len(key) != self.key_size:
            raise BpfMapError(f"map {self.name}: key is {len(key)} bytes, expected {self.key_size}")
        return key

    def _pack_value(self, value: bytes | Sequence[bytes]) -> bytes:
        if self.is_percpu and not isinstance(value, (bytes, bytearray, memoryview)):
            values = list(value)
            ncpu = libbpf.num_possible_cpus()
            if len(values) != ncpu:
                raise BpfMapError(f"map {self.name}: per-CPU update needs {ncpu} values, "
                                  f"got {len(values)}")
            out = b""
            for v in values:
                v = bytes(v)
                if len(v) != self.value_size:
                    raise BpfMapError(f"map {self.name}: value is {len(v)} bytes, "
                                      f"expected {self.value_size}")
                out += v.ljust(self.percpu_stride, b"\0")
            return out
        value = bytes(value)
        if self.is_percpu:
            # One value for every CPU is the common case (reset a counter).
            if len(value) != self.value_size:
                raise BpfMapError(f"map {self.name}: value is {len(value)} bytes, "
                                  f"expected {self.value_size}")
            return value.ljust(self.percpu_stride, b"\0") * libbpf.num_possible_cpus()
        if len(value) != self.value_size:
            raise BpfMapError(f"map {self.name}: value is {len(value)} bytes, "
                              f"expected {self.value_size}")
        return value

    def _unpack_value(self, raw: bytes) -> bytes | list[bytes]:
        if not self.is_percpu:
            return raw
        s = self.percpu_stride
        return [raw[i:i + self.value_size] for i in range(0, len(raw), s)]

    # -- element ops ----------------------------------------------------------------

    def lookup(self, key: bytes) -> bytes | list[bytes] | None:
        """The value for `key` (a list of per-CPU values for per-CPU maps), or None."""
        kbuf = _buf(self._check_key(key))
        vbuf = ctypes.create_string_buffer(self.value_buf_size)
        fn = libbpf.func("bpf_map_lookup_elem")
        ret = fn(self.fd, kbuf, vbuf)
        if ret == -_ENOENT:
            return None
        if ret < 0:
            raise BpfMapError(f"lookup in map {self.name} failed", -ret)
        return self._unpack_value(vbuf.raw)

    def update(self, key: bytes, value: bytes | Sequence[bytes], flags: int = BPF_ANY) -> None:
        """Insert or replace; `value` may be a list of per-CPU values for per-CPU maps."""
        kbuf = _buf(self._check_key(key))
        vbuf = _buf(self._pack_value(value))
        libbpf.call_int(BpfMapError, f"update of map {self.name} failed", "bpf_map_update_elem",
                        self.fd, kbuf, vbuf, flags)

    def delete(self, key: bytes) -> bool:
        """Delete `key`; False if it was not there."""
        kbuf = _buf(self._check_key(key))
        ret = libbpf.func("bpf_map_delete_elem")(self.fd, kbuf)
        if ret == -_ENOENT:
            return False
        if ret < 0:
            raise BpfMapError(f"delete from map {self.name} failed", -ret)
        return True

    def keys(self) -> Iterator[bytes]:
        """Iterate keys with BPF_MAP_GET_NEXT_KEY (not atomic against concurrent updates)."""
        fn = libbpf.func("bpf_map_get_next_key")
        cur = None
        nxt = ctypes.create_string_buffer(max(self.key_size, 1))
        while True:
            ret = fn(self.fd, cur, nxt)
            if ret == -_ENOENT:
                return
            if ret < 0:
                raise BpfMapError(f"iterating map {self.name} failed", -ret)
            key = nxt.raw[:self.key_size]
            yield key
            cur = _buf(key)

    def items(self) -> Iterator[tuple[bytes, bytes | list[bytes]]]:
        """(key, value) pairs; keys deleted meanwhile are skipped."""
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def lookup_u32_key(self, i: int) -> bytes | list[bytes] | None:
        """lookup() with a native-endian u32 key (arrays, small hash tables)."""
        if self.key_size != 4:
            raise BpfMapError(f"map {self.name}: key is {self.key_size} bytes, not a u32")
        return self.lookup(struct.pack("=I", i))

    def sum_percpu_u64(self, key: bytes) -> int:
        """Sum a per-CPU u64 counter across CPUs (0 when absent)."""
        vals = self.lookup(key)
        if vals is None:
            return 0
        if not isinstance(vals, list) or self.value_size != 8:
            raise BpfMapError(f"map {self.name} does not hold per-CPU u64 values")
        return sum(struct.unpack("=Q", v)[0] for v in vals)

    # -- batch ops --------------------------------------------------------------------

    def lookup_batch(self, batch_size: int = 256) -> list[tuple[bytes, bytes | list[bytes]]]:
        """All entries via BPF_MAP_LOOKUP_BATCH, `batch_size` at a time."""
        fn = libbpf.func("bpf_map_lookup_batch")
        opts = libbpf.BpfMapBatchOpts(ctypes.sizeof(libbpf.BpfMapBatchOpts), 0, 0)
        vsz = self.value_buf_size
        keys = ctypes.create_string_buffer(self.key_size * batch_size)
        vals = ctypes.create_string_buffer(vsz * batch_size)
        # in/out batch tokens are opaque; for hash maps they are a u32 bucket
        # index, for arrays a key; size them to the larger of the two.
        tok_size = max(self.key_size, 8)
        in_tok = ctypes.create_string_buffer(tok_size)
        out_tok = ctypes.create_string_buffer(tok_size)
        first = True
        out: list[tuple[bytes, bytes | list[bytes]]] = []
        while True:
            count = ctypes.c_uint32(batch_size)
            ret = fn(self.fd, None if first else in_tok, out_tok, keys, vals,
                     ctypes.byref(count), ctypes.byref(opts))
            err = -ret if ret < 0 else 0
            if err and err != _ENOENT:
                raise BpfMapError(f"batch lookup in map {self.name} failed", err)
            kraw, vraw = keys.raw, vals.raw
            for i in range(count.value):
                out.append((kraw[i * self.key_size:(i + 1) * self.key_size],
                            self._unpack_value(vraw[i * vsz:(i + 1) * vsz])))
            if err == _ENOENT:  # ENOENT: no more entries after this batch
                return out
            ctypes.memmove(in_tok, out_tok, tok_size)
            first = False

    def update_batch(self, items: Sequence[tuple[bytes, bytes | Sequence[bytes]]],
                     flags: int = BPF_ANY) -> int:
        """Write many entries in one BPF_MAP_UPDATE_BATCH; returns how many."""
        if not items:
            return 0
        kraw = b"".join(self._check_key(k) for k, _ in items)
        vraw = b"".join(self._pack_value(v) for _, v in items)
        count = ctypes.c_uint32(len(items))
        opts = libbpf.BpfMapBatchOpts(ctypes.sizeof(libbpf.BpfMapBatchOpts), flags, 0)
        libbpf.call_int(BpfMapError, f"batch update of map {self.name} failed "
                        f"(after {len(items)} requested)", "bpf_map_update_batch",
                        self.fd, _buf(kraw), _buf(vraw), ctypes.byref(count), ctypes.byref(opts))
        return int(count.value)

    def delete_batch(self, keys: Sequence[bytes]) -> int:
        """Delete many keys, a BPF_MAP_DELETE_BATCH call per run of present
        keys (the kernel stops at a missing one: it is skipped); returns how
        many were deleted."""
        raw = b"".join(self._check_key(k) for k in keys)
        opts = libbpf.BpfMapBatchOpts(ctypes.sizeof(libbpf.BpfMapBatchOpts), 0, 0)
        fn = libbpf.func("bpf_map_delete_batch")
        done, i, n = 0, 0, len(keys)
        while i < n:
            count = ctypes.c_uint32(n - i)
            ret = fn(self.fd, _buf(raw[i * self.key_size:]), ctypes.byref(count), ctypes.byref(opts))
            done += count.value
            i += count.value
            if ret == -_ENOENT:
                i += 1          # that key was not there
            elif ret < 0:
                raise BpfMapError(f"batch delete in map {self.name} failed (after {done} of {n})", -ret)
        return done

    # -- pinning ----------------------------------------------------------------------

    def pin(self, path: str | os.PathLike) -> None:
        """Pin the map at `path` in bpffs (see fs.ensure_bpffs)."""
        libbpf.call_int(BpfMapError, f"cannot pin map {self.name} at {path}", "bpf_obj_pin",
                        self.fd, os.fsencode(path))

    @staticmethod
    def unpin(path: str | os.PathLike) -> None:
        """Remove a pin (the map lives on while other references exist)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BpfMapError(f"cannot unpin {path}", exc.errno or 0) from exc
