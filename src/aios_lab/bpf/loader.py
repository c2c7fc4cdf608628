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


def prepare(spec: LoadSpec, *, configure: Hook | None = None,
            before_attach: Hook | None = None) -> LiveObject:
    """Open, configure and load `spec.path`, attaching nothing: the object
    is verified and its maps exist, ready to go live in one attach call
    (a standby scheduler: rollback to it costs an attach, not a load). Any
    error on the way closes the object and re-raises."""
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
    except BaseException:
        _close_quietly(obj)
        raise
    return LiveObject(obj, {}, load_s, 0.0)


def attach(live: LiveObject, spec: LoadSpec) -> LiveObject:
    """Attach what `spec` names to a prepared object; on error the links
    made so far are destroyed and the object stays loaded (the caller owns
    it). A struct_ops map can be attached again after its link was
    destroyed (libbpf skips the map update the kernel refuses as EBUSY)."""
    t1 = time.monotonic()
    made: dict[str, Link] = {}
    try:
        for name in spec.programs:
            made[name] = live.obj.attach(name)
        if spec.struct_ops is not None:
            made[spec.struct_ops] = live.obj.attach_struct_ops(spec.struct_ops)
    except BaseException:
        for link in made.values():
            try:
                link.destroy()
            except BpfError:
                pass
        raise
    live.links.update(made)
    live.attach_s = time.monotonic() - t1
    return live


def load(spec: LoadSpec, *, configure: Hook | None = None,
         before_attach: Hook | None = None) -> LiveObject:
    """Open, configure, load and attach `spec.path`; any error on the way
    (a hook's included) closes the object and re-raises: nothing is left
    loaded or attached."""
    live = prepare(spec, configure=configure, before_attach=before_attach)
    try:
        return attach(live, spec)
    except BaseException:
        _close_quietly(live.obj)
        raise


def _close_quietly(obj: BpfObject) -> None:
    try:
        obj.close()
    except BpfError:
        pass    # the error that stopped the lifecycle is the one to report
