"""aios_lab.bpf against the real host kernel: load, attach, maps, ring buffer, pins.

Every test loads real BPF into the running kernel (root, BTF, tp_btf needed);
nothing is mocked. The probe is tests/data/bpf/host_probe.bpf.c.
"""
from __future__ import annotations

import errno
import gc
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from aios_lab.bpf import (BPF_NOEXIST, BpfObject, Map, RingArray, RingBuffer, bulk_supported,
                          ensure_bpffs, num_possible_cpus, require_struct_ops_link)
from aios_lab.bpf.loader import LoadSpec, load
from aios_lab.errors import BpfAttachError, BpfError, BpfLoadError, BpfMapError, BuildError, LayoutError

from tests.helpers import DATA, REPO

BPF_DIR = DATA / "bpf"

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF"),
    pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="kernel has no BTF"),
]

KEY = struct.Struct("=II")       # struct hp_key (checked against BTF in tests/bpf/test_btf.py)
VAL = struct.Struct("=Qq")       # struct hp_val


def compile_bpf_object(src: Path, out: Path) -> Path:
    """aios_lab.build.compile_bpf when available, else the equivalent clang line."""
    try:
        from aios_lab.build import compile_bpf
    except ImportError:
        compile_bpf = None
    if compile_bpf is not None:
        return compile_bpf(src, out)
    clang = shutil.which("clang-14") or shutil.which("clang")
    if not clang:
        pytest.skip("clang not installed")
    root = REPO
    cmd = [clang, "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-fms-extensions",
           "-Wno-microsoft-anon-tag", f"-I{root / 'build'}", f"-I{root / 'bpf' / 'include'}",
           "-I/tmp/papt/root/usr/include", f"-I{src.parent}", "-c", str(src), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def objdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bpfobj")
    compile_bpf_object(BPF_DIR / "host_probe.bpf.c", d / "host_probe.bpf.o")
    compile_bpf_object(BPF_DIR / "bad_verifier.bpf.c", d / "bad_verifier.bpf.o")
    return d


@pytest.fixture
def probe(objdir):
    """A fresh, opened (not loaded) probe object, closed after the test."""
    with BpfObject.open(objdir / "host_probe.bpf.o") as obj:
        yield obj


def make_switches(n: int = 20) -> None:
    """Force context switches on this thread: sleeping always deschedules."""
    for _ in range(n):
        time.sleep(0.001)


def drain(rb: RingBuffer, until, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until():
        rb.poll(50)


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


def test_rodata_can_disable_exec_events(probe):
    probe.set_rodata("exec_events", False)
    probe.load()
    probe.attach("on_exec")
    got: list[bytes] = []
    with RingBuffer(probe.map("events"), got.append) as rb:
        subprocess.run(["/bin/true"], check=True)
        drain(rb, lambda: False, timeout=0.3)
    assert got == []


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
        assert got and ev_t.from_buffer_copy(got[0][:ctypes_sizeof(ev_t)]).magic == 77   # rodata took
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
    while any(_prog_exists(i) for i in prog_ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_prog_exists(i) for i in prog_ids)


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


def test_set_max_entries_only_before_load(probe):
    with pytest.raises(BpfError, match="no map 'nope'"):
        probe.set_max_entries("nope", 8)
    probe.set_max_entries("table", 8)
    probe.load()
    assert probe.map("table").max_entries == 8
    with pytest.raises(BpfLoadError, match="between open"):
        probe.set_max_entries("table", 16)


def ctypes_sizeof(t) -> int:
    import ctypes
    return ctypes.sizeof(t)


def _prog_exists(prog_id: int) -> bool:
    tool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    return subprocess.run([tool, "prog", "show", "id", str(prog_id)], capture_output=True).returncode == 0
