"""aios_lab.bpf.loader against the real host kernel: one lifecycle (open,
configure, load, attach) that closes the object on any error.

Every test loads real BPF into the running kernel (root, BTF, tp_btf needed);
nothing is mocked. The probe is tests/data/bpf/host_probe.bpf.c (tests/bpf/conftest.py).
"""
from __future__ import annotations

import ctypes
import gc
import time

import pytest

from aios_lab.bpf import BpfObject, RingBuffer
from aios_lab.bpf.loader import LoadSpec, load
from aios_lab.errors import BpfError, BpfLoadError, BuildError, LayoutError

from tests.helpers.bpf_host import HOST_KERNEL, drain, make_switches, prog_exists

pytestmark = HOST_KERNEL


def test_load_opens_configures_loads_attaches_and_close_detaches(objdir):
    spec = LoadSpec(objdir / "host_probe.bpf.o", rodata={"switch_every": 1, "exec_events": False, "magic": 77},
                    max_entries={"events": 16384}, programs=("on_switch",))
    steps: list[tuple[str, bool]] = []
    with load(spec, configure=lambda o: steps.append(("configure", o.loaded)),
              before_attach=lambda o: steps.append(("before_attach", o.loaded))) as live:
        assert steps == [("configure", False), ("before_attach", True)]
        assert live.obj.map("events").max_entries == 16384
        link = live.links["on_switch"]
        assert set(live.links) == {"on_switch"} and link.alive
        ev_t = live.obj.btf.ctypes_type("hp_event")
        got: list[bytes] = []
        with RingBuffer(live.obj.map("events"), got.append) as rb:
            make_switches(20)
            drain(rb, lambda: got)
        assert got and ev_t.from_buffer_copy(got[0][:ctypes.sizeof(ev_t)]).magic == 77   # rodata took
    assert not link.alive and "closed" in repr(live.obj)


@pytest.mark.parametrize("stage", ["rodata", "max_entries", "configure", "load", "before_attach", "attach"])
def test_load_closes_the_object_on_any_error(objdir, stage):
    opened: list[BpfObject] = []
    prog_ids: list[int] = []

    def hook(name):
        def run(obj):
            opened.append(obj)
            if obj.loaded:
                prog_ids.extend(p.run_stats()["id"] for p in obj.programs())
            if stage == name:
                raise RuntimeError(name)
        return run

    path = objdir / ("bad_verifier.bpf.o" if stage == "load" else "host_probe.bpf.o")
    spec = LoadSpec(path, rodata={"nope": 1} if stage == "rodata" else {},
                    max_entries={"nope": 8} if stage == "max_entries" else {},
                    # on_switch attaches, then the unknown program fails: on_switch must go too
                    programs=("on_switch", "nope") if stage == "attach" else ("on_switch",) * (stage != "load"))
    expected = {"rodata": LayoutError, "max_entries": BpfError, "load": BpfLoadError,
                "attach": BpfError}.get(stage, RuntimeError)
    with pytest.raises(expected):
        load(spec, configure=hook("configure"), before_attach=hook("before_attach"))
    if opened:
        assert "closed" in repr(opened[0])
    assert bool(prog_ids) == (stage in ("before_attach", "attach"))
    # Freed, so attached nowhere: the kernel drops a program's id when its
    # last reference (fd or link) goes; a link is released from a work item.
    deadline = time.monotonic() + 5
    while any(prog_exists(i) for i in prog_ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(prog_exists(i) for i in prog_ids)


def test_the_object_stays_attached_while_referenced_without_its_wrapper(objdir):
    """Deployment keeps live.obj and the link, not the LiveObject: dropping
    the wrapper must not detach (a __del__ on it once did, in the VM)."""
    live = load(LoadSpec(objdir / "host_probe.bpf.o", programs=("on_switch",)))
    obj, link = live.obj, live.links["on_switch"]
    del live
    gc.collect()
    assert link.alive and obj.loaded
    obj.close()
    assert not link.alive


def test_load_refuses_a_missing_object(tmp_path):
    with pytest.raises(BuildError, match="not built"):
        load(LoadSpec(tmp_path / "missing.bpf.o"))
