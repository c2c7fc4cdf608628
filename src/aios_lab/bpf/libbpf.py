"""Load libbpf with ctypes, declare its prototypes, and capture its log.

Every wrapper in this package goes through :func:`lib` (the loaded, fully
prototyped library) and the ``check_*`` helpers here, so that any failing
libbpf call raises a :class:`~aios_lab.errors.BpfError` subclass carrying the
errno and the libbpf log lines printed during that very call.

libbpf 1.x error convention (the only one we support): functions returning a
pointer return NULL and set errno; functions returning int return -errno.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import os
import re
import threading
from pathlib import Path
from typing import Callable, Iterator

from aios_lab import paths
from aios_lab.errors import BpfError, KernelFeatureMissing, SetupError

# struct_ops maps in `.struct_ops.link` sections (how sched_ext schedulers
# are attached as links) appeared in libbpf 1.2.
STRUCT_OPS_LINK_MIN = (1, 2)
LIBBPF_FETCH_HINT = "run `aios-lab build` to fetch libbpf 1.4.6"

SYSTEM_LIBBPF_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libbpf.so.1",
    "/usr/lib64/libbpf.so.1",
    "/usr/lib/libbpf.so.1",
)

# enum libbpf_print_level
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

c_void_p = ctypes.c_void_p
c_char_p = ctypes.c_char_p
c_int = ctypes.c_int
c_uint = ctypes.c_uint32
c_size_t = ctypes.c_size_t

PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
RING_BUFFER_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


class BpfMapBatchOpts(ctypes.Structure):
    """struct bpf_map_batch_opts (libbpf bpf.h)."""

    _fields_ = [("sz", c_size_t), ("elem_flags", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


# name: (restype, argtypes). Optional entries may be missing in old libbpf;
# calling them then raises a clear BpfError instead of AttributeError.
_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "libbpf_major_version": (c_uint, []),
    "libbpf_minor_version": (c_uint, []),
    "libbpf_version_string": (c_char_p, []),
    "libbpf_set_print": (c_void_p, [PRINT_FN]),
    "libbpf_get_error": (ctypes.c_long, [c_void_p]),
    "libbpf_strerror": (c_int, [c_int, c_char_p, c_size_t]),
    "libbpf_num_possible_cpus": (c_int, []),
    # objects
    "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__name": (c_char_p, [c_void_p]),
    "bpf_object__btf": (c_void_p, [c_void_p]),
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
    # programs
    "bpf_program__name": (c_char_p, [c_void_p]),
    "bpf_program__section_name": (c_char_p, [c_void_p]),
    "bpf_program__autoload": (ctypes.c_bool, [c_void_p]),
    "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
    "bpf_program__set_log_level": (c_int, [c_void_p, c_uint]),
    "bpf_program__set_log_buf": (c_int, [c_void_p, c_void_p, c_size_t]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_program__type": (c_int, [c_void_p]),
    "bpf_program__attach": (c_void_p, [c_void_p]),
    # links
    "bpf_link__fd": (c_int, [c_void_p]),
    "bpf_link__pin": (c_int, [c_void_p, c_char_p]),
    "bpf_link__unpin": (c_int, [c_void_p]),
    "bpf_link__destroy": (c_int, [c_void_p]),
    # maps (object side)
    "bpf_map__name": (c_char_p, [c_void_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__type": (c_int, [c_void_p]),
    "bpf_map__key_size": (c_uint, [c_void_p]),
    "bpf_map__value_size": (c_uint, [c_void_p]),
    "bpf_map__max_entries": (c_uint, [c_void_p]),
    "bpf_map__is_internal": (ctypes.c_bool, [c_void_p]),
    "bpf_map__set_autocreate": (c_int, [c_void_p, ctypes.c_bool]),
    "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint]),
    "bpf_map__initial_value": (c_void_p, [c_void_p, ctypes.POINTER(c_size_t)]),
    "bpf_map__attach_struct_ops": (c_void_p, [c_void_p]),
    # maps (fd side, thin syscall wrappers)
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_lookup_batch": (c_int, [c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                                     ctypes.POINTER(c_uint), ctypes.POINTER(BpfMapBatchOpts)]),
    "bpf_map_update_batch": (c_int, [c_int, c_void_p, c_void_p, ctypes.POINTER(c_uint),
                                     ctypes.POINTER(BpfMapBatchOpts)]),
    "bpf_map_delete_batch": (c_int, [c_int, c_void_p, ctypes.POINTER(c_uint), ctypes.POINTER(BpfMapBatchOpts)]),
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_map_get_fd_by_id": (c_int, [c_uint]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, ctypes.POINTER(c_uint)]),
    # ring buffer
    "ring_buffer__new": (c_void_p, [c_int, RING_BUFFER_SAMPLE_FN, c_void_p, c_void_p]),
    "ring_buffer__poll": (c_int, [c_void_p, c_int]),
    "ring_buffer__consume": (c_int, [c_void_p]),
    "ring_buffer__epoll_fd": (c_int, [c_void_p]),
    "ring_buffer__free": (None, [c_void_p]),
    # btf
    "btf__parse": (c_void_p, [c_char_p, c_void_p]),
    "btf__free": (None, [c_void_p]),
    "btf__find_by_name_kind": (ctypes.c_int32, [c_void_p, c_char_p, c_uint]),
    "btf__type_cnt": (c_uint, [c_void_p]),
    "btf__type_by_id": (c_void_p, [c_void_p, c_uint]),
    "btf__name_by_offset": (c_char_p, [c_void_p, c_uint]),
    "btf__resolve_size": (ctypes.c_int64, [c_void_p, c_uint]),
}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
# Symbols every libbpf since 0.x has: a library without them is not libbpf.
_REQUIRED = ("libbpf_set_print", "libbpf_major_version", "libbpf_minor_version", "bpf_object__open_file")
_lib_path: Path | None = None
_libc = ctypes.CDLL(None, use_errno=True)
_tls = threading.local()
# The last lines libbpf printed, from any thread, for post-mortem reports.
_recent: collections.deque[str] = collections.deque(maxlen=500)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", name))


def find_libbpf() -> Path:
    """Where libbpf is: $AIOS_LAB_LIBBPF, else the newest cached copy, else the system one."""
    env = os.environ.get("AIOS_LAB_LIBBPF")
    if env:
        p = Path(env)
        if not p.is_file():
            what = "is a directory, not the libbpf.so file" if p.is_dir() else "does not exist"
            raise SetupError(f"AIOS_LAB_LIBBPF={env} {what}", hint=LIBBPF_FETCH_HINT)
        return p
    root = paths.cache_dir() / "libbpf"
    if root.is_dir():
        versions = sorted((d for d in root.iterdir() if d.is_dir()),
                          key=lambda d: _version_key(d.name), reverse=True)
        for d in versions:
            cand = d / "usr/lib/x86_64-linux-gnu/libbpf.so.1"
            if cand.is_file():
                return cand
    for cand in SYSTEM_LIBBPF_CANDIDATES:
        if os.path.isfile(cand):
            return Path(cand)
    found = ctypes.util.find_library("bpf")
    if found:
        return Path(found)
    raise BpfError("libbpf not found (neither AIOS_LAB_LIBBPF, the cache, nor the system)",
                   hint=LIBBPF_FETCH_HINT)


# -- log capture ---------------------------------------------------------------

def _format(fmt: bytes, va_list: int) -> str:
    """Render printf-style (fmt, va_list) with libc; a va_list can be consumed once."""
    # vasprintf sizes its own buffer, so a multi-megabyte verifier log (one
    # single libbpf print call) is never truncated; vsnprintf with a big
    # buffer is the fallback for libcs without it.
    if _vasprintf is not None:
        out = ctypes.c_void_p()
        n = _vasprintf(ctypes.byref(out), fmt, va_list)
        if n < 0 or not out.value:
            return fmt.decode(errors="replace")
        try:
            return ctypes.string_at(out.value, n).decode(errors="replace")
        finally:
            _libc.free(out.value)
    buf = ctypes.create_string_buffer(1 << 20)
    n = _libc.vsnprintf(buf, len(buf), fmt, va_list)
    text = buf.value.decode(errors="replace")
    if n >= len(buf):
        text += "\n[aios-lab: libbpf message truncated]"
    return text


def _print_cb(level: int, fmt: bytes | None, va_list: int) -> int:
    # Runs inside libbpf, in the calling thread, with the GIL held by ctypes.
    # Never let an exception escape: ctypes would only print and ignore it.
    try:
        if level == LIBBPF_DEBUG and not os.environ.get("AIOS_LAB_LIBBPF_DEBUG"):
            return 0
        text = _format(fmt or b"", va_list)
        # libbpf prefixes its own messages with "libbpf: "; BpfError.one_line
        # adds that label itself, so drop it (verifier lines never have it).
        lines = [ln[8:] if ln.startswith("libbpf: ") else ln for ln in text.splitlines()]
        _recent.extend(lines)
        for sink in getattr(_tls, "stack", ()):
            sink.extend(lines)
    except Exception:  # pragma: no cover - defensive
        pass
    return 0


_vasprintf = getattr(_libc, "vasprintf", None)
if _vasprintf is not None:
    _vasprintf.restype = c_int
    _vasprintf.argtypes = [ctypes.POINTER(c_void_p), c_char_p, c_void_p]
_libc.vsnprintf.restype = c_int
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_libc.free.restype = None
_libc.free.argtypes = [c_void_p]
# Module-level so the trampoline outlives every libbpf call that may use it.
_PRINT_CALLBACK = PRINT_FN(_print_cb)


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Collect the libbpf log lines printed by this thread inside the block."""
    lines: list[str] = []
    stack = getattr(_tls, "stack", None)
    if stack is None:
        stack = _tls.stack = []
    stack.append(lines)
    try:
        yield lines
    finally:
        stack.remove(lines)


