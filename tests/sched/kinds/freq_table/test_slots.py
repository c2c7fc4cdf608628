"""Pushing a frequency table into the freq policy's slots.

Without root: the checks every table passes before a write, and the push
protocol (write the inactive slot, read back, flip, grace period) over
in-memory maps whose value layouts are the compiled object's BTF. With root
(`bpf` tier): the same on the policy's real maps, created on the host kernel
without its programs (the host has no sched_ext).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from aios_lab import build
from aios_lab.bpf import BpfObject, Btf
from aios_lab.sched import policy
from aios_lab.sched.kinds.freq_table import slots as freq_slots
from aios_lab.sched.kinds.freq_table.slots import (CPU_STRUCT, CTL_STRUCT, LIMIT_ENUM, TABLE_STRUCT, FreqSlots, TableLimits,
                                      check_table)
from aios_lab.dvfs.table import FreqTable
from aios_lab.errors import LayoutError, ModelError


def _graded(version: int = 1) -> FreqTable:
    u, r = np.meshgrid(np.arange(16), np.arange(4), indexing="ij")
    return FreqTable(64 * u + 16 * r + 1, version=version)


# -- check_table: no kernel, no BTF ------------------------------------------------------

def test_a_good_table_passes_as_int64():
    out = check_table(_graded())
    assert out.dtype == np.int64 and out[15, 3] == 64 * 15 + 48 + 1


@pytest.mark.parametrize("mutate,why", [
    (lambda t: setattr(t, "perf", np.ones((8, 4), dtype=np.int64)), "shape"),
    (lambda t: setattr(t, "perf", np.ones((16, 4, 1), dtype=np.int64)), "shape"),
    (lambda t: t.perf.__setitem__((0, 0), 0), "outside 1..1024"),
    (lambda t: t.perf.__setitem__((15, 3), 1025), "outside 1..1024"),
    (lambda t: setattr(t, "perf", np.full((16, 4), np.nan)), "NaN"),
    (lambda t: setattr(t, "perf", np.full((16, 4), np.inf)), "NaN or infinite"),
    (lambda t: setattr(t, "perf", np.full((16, 4), 1.5)), "non-integer"),
    (lambda t: setattr(t, "perf", np.full((16, 4), True)), "not integers"),
    (lambda t: setattr(t, "perf", np.full((16, 4), "1")), "not integers"),
    (lambda t: setattr(t, "version", 0), "version"),
    (lambda t: setattr(t, "version", 2**63), "version"),
    (lambda t: setattr(t, "version", True), "version"),
    (lambda t: setattr(t, "version", 1.0), "version"),
])
def test_bad_tables_are_refused(mutate, why):
    t = _graded()
    mutate(t)
    with pytest.raises(ModelError, match=why):
        check_table(t)


def test_integral_floats_are_accepted():
    t = _graded()
    t.perf = t.perf.astype(float)
    assert check_table(t).dtype == np.int64


def test_only_freq_tables_are_pushed():
    with pytest.raises(ModelError, match="not a FreqTable"):
        check_table(np.ones((16, 4)))  # type: ignore[arg-type]


def test_limits_from_an_object_that_disagrees_are_refused():
    good = {"FREQ_UTIL_BUCKETS": 16, "FREQ_RQ_BUCKETS": 4, "FREQ_PERF_MAX": 1024, "FREQ_UTIL_SHIFT": 6,
            "FREQ_MAX_CPUS": 256, "FREQ_TABLE_MAGIC": 0x51455246, "FREQ_NO_CPU": 0xFFFFFFFF}
    assert TableLimits.from_enum(good).util_buckets == 16
    for key, val in (("FREQ_UTIL_BUCKETS", 8), ("FREQ_RQ_BUCKETS", 5), ("FREQ_UTIL_SHIFT", 5)):
        with pytest.raises(LayoutError, match="this aios-lab's is 16x4") as exc:
            TableLimits.from_enum({**good, key: val})
        assert "aios-lab build" in exc.value.one_line()
    with pytest.raises(LayoutError, match="lacks FREQ_PERF_MAX"):
        TableLimits.from_enum({k: v for k, v in good.items() if k != "FREQ_PERF_MAX"})


# -- the push protocol over in-memory maps with the object's layouts ---------------------------

class FakeMap:
    """An array map in memory: what FreqSlots calls on aios_lab.bpf.Map."""

    def __init__(self, value_size: int, max_entries: int) -> None:
        self.value_size, self.max_entries = value_size, max_entries
        self.values = [bytes(value_size) for _ in range(max_entries)]
        self.writes: list[int] = []
        self.corrupt_next = False

    def lookup_u32_key(self, i: int) -> bytes:
        return self.values[i]

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        assert len(value) == self.value_size
        i = int.from_bytes(key, "little")
        self.writes.append(i)
        self.values[i] = bytes(8) + value[8:] if self.corrupt_next else bytes(value)


@pytest.fixture(scope="module")
def layouts():
    obj = build.object_path(policy.get("freq").source_path)
    assert obj.exists(), "run `aios-lab build`"
    with Btf.parse(obj) as btf:
        yield (btf.ctypes_type(TABLE_STRUCT), btf.ctypes_type(CTL_STRUCT), btf.ctypes_type(CPU_STRUCT),
               TableLimits.from_enum(btf.enum(LIMIT_ENUM)))


@pytest.fixture
def fake(layouts):
    import ctypes

    table_t, ctl_t, cpu_t, limits = layouts
    maps = (FakeMap(ctypes.sizeof(table_t), 2), FakeMap(ctypes.sizeof(ctl_t), 1), FakeMap(ctypes.sizeof(cpu_t), 4))
    return FreqSlots(*maps, table_t, ctl_t, cpu_t, limits)


def _raw(s: FreqSlots) -> tuple:
    return (s.slots.lookup_u32_key(0), s.slots.lookup_u32_key(1), s.ctl.lookup_u32_key(0))


def test_push_writes_the_inactive_slot_then_flips(fake):
    assert fake.read_ctl() == {"active": 0, "version": 0, "swaps": 0} and fake.active_table() is None
    assert fake.push(_graded(version=5)) == 1
    assert fake.slots.writes == [1], "the slot that was live must not be written"
    assert fake.read_ctl() == {"active": 1, "version": 5, "swaps": 1}
    live = fake.active_table()
    assert live.version == 5 and np.array_equal(live.perf, _graded().perf)
    assert fake.push(_with_version(FreqTable.constant(300), 6)) == 0
    assert fake.read_ctl() == {"active": 0, "version": 6, "swaps": 2}
    assert fake.read_slot(1).version == 5, "the previous table stays intact in the other slot"


def _with_version(t: FreqTable, v: int) -> FreqTable:
    t.version = v
    return t


def test_a_retired_slot_waits_out_the_grace_period(fake):
    fake.push(_graded(version=1))
    t0 = time.monotonic()
    fake.push(_graded(version=2))
    assert time.monotonic() - t0 >= freq_slots.GRACE_S * 0.9


def test_failed_pushes_leave_everything_unchanged(fake):
    fake.push(_graded(version=3))
    before = _raw(fake)
    bad = _graded(version=4)
    bad.perf[1, 1] = 2000
    with pytest.raises(ModelError, match="outside"):
        fake.push(bad)
    with pytest.raises(ModelError, match="live with different values"):
        fake.push(_with_version(FreqTable.constant(10), 3))
    assert _raw(fake) == before
    # A write that does not read back is never made live.
    fake.slots.corrupt_next = True
    with pytest.raises(ModelError, match="reads back different bytes"):
        fake.push(_graded(version=9))
    assert fake.ctl.lookup_u32_key(0) == before[2] and fake.active_table().version == 3


def test_pushing_the_live_table_again_is_harmless(fake):
    fake.push(_graded(version=3))
    fake.push(_graded(version=3))
    assert fake.read_ctl() == {"active": 0, "version": 3, "swaps": 2}


def test_cpu_states_wait_for_a_consistent_copy(fake, layouts):
    _, _, cpu_t, _ = layouts
    c = cpu_t()
    c.util, c.util_bucket, c.nr_queued, c.rq_bucket = 700, 10, 2, 2
    c.util_win, c.util_est = 600, 700
    c.perf, c.request, c.perf_cur, c.perf_cap, c.table_version, c.updates = 659, 528, 1024, 1024, 3, 17
    fake.state.values[1] = bytes(c)
    c.seq = 5  # odd: BPF is writing this entry
    fake.state.values[2] = bytes(c)
    states = fake.cpu_states(nr_cpus=3, retries=3)
    assert [s.cpu for s in states] == [0, 1, 2]
    assert states[1].consistent and states[1].request == 528 and states[1].table_version == 3
    assert (states[1].util, states[1].util_win, states[1].util_est) == (700, 600, 700)
    assert not states[2].consistent
    assert states[0].updates == 0 and states[0].to_dict()["request"] == 0


def test_layout_mismatch_is_refused(layouts):
    table_t, ctl_t, cpu_t, limits = layouts
    import ctypes

    with pytest.raises(LayoutError, match="two struct freq_table slots"):
        FreqSlots(FakeMap(ctypes.sizeof(table_t), 3), FakeMap(ctypes.sizeof(ctl_t), 1), None, table_t, ctl_t,
                  None, limits)
    with pytest.raises(LayoutError, match="freq_cpu"):
        FreqSlots(FakeMap(ctypes.sizeof(table_t), 2), FakeMap(ctypes.sizeof(ctl_t), 1), FakeMap(8, 4), table_t,
                  ctl_t, cpu_t, limits)


# -- the real maps on the host kernel -----------------------------------------------------------

@pytest.fixture
def real_slots():
    """The freq policy's own maps, created from its object (no program loaded)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create BPF maps")
    if not Path("/sys/kernel/btf/vmlinux").exists():
        pytest.skip("kernel has no BTF")
    pol = policy.get("freq")
    obj = BpfObject.open(build.object_path(pol.source_path))
    try:
        obj.load_maps_only()
        yield obj, FreqSlots.from_object(obj, pol.model)
    finally:
        obj.close()


