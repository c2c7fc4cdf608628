"""aios_lab.bpf's maps against the real host kernel: lookup and update, sizes
checked before the syscall, batches, per-CPU values, pins.

Every test loads real BPF into the running kernel (root, BTF, tp_btf needed);
nothing is mocked. The probe is tests/data/bpf/host_probe.bpf.c (tests/bpf/conftest.py).
"""
from __future__ import annotations

import errno
import os
import struct

import pytest

from aios_lab.bpf import BPF_NOEXIST, Map, ensure_bpffs, num_possible_cpus
from aios_lab.errors import BpfMapError

from tests.helpers.bpf_host import HOST_KERNEL, KEY, VAL

pytestmark = HOST_KERNEL


def test_hash_map_crud(probe):
    probe.load()
    table = probe.map("table")
    assert (table.key_size, table.value_size, table.max_entries) == (8, 16, 1024)
    assert not table.is_percpu
    k1, k2 = KEY.pack(1, 0), KEY.pack(2, 7)
    assert table.lookup(k1) is None
    table.update(k1, VAL.pack(10, -5))
    table.update(k2, VAL.pack(20, 5), BPF_NOEXIST)
    assert VAL.unpack(table.lookup(k1)) == (10, -5)
    with pytest.raises(BpfMapError) as exc:
        table.update(k2, VAL.pack(0, 0), BPF_NOEXIST)
    assert exc.value.errno == errno.EEXIST
    assert sorted(table.keys()) == sorted([k1, k2])
    assert dict(table.items())[k2] == VAL.pack(20, 5)
    assert table.delete(k1) is True
    assert table.delete(k1) is False
    assert list(table.keys()) == [k2]


def test_wrong_sizes_raise_before_syscall(probe):
    probe.load()
    table = probe.map("table")
    with pytest.raises(BpfMapError, match="key is 4 bytes, expected 8"):
        table.lookup(b"\0" * 4)
    with pytest.raises(BpfMapError, match="value is 8 bytes"):
        table.update(KEY.pack(1, 1), b"\0" * 8)
    with pytest.raises(BpfMapError, match="not a u32"):
        table.lookup_u32_key(0)


def test_batch_ops(probe):
    probe.load()
    table = probe.map("table")
    items = [(KEY.pack(i, i * 3), VAL.pack(i * i, -i)) for i in range(300)]
    assert table.update_batch(items) == 300
    got = table.lookup_batch(batch_size=64)
    assert sorted(got) == sorted(items)
    assert table.update_batch([]) == 0
    with pytest.raises(BpfMapError):
        table.update_batch([(b"\0" * 3, VAL.pack(0, 0))])
    # Delete in one call; a key that is not there (the kernel stops at it) is
    # skipped and the rest still go.
    gone = [k for k, _ in items[:100]] + [KEY.pack(9999, 0)] + [k for k, _ in items[100:150]]
    assert table.delete_batch(gone) == 150
    assert sorted(table.lookup_batch()) == sorted(items[150:])
    assert table.delete_batch([]) == 0


def test_percpu_values_sum(probe):
    probe.load()     # not attached: only we write the counter
    counter = probe.map("switches")
    n = num_possible_cpus()
    counter.update(struct.pack("=I", 0), [struct.pack("=Q", i + 1) for i in range(n)])
    vals = counter.lookup_u32_key(0)
    assert [struct.unpack("=Q", v)[0] for v in vals] == list(range(1, n + 1))
    assert counter.sum_percpu_u64(struct.pack("=I", 0)) == n * (n + 1) // 2
    counter.update(struct.pack("=I", 0), struct.pack("=Q", 4))  # one value for all CPUs
    assert counter.sum_percpu_u64(struct.pack("=I", 0)) == 4 * n
    batch = counter.lookup_batch()
    assert len(batch) == 1 and len(batch[0][1]) == n
    with pytest.raises(BpfMapError, match="per-CPU update needs"):
        counter.update(struct.pack("=I", 0), [struct.pack("=Q", 1)] * (n + 1))


def test_pin_and_reopen(probe):
    bpffs = ensure_bpffs()
    probe.load()
    table = probe.map("table")
    table.update(KEY.pack(42, 1), VAL.pack(4242, 0))
    pin_dir = bpffs / f"aios-lab-test-{os.getpid()}"
    pin_dir.mkdir(exist_ok=True)
    map_pin, link_pin = pin_dir / "table", pin_dir / "on_switch"
    try:
        table.pin(map_pin)
        with Map.from_pinned(map_pin) as again:
            assert (again.name, again.type, again.key_size, again.value_size, again.max_entries) \
                == ("table", table.type, 8, 16, 1024)
            assert again.fd != table.fd
            assert VAL.unpack(again.lookup(KEY.pack(42, 1))) == (4242, 0)
            again.update(KEY.pack(43, 1), VAL.pack(1, 1))
        assert table.lookup(KEY.pack(43, 1)) == VAL.pack(1, 1)   # same kernel map
        link = probe.attach("on_switch")
        link.pin(link_pin)
        assert link_pin.exists()
        link.unpin()
        assert not link_pin.exists()
    finally:
        Map.unpin(map_pin)
        Map.unpin(link_pin)
        pin_dir.rmdir()
    with pytest.raises(BpfMapError) as exc:
        Map.from_pinned(map_pin)
    assert exc.value.errno == errno.ENOENT