def recent_log() -> list[str]:
    """The last few hundred libbpf lines from any thread (for bug reports)."""
    return list(_recent)


# -- loading -------------------------------------------------------------------

def lib() -> ctypes.CDLL:
    """The loaded libbpf with prototypes declared and our print callback installed."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        path = find_libbpf()
        try:
            # RTLD_LOCAL + full path: we must not pick up the system 1.1 for
            # symbols if another copy is already in the process.
            handle = ctypes.CDLL(str(path), use_errno=True)
        except OSError as exc:
            raise SetupError(f"cannot load libbpf from {path}: {exc}", hint=LIBBPF_FETCH_HINT) from None
        missing = [s for s in _REQUIRED if getattr(handle, s, None) is None]
        if missing:  # AIOS_LAB_LIBBPF naming another library
            raise SetupError(f"{path} is not libbpf (it has no {missing[0]}())", hint=LIBBPF_FETCH_HINT)
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(handle, name, None)
            if fn is None:
                continue  # reported by func() when actually used
            fn.restype = restype
            fn.argtypes = argtypes
        handle.libbpf_set_print(_PRINT_CALLBACK)
        _lib_path = path
        _lib = handle
        return handle


def lib_path() -> Path:
    """Path of the libbpf that :func:`lib` loaded."""
    lib()
    assert _lib_path is not None
    return _lib_path


def func(name: str) -> Callable:
    """A prototyped libbpf function, or a BpfError if this libbpf lacks it."""
    fn = getattr(lib(), name, None)
    if fn is None or name not in _PROTOTYPES:
        raise BpfError(f"libbpf at {lib_path()} has no {name}() (version "
                       f"{'.'.join(map(str, libbpf_version()))})", hint=LIBBPF_FETCH_HINT)
    return fn


def libbpf_version() -> tuple[int, int]:
    """(major, minor) of the loaded libbpf."""
    h = lib()
    return int(h.libbpf_major_version()), int(h.libbpf_minor_version())


def require_struct_ops_link() -> None:
    """Raise unless libbpf can attach `.struct_ops.link` maps (>= 1.2)."""
    ver = libbpf_version()
    if ver < STRUCT_OPS_LINK_MIN:
        raise LibbpfTooOld(
            f"libbpf {ver[0]}.{ver[1]} at {lib_path()} cannot attach .struct_ops.link "
            f"maps (needs >= {STRUCT_OPS_LINK_MIN[0]}.{STRUCT_OPS_LINK_MIN[1]})",
            hint=LIBBPF_FETCH_HINT)


class LibbpfTooOld(BpfError, KernelFeatureMissing):
    """The loaded libbpf is too old for a feature we need."""

    def __init__(self, message: str, hint: str = "") -> None:
        BpfError.__init__(self, message, 0, None, hint)


def num_possible_cpus() -> int:
    """libbpf_num_possible_cpus(): the per-CPU map value count."""
    n = int(lib().libbpf_num_possible_cpus())
    if n < 0:
        raise BpfError("cannot read the number of possible CPUs", -n)
    return n


# -- error checking --------------------------------------------------------------

def call_ptr(exc: type[BpfError], what: str, name: str, *args, hint: str = "") -> int:
    """Call a pointer-returning libbpf function; NULL -> raise exc with errno and log."""
    fn = func(name)
    with capture() as log:
        ctypes.set_errno(0)
        ptr = fn(*args)
        err = ctypes.get_errno()
    if not ptr:
        # libbpf 1.x sets errno; libbpf_get_error(NULL) re-reads it as -errno
        # for callers that compiled against legacy semantics.
        if not err:
            err = -int(lib().libbpf_get_error(None)) or 0
        raise exc(_describe(what, err), err, log, hint)
    return int(ptr)


def call_int(exc: type[BpfError], what: str, name: str, *args, hint: str = "") -> int:
    """Call an int-returning libbpf function; negative -> raise exc with -ret as errno."""
    fn = func(name)
    with capture() as log:
        ctypes.set_errno(0)
        ret = fn(*args)
        err = ctypes.get_errno()
    if ret < 0:
        # libbpf 1.x: every int-returning call (syscall wrappers included)
        # returns -errno; errno is also set but may be clobbered by cleanup.
        raise exc(_describe(what, -ret or err), -ret or err, log, hint)
    return int(ret)


LIBBPF_ERRNO_START = 4000


def _describe(what: str, err: int) -> str:
    # libbpf's own codes (LIBBPF_ERRNO__FORMAT = 4001, ...) are unknown to
    # os.strerror, so name them in the message itself.
    if err >= LIBBPF_ERRNO_START:
        return f"{what} ({strerror(err)})"
    return what


def strerror(err: int) -> str:
    """libbpf's text for an errno, including its own LIBBPF_ERRNO__* codes."""
    buf = ctypes.create_string_buffer(256)
    lib().libbpf_strerror(err, buf, len(buf))
    return buf.value.decode(errors="replace")
