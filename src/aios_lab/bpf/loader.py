"""The one way an object goes live: open -> set rodata and map sizes -> load
-> attach, closed again on any error (the lifecycle of libbpf-bootstrap's
loaders, with Python's exceptions in place of its `goto cleanup`).

    spec = LoadSpec(path, rodata={"slice_ns": 3_000_000}, struct_ops="my_ops")
    with load(spec) as live:
        live.obj.map("stats") ...

The policy deployment, the scheduler counters and the telemetry collector
all go through load(); what differs between them is data (LoadSpec) and two
hooks: `configure` (after open, before load: rodata computed from the object
itself, e.g. the size of a topology array) and `before_attach` (after load:
read the object's BTF and maps, push a model) so that nothing runs before
it is ready.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from aios_lab.bpf.object import BpfObject, Link
from aios_lab.errors import BpfError, BuildError

Hook = Callable[[BpfObject], None]


@dataclass(frozen=True)
class LoadSpec:
    """What to do with one compiled object between open and attach."""

    path: Path
    rodata: Mapping[str, Any] = field(default_factory=dict)        # `const volatile` globals
    max_entries: Mapping[str, int] = field(default_factory=dict)   # map name -> size
    programs: tuple[str, ...] = ()        # tracing programs, attached by their section
    struct_ops: str | None = None         # a struct_ops map registered as a link (sched_ext)


class LiveObject:
    """An object that load() took through its lifecycle; close() detaches
    every link and frees the object (idempotent).

    Not a Closeable of its own: the BpfObject already closes itself when it
    is collected, and a caller that keeps only `obj` (and its links) must
    not see them detached when this wrapper goes out of scope."""

    def __init__(self, obj: BpfObject, links: dict[str, Link], load_s: float, attach_s: float) -> None:
        self.obj = obj
        self.links = links
        self.load_s = load_s        # open -> loaded, seconds
        self.attach_s = attach_s    # the attach calls, seconds

    def __repr__(self) -> str:
        return f"LiveObject({self.obj!r}, links={sorted(self.links)})"

    def close(self) -> None:
        self.obj.close()

    def __enter__(self) -> "LiveObject":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(spec: LoadSpec, *, configure: Hook | None = None,
         before_attach: Hook | None = None) -> LiveObject:
    """Open, configure, load and attach `spec.path`; any error on the way
    (a hook's included) closes the object and re-raises: nothing is left
    loaded or attached."""
    path = Path(spec.path)
    if not path.exists():
        raise BuildError(f"{path} is not built", hint="run `aios-lab build`")
    t0 = time.monotonic()
    obj = BpfObject.open(path)
    try:
        if spec.rodata:
            obj.set_rodata_many(dict(spec.rodata))
        for name, n in spec.max_entries.items():
            obj.set_max_entries(name, n)
        if configure is not None:
            configure(obj)
        obj.load()
        load_s = time.monotonic() - t0
        if before_attach is not None:
            before_attach(obj)
        t1 = time.monotonic()
        links = {name: obj.attach(name) for name in spec.programs}
        if spec.struct_ops is not None:
            links[spec.struct_ops] = obj.attach_struct_ops(spec.struct_ops)
        attach_s = time.monotonic() - t1
    except BaseException:
        try:
            obj.close()
        except BpfError:
            pass    # the error that stopped the lifecycle is the one to report
        raise
    return LiveObject(obj, links, load_s, attach_s)
