"""aios_lab.bpf's BpfObject against the real host kernel: open, rodata, map sizes,
load, attach, the verifier's log, lifecycle errors.

Every test loads real BPF into the running kernel (root, BTF, tp_btf needed);
nothing is mocked. The probe is tests/data/bpf/host_probe.bpf.c (tests/bpf/conftest.py).
"""
from __future__ import annotations

import errno
import os
import struct
import subprocess

import pytest

from aios_lab.bpf import BpfObject, RingBuffer, num_possible_cpus, require_struct_ops_link
from aios_lab.errors import BpfAttachError, BpfError, BpfLoadError

from tests.helpers.bpf_host import HOST_KERNEL, drain, make_switches

pytestmark = HOST_KERNEL


def test_struct_ops_link_supported():
    require_struct_ops_link()


def test_counts_real_context_switches(probe):
    probe.load()
    counter = probe.map("switches")
    assert counter.is_percpu and counter.key_size == 4
    zero = struct.pack("=I", 0)
    before = counter.sum_percpu_u64(zero)
    with probe.attach("on_switch") as link:
        assert link.fd > 0
        make_switches(50)
        after = counter.sum_percpu_u64(zero)
    assert after - before >= 50
    vals = counter.lookup_u32_key(0)
    assert isinstance(vals, list) and len(vals) == num_possible_cpus()
    assert sum(struct.unpack("=Q", v)[0] for v in vals) == counter.sum_percpu_u64(zero)
    # Detached: the counter stops moving (allow nothing else to bump it).
    frozen = counter.sum_percpu_u64(zero)
    make_switches(10)
    assert counter.sum_percpu_u64(zero) == frozen


def test_rodata_changes_behaviour(probe, objdir):
    probe.set_rodata("switch_weight", 1000)
    probe.load()
    counter = probe.map("switches")
    probe.attach("on_switch")
    make_switches(10)
    total = counter.sum_percpu_u64(struct.pack("=I", 0))
    assert total >= 10_000 and total % 1000 == 0
    with pytest.raises(BpfLoadError, match="after|loaded"):
        probe.set_rodata("switch_weight", 1)


def test_rodata_can_disable_exec_events(probe):
    probe.set_rodata("exec_events", False)
    probe.load()
    probe.attach("on_exec")
    got: list[bytes] = []
    with RingBuffer(probe.map("events"), got.append) as rb:
        subprocess.run(["/bin/true"], check=True)
        drain(rb, lambda: False, timeout=0.3)
    assert got == []


def test_open_missing_file(tmp_path):
    with pytest.raises(BpfLoadError) as exc:
        BpfObject.open(tmp_path / "missing.bpf.o")
    assert exc.value.errno == errno.ENOENT
    assert any("missing.bpf.o" in ln for ln in exc.value.log)


def test_open_garbage_file(tmp_path):
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(BpfLoadError) as exc:
        BpfObject.open(junk)
    assert exc.value.errno != 0
    assert exc.value.log  # libbpf said why (not an ELF)


def test_verifier_rejection_carries_log(objdir):
    with BpfObject.open(objdir / "bad_verifier.bpf.o") as obj:
        with pytest.raises(BpfLoadError) as exc:
            obj.load()
    err = exc.value
    assert err.errno == errno.EACCES
    text = "\n".join(err.log)
    assert "invalid access to map value" in text
    assert "BEGIN PROG LOAD LOG" in text and "read_oob" in text
    # The verifier's complaint is lifted into the message, so one_line() shows it.
    assert "prog 'read_oob': invalid access to map value" in str(err)
    assert "libbpf:" in err.one_line()


def test_lifecycle_errors(probe):
    with pytest.raises(BpfError, match="not loaded"):
        probe.map("table")
    with pytest.raises(BpfAttachError, match="not loaded"):
        probe.attach("on_switch")
    probe.load()
    with pytest.raises(BpfLoadError):
        probe.load()
    with pytest.raises(BpfError, match="no program"):
        probe.program("nope")
    assert {p.name for p in probe.programs()} == {"on_switch", "on_exec"}
    assert probe.program("on_exec").section == "tp_btf/sched_process_exec"
    with pytest.raises(BpfAttachError):
        probe.attach_struct_ops("table")   # not a struct_ops map
    link = probe.attach("on_exec")
    probe.close()
    assert not link.alive
    probe.close()   # idempotent


# -- the loader lifecycle (aios_lab.bpf.loader) ---------------------------------------------


def test_set_max_entries_only_before_load(probe):
    with pytest.raises(BpfError, match="no map 'nope'"):
        probe.set_max_entries("nope", 8)
    probe.set_max_entries("table", 8)
    probe.load()
    assert probe.map("table").max_entries == 8
    with pytest.raises(BpfLoadError, match="between open"):
        probe.set_max_entries("table", 16)