@pytest.mark.bpf
def test_push_into_the_policys_real_maps(real_slots):
    _, slots = real_slots
    assert slots.push(_graded(version=11)) == 1
    assert slots.read_ctl() == {"active": 1, "version": 11, "swaps": 1}
    assert np.array_equal(slots.active_table().perf, _graded().perf)
    before = _raw(slots)
    with pytest.raises(ModelError):
        slots.push(_with_version(FreqTable.constant(5), 11))
    assert _raw(slots) == before
    states = slots.cpu_states()
    assert len(states) >= 1 and all(s.consistent and s.updates == 0 for s in states)
    rec = slots.status_record()
    assert rec["kind"] == "freq-table" and rec["ctl_map_id"] == slots.ctl.id


@pytest.mark.bpf
def test_program_priors_are_read_from_the_policys_real_map(real_slots):
    obj, slots = real_slots
    assert slots.program_priors() == {}
    prior_t = obj.btf.ctypes_type("freq_prior")
    # what learn_prior() writes: the comm, NUL-padded to 16 bytes, and the rule's state
    slots.priors.update(b"gcc".ljust(16, b"\0"), bytes(prior_t(est_ns=12_000_000, tasks=3)))
    slots.priors.update(b"a-full-length-nm", bytes(prior_t(est_ns=5, tasks=1)))
    got = slots.program_priors()
    assert got["gcc"].est_ns == 12_000_000 and got["gcc"].tasks == 3
    assert got["a-full-length-nm"].est_ns == 5          # 16 characters: no NUL to cut at
