"""The one guarded way to read a file the user names: bounded in size, never
blocking, and parsed with bounded depth and number sizes.

Users point aios-lab at files by hand (`--model`, `--cluster`, metadata.json
in a trace folder, manifests, workload files, state files), and it often runs
as root. So a read must not hang on a FIFO, must not read /dev/zero until
memory runs out, and a parser must not let a 5,000-digit integer
(ValueError) or 200,000 levels of nesting (RecursionError) escape as a
traceback. Every failure is raised as the caller's typed error class, with
the file named.
"""
from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, Callable

from .errors import AiosError, InputError
from .safe_output import mode_kind

MIB = 1 << 20
DEFAULT_LIMIT = 64 * MIB
MAX_DEPTH = 64


def read_bounded(path: Path | str, *, limit: int = DEFAULT_LIMIT, error: type[AiosError] = InputError,
                 what: str = "file") -> bytes:
    """The bytes of regular file `path`, at most `limit` of them. A FIFO, a
    device, a socket or a folder is refused before anything is read (opened
    non-blocking, so a FIFO without a writer cannot hang the open)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory, not a file") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is {mode_kind(st.st_mode) or 'not a regular file'}; give a regular file")
        if st.st_size > limit:
            raise error(f"{what} {path} is {st.st_size} bytes, more than the {limit} this reads",
                        hint="it is not a file of this kind, or it is damaged")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(MIB, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while we read it
                raise error(f"{what} {path} is more than the {limit} bytes this reads")
        return b"".join(chunks)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def check_depth(doc: Any, max_depth: int = MAX_DEPTH) -> bool:
    """True when `doc` (parsed JSON/TOML) nests no deeper than `max_depth`;
    iterative, so it cannot itself overflow the stack."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                return False
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return True


def parse_json(text: bytes | str, *, error: type[AiosError] = InputError, what: str = "file",
               max_depth: int = MAX_DEPTH, parse_constant: Callable[[str], Any] | None = None,
               fix: str = "") -> Any:
    """json.loads with every parser failure raised as `error` naming `what`.
    `parse_constant` decides NaN/Infinity (default: refused). `fix` is the
    hint that says what to do."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        doc = json.loads(text, parse_constant=parse_constant or _no_constant)
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8 text (corrupt)", hint=fix) from None
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                    "truncated or corrupt", hint=fix) from None
    except RecursionError:
        raise error(f"{what} nests deeper than {max_depth} levels; corrupt or hostile", hint=fix) from None
    except ValueError as e:  # an integer of thousands of digits, a refused NaN
        raise error(f"{what} holds a value out of range ({e})", hint=fix) from None
    if not check_depth(doc, max_depth):
        raise error(f"{what} nests deeper than {max_depth} levels; corrupt or hostile", hint=fix)
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def load_json(path: Path | str, *, error: type[AiosError] = InputError, what: str = "file",
              limit: int = DEFAULT_LIMIT, max_depth: int = MAX_DEPTH,
              parse_constant: Callable[[str], Any] | None = None, fix: str = "") -> Any:
    """read_bounded + parse_json; the messages start with `what` and the path."""
    label = f"{what} {path}"
    return parse_json(read_bounded(path, limit=limit, error=error, what=what), error=error, what=label,
                      max_depth=max_depth, parse_constant=parse_constant, fix=fix)


def load_toml(path: Path | str, *, error: type[AiosError] = InputError, what: str = "file",
              limit: int = MIB, max_depth: int = MAX_DEPTH) -> dict:
    """A TOML file through read_bounded, parsed with bounded depth; errors as `error`."""
    label = f"{what} {path}"
    raw = read_bounded(path, limit=limit, error=error, what=what)
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{label} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{label} is not valid TOML: {e}") from None
    except (RecursionError, ValueError) as e:
        raise error(f"{label} cannot be parsed ({type(e).__name__}: {e})") from None
    if not check_depth(doc, max_depth):
        raise error(f"{label} nests deeper than {max_depth} levels")
    return doc
