"""aios_lab.bpf's ring buffers against the real host kernel: records delivered,
bounded consumption, bulk reads of the mapped ring, callback errors.

Every test loads real BPF into the running kernel (root, BTF, tp_btf needed);
nothing is mocked. The probe is tests/data/bpf/host_probe.bpf.c (tests/bpf/conftest.py).
"""
from __future__ import annotations

import subprocess
import time

import pytest

from aios_lab.bpf import RingArray, RingBuffer, bulk_supported
from aios_lab.errors import BpfMapError

from tests.helpers.bpf_host import HOST_KERNEL, drain, make_switches

pytestmark = HOST_KERNEL


def test_ringbuf_delivers_exec_records(probe):
    probe.set_rodata_many({"magic": 0xA105_1AB0_0000_0001, "label": "aios"})
    probe.load()
    probe.attach("on_exec")
    ev_t = probe.btf.ctypes_type("hp_event")
    got = []
    with RingBuffer(probe.map("events"), lambda b: got.append(ev_t.from_buffer_copy(b))) as rb:
        proc = subprocess.Popen(["/bin/true"])
        proc.wait()
        drain(rb, lambda: any(e.pid == proc.pid for e in got))
        assert rb.records == len(got) >= 1
    mine = [e for e in got if e.pid == proc.pid]
    assert len(mine) == 1
    e = mine[0]
    assert e.kind == probe.btf.enum("hp_kind")["HP_EXEC"]
    assert e.comm == b"true"                     # comm is already the new image's
    assert e.magic == 0xA105_1AB0_0000_0001      # rodata reached the program
    assert e.label == b"aios"
    assert (e.seq, e.pairs[2].a, e.pairs[2].b) == (-1, 0xBEEF, 0x7F)  # layout end to end


def test_ringbuf_switch_records_every_n(probe):
    probe.set_rodata_many({"switch_every": 5, "exec_events": False})
    probe.load()
    probe.attach("on_switch")
    ev_t = probe.btf.ctypes_type("hp_event")
    got = []
    with RingBuffer(probe.map("events"), lambda b: got.append(ev_t.from_buffer_copy(b))) as rb:
        make_switches(30)
        drain(rb, lambda: len(got) >= 3)
    assert len(got) >= 3
    assert all(e.kind == 2 and e.u.switches % 5 == 0 for e in got)


def test_ringbuf_consume_is_bounded_by_max_records(probe):
    probe.set_rodata_many({"switch_every": 1, "exec_events": False})
    probe.load()
    link = probe.attach("on_switch")
    make_switches(50)
    link.destroy()  # nothing new arrives while we count
    got = []
    with RingBuffer(probe.map("events"), got.append) as rb:
        assert rb.consume(max_records=3) == 3 and len(got) == 3
        rest = rb.consume()
        assert rest >= 1 and len(got) == 3 + rest  # the remainder was left in the ring, not lost
        assert rb.consume(max_records=3) == 0


@pytest.mark.skipif(not bulk_supported(), reason="bulk ring reads are for x86-64")
def test_ring_array_reads_in_bulk_across_the_wrap_and_shares_the_consumer_position(probe):
    probe.set_max_entries("events", 16384)       # a small ring, so that reads wrap often
    probe.set_rodata_many({"switch_every": 1, "exec_events": False, "magic": 77})
    probe.load()
    ev_t = probe.btf.ctypes_type("hp_event")
    ra = RingArray(probe.map("events"), ev_t)
    link = probe.attach("on_switch")
    total, deadline = 0, time.monotonic() + 10
    while total < 4 * ra.size and time.monotonic() < deadline:
        make_switches(5)
        a = ra.read()
        total += len(a) * ra.stride
        assert (a["kind"] == 2).all() and (a["magic"] == 77).all()
        assert ra.avail_bytes() >= 0
    assert total >= 4 * ra.size, "the ring never wrapped"
    link.destroy()                                # nothing new arrives now
    make_switches(1)
    left = ra.avail_bytes() // ra.stride
    first = ra.read(max_records=1)
    assert len(first) == min(1, left)
    # libbpf's reader continues from the position RingArray left.
    got: list[bytes] = []
    with RingBuffer(probe.map("events"), got.append) as rb:
        assert rb.consume() == max(0, left - 1) == len(got)
    assert len(ra.read()) == 0 and ra.avail_bytes() == 0
    ra.close()
    ra.close()  # idempotent


def test_ringbuf_callback_exception_is_reraised(probe):
    probe.load()
    probe.attach("on_exec")

    def boom(_data: bytes) -> None:
        raise ValueError("callback failed")

    rb = RingBuffer(probe.map("events"), boom)
    subprocess.run(["/bin/true"], check=True)
    with pytest.raises(ValueError, match="callback failed"):
        drain(rb, lambda: False, timeout=2.0)
    assert rb.records >= 1
    rb.close()
    rb.close()  # idempotent
    with pytest.raises(BpfMapError, match="closed"):
        rb.poll(0)


def test_ringbuf_rejects_other_map_types(probe):
    probe.load()
    with pytest.raises(BpfMapError, match="not a ring buffer"):
        RingBuffer(probe.map("table"), lambda b: None)
