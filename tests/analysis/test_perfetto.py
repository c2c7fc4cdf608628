"""Perfetto export (aios_lab.analysis.perfetto): the wire format decoded with
the official protos, trace processor's reading of it, bad input, and a large
trace through the external sort (no root, no BPF)."""
from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from aios_lab.analysis import perfetto as pf
from aios_lab.analysis.perfetto import NO_SWITCHES_MESSAGE, ExportStats, export_perfetto
from aios_lab.errors import TraceError
from aios_lab.telemetry.trace import Trace
from aios_lab.telemetry.writer import TraceWriter

from tests.helpers.traces import BASE, META, TASKS, SCHEDULE, WAKEUPS, switch_rows, schedule_trace


def decode(path: Path):
    pb = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")
    trace = pb.Trace()
    trace.ParseFromString(path.read_bytes())
    return pb, trace


_KIND_ORDER = {"cpu_frequency": 0, "sched_waking": 1, "sched_switch": 2}


def ftrace_events(trace) -> dict[int, list]:
    """Per CPU, every event in time order as SimpleNamespace(ts, kind, pid, f,
    compact), compact_sched expanded the way trace processor reads it: a
    compact switch's prev task (pid, comm, prio) is the CPU's previous
    switch's next task, and the pid of a compact event (the task running on
    the CPU) is that task too (None before the CPU's first switch)."""
    per_cpu: dict[int, list] = defaultdict(list)
    for packet in trace.packet:
        if not packet.HasField("ftrace_events"):
            continue
        b = packet.ftrace_events
        events = [NS(ts=e.timestamp, kind=e.WhichOneof("event"), pid=e.pid,
                     f=getattr(e, e.WhichOneof("event")), compact=False) for e in b.event]
        cs, ts = b.compact_sched, 0
        names = list(cs.intern_table)
        for i, delta in enumerate(cs.switch_timestamp):
            ts += delta
            events.append(NS(ts=ts, kind="sched_switch", pid=None, compact=True, f=NS(
                prev_state=cs.switch_prev_state[i], next_pid=cs.switch_next_pid[i],
                next_prio=cs.switch_next_prio[i],
                next_comm=names[cs.switch_next_comm_index[i]])))
        ts = 0
        for i, delta in enumerate(cs.waking_timestamp):
            ts += delta
            events.append(NS(ts=ts, kind="sched_waking", pid=None, compact=True, f=NS(
                pid=cs.waking_pid[i], target_cpu=cs.waking_target_cpu[i], success=1,
                prio=cs.waking_prio[i], comm=names[cs.waking_comm_index[i]])))
        events.sort(key=lambda e: (e.ts, _KIND_ORDER[e.kind]))  # stable: file order at ties
        per_cpu[b.cpu].append(events)
    out: dict[int, list] = {}
    for cpu, bundles in per_cpu.items():
        running = None  # (pid, comm, prio) switched to last
        out[cpu] = []
        for events in bundles:
            for e in events:
                if e.compact:
                    e.pid = None if running is None else running[0]
                    if e.kind == "sched_switch":
                        e.f.prev_pid, e.f.prev_comm, e.f.prev_prio = running
                if e.kind == "sched_switch":
                    running = (e.f.next_pid, e.f.next_comm, e.f.next_prio)
            out[cpu].extend(events)
    return out


def bundle_sizes(trace) -> list[int]:
    return [len(p.ftrace_events.event) + len(p.ftrace_events.compact_sched.switch_timestamp)
            + len(p.ftrace_events.compact_sched.waking_timestamp)
            for p in trace.packet if p.HasField("ftrace_events")]


def expected_running(cpu: int, ts: int) -> int:
    """The task on `cpu` at `ts`, before any switch at that same ts."""
    running = 0
    for off, nxt, _ in SCHEDULE.get(cpu, []):
        if BASE + off >= ts:
            break
        running = nxt
    return running


# -- 1. the wire format, decoded with the official protos -------------------------


@pytest.mark.parametrize("bundle_events", [pf.DEFAULT_BUNDLE_EVENTS, 2])
def test_round_trip_official_protos(tmp_path, bundle_events):
    trace_dir = schedule_trace(tmp_path / "t")
    out = tmp_path / "out.pftrace"
    stats = export_perfetto(trace_dir, out, bundle_events=bundle_events)
    pb, trace = decode(out)

    assert isinstance(stats, ExportStats)
    n_switch = sum(len(s) for s in SCHEDULE.values())
    assert (stats.sched_switch, stats.sched_waking, stats.cpu_frequency) == (n_switch, 5, 4)
    assert stats.skipped_wakeups == 1
    assert stats.events == n_switch + 9
    assert stats.bytes == out.stat().st_size
    assert stats.cpus == [0, 1, 2]
    assert stats.kernel_release == "6.12.0-aios" and not stats.kernel_release_assumed
    assert stats.packets == len(trace.packet)

    # Header packets: clock snapshot, system info, process tree.
    snapshot = trace.packet[0].clock_snapshot
    assert snapshot.primary_trace_clock == pb.BUILTIN_CLOCK_BOOTTIME
    clocks = {c.clock_id: c.timestamp for c in snapshot.clocks}
    assert clocks == {pb.BUILTIN_CLOCK_BOOTTIME: BASE,
                      pb.BUILTIN_CLOCK_REALTIME: 1_700_000_000_250_000_000}
    uts = trace.packet[1].system_info.utsname
    assert (uts.sysname, uts.release, uts.version, uts.machine) == (
        "Linux", "6.12.0-aios", "#1 SMP PREEMPT_DYNAMIC", "x86_64")
    threads = {t.tid: (t.tgid, t.name) for p in trace.packet if p.HasField("process_tree")
               for t in p.process_tree.threads}
    assert threads == {pid: (tgid, name) for pid, (tgid, name, _) in TASKS.items() if pid}
    processes = {p.pid: (p.ppid, list(p.cmdline), p.cmdline_is_comm)
                 for pk in trace.packet if pk.HasField("process_tree")
                 for p in pk.process_tree.processes}
    assert processes == {100: (1, ["app"], True), 200: (42, ["db"], True),
                         300: (0, ["dl-task"], True)}
    for p in trace.packet:
        assert p.trusted_packet_sequence_id == 1
        if p.HasField("ftrace_events"):
            assert not p.ftrace_events.HasField("ftrace_clock")  # boot clock: ts unchanged
            ts = [e.timestamp for e in p.ftrace_events.event]
            assert ts == sorted(ts)
    assert max(bundle_sizes(trace)) <= bundle_events
    # Compact: every switch but each CPU's first (its prev is not in the stream), every wakeup.
    assert stats.compact_events == n_switch - len(SCHEDULE) + 5

    per_cpu = ftrace_events(trace)
    assert sorted(per_cpu) == [0, 1, 2]
    for cpu, events in per_cpu.items():
        ts = [e.ts for e in events]
        assert ts == sorted(ts), f"cpu {cpu} events out of order across bundles"

        switches = [e for e in events if e.kind == "sched_switch"]
        expected = [r for r in switch_rows() if r["cpu"] == cpu]
        assert len(switches) == len(expected)
        for e, r in zip(switches, expected):
            s = e.f
            assert e.ts == r["ts_ns"]
            assert e.pid == r["prev_pid"]
            assert (s.prev_comm, s.prev_pid, s.prev_prio, s.prev_state) == (
                r["prev_comm"], r["prev_pid"], r["prev_prio"], r["prev_state"])
            assert (s.next_comm, s.next_pid, s.next_prio) == (
                r["next_comm"], r["next_pid"], r["next_prio"])

        wakings = [e for e in events if e.kind == "sched_waking"]
        expected_w = [w for w in WAKEUPS
                      if (w[2] if w[2] is not None else w[3]) == cpu]
        assert len(wakings) == len(expected_w)
        prio = {1024 << 10: 120, 3121 << 10: 115, 1024: 120, 15: 139}
        for e, (off, pid, _, target, weight) in zip(wakings, expected_w):
            w = e.f
            assert e.ts == BASE + off
            first_switch = BASE + SCHEDULE[cpu][0][0]
            assert e.pid == (expected_running(cpu, BASE + off) if BASE + off > first_switch
                             else None)  # compact: nothing runs there yet for trace processor
            assert (w.comm, w.pid, w.prio, w.success, w.target_cpu) == (
                TASKS[pid][1], pid, prio[weight], 1, target)

        freqs = [(e.ts, e.f.state, e.f.cpu_id, e.pid)
                 for e in events if e.kind == "cpu_frequency"]
        changes = {0: [(0, 2_000_000), (1_500, 3_100_000), (2_500, 2_000_000)],
                   1: [(500, 1_200_000)], 2: []}[cpu]
        assert freqs == [(BASE + off, khz, cpu, expected_running(cpu, BASE + off))
                         for off, khz in changes]

    # At equal timestamps a wakeup precedes the switch.
    cpu0 = [(e.ts, e.kind) for e in per_cpu[0]]
    at = cpu0.index((BASE + 2_000, "sched_waking"))
    assert cpu0[at + 1] == (BASE + 2_000, "sched_switch")


def test_a_gap_in_the_switch_chain_is_written_in_full(tmp_path):
    # Lost events: CPU 1's third switch switches out db (200), though the
    # switch before it switched to db-io (201). Compact encoding would make
    # trace processor take db-io as prev; the full event keeps the truth.
    rows = switch_rows()
    gap = next(r for r in rows if r["cpu"] == 1 and r["ts_ns"] == BASE + 2_400)
    assert gap["prev_pid"] == 201
    gap.update(prev_pid=200, prev_tgid=200, prev_comm="db")
    with TraceWriter(tmp_path / "t", META) as w:
        w.append("switches", rows)
    out = tmp_path / "o.pftrace"
    stats = export_perfetto(tmp_path / "t", out)
    assert stats.compact_events == len(rows) - len(SCHEDULE) - 1
    _, trace = decode(out)
    cpu1 = [e for e in ftrace_events(trace)[1] if e.kind == "sched_switch"]
    assert [(e.f.prev_pid, e.compact) for e in cpu1] == [(0, False), (200, True), (200, False),
                                                         (200, True)]


def test_output_identical_whether_sorted_in_memory_or_spilled(tmp_path):
    trace_dir = schedule_trace(tmp_path / "t")
    export_perfetto(trace_dir, tmp_path / "a.pftrace", reorder_rows=0)
    export_perfetto(trace_dir, tmp_path / "b.pftrace", run_rows=3, batch_rows=2, reorder_rows=0)
    assert (tmp_path / "a.pftrace").read_bytes() == (tmp_path / "b.pftrace").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pftrace", "b.pftrace", "t"]


def test_merge_prefix_search_matches_comparing_every_row():
    """The k-way merge cuts each run's block at the bound by binary search;
    with many equal keys it must cut where comparing every row would."""
    import pyarrow as pa
    rng = np.random.default_rng(5)
    n = 400
    cpu, ts = rng.integers(0, 3, n), rng.integers(0, 6, n)
    kind, ordn = rng.integers(0, 3, n), rng.integers(0, 4, n)
    order = np.lexsort((ordn, kind, ts, cpu))
    table = pa.table({"cpu": pa.array(cpu[order], pa.int32()), "ts": ts[order],
                      "kind": pa.array(kind[order], pa.int8()), "ord": ordn[order]})
    c, t, k, o = (table.column(name).to_numpy() for name in ("cpu", "ts", "kind", "ord"))
    for bound in [(-1, 0, 0, 0), (3, 0, 0, 0)] + [
            tuple(int(x) for x in rng.integers(0, (4, 7, 4, 5))) for _ in range(300)]:
        bc, bt, bk, bo = bound
        le = (c < bc) | ((c == bc) & ((t < bt) | ((t == bt) & ((k < bk) | ((k == bk) & (o <= bo))))))
        assert pf._prefix_le(table, bound) == int(le.sum()), bound


def test_accepts_an_open_trace_and_writes_with_the_umask(tmp_path):
    trace_dir = schedule_trace(tmp_path / "t")
    old = os.umask(0o027)
    try:
        export_perfetto(Trace.open(trace_dir), tmp_path / "o.pftrace")
    finally:
        os.umask(old)
    assert (tmp_path / "o.pftrace").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("release, written, assumed", [
    ("6.12.0-aios", "6.12.0-aios", False),
    ("6.13-rc1", "6.13.0-6.13-rc1", False),   # trace processor needs digits between the dots
    ("4.9.0", pf.FALLBACK_KERNEL_RELEASE, True),  # predates the prev_state encoding we use
    (None, pf.FALLBACK_KERNEL_RELEASE, True),
])
def test_kernel_release(tmp_path, release, written, assumed):
    meta = {"kernel": {"release": release}} if release else {}
    trace_dir = schedule_trace(tmp_path / "t", meta=meta)
    stats = export_perfetto(trace_dir, tmp_path / "o.pftrace")
    _, trace = decode(tmp_path / "o.pftrace")
    releases = [p.system_info.utsname.release for p in trace.packet if p.HasField("system_info")]
    assert releases == [written]
    assert (stats.kernel_release, stats.kernel_release_assumed) == (written, assumed)
    # No start time in the metadata: no clock snapshot, the boot clock stays the default.
    assert not any(p.HasField("clock_snapshot") for p in trace.packet)


# -- 2. trace processor -------------------------------------------------------------


def _trace_processor_bin() -> str | None:
    return os.environ.get("AIOS_LAB_TRACE_PROCESSOR") or shutil.which("trace_processor_shell")


def test_trace_processor_reads_it(tmp_path):
    tp_mod = pytest.importorskip("perfetto.trace_processor")
    binary = _trace_processor_bin()
    if not binary:
        pytest.skip("no trace_processor_shell: set AIOS_LAB_TRACE_PROCESSOR to its path, or put "
                    "it on PATH (a Perfetto release binary, or `tools/ninja -C out/x "
                    "trace_processor_shell` in a Perfetto checkout)")
    trace_dir = schedule_trace(tmp_path / "t")
    out = tmp_path / "o.pftrace"
    export_perfetto(trace_dir, out)
    tp = tp_mod.TraceProcessor(trace=str(out),
                               config=tp_mod.TraceProcessorConfig(bin_path=binary))
    try:
        def q(sql: str) -> list:
            return list(tp.query(sql))

        tid_of = {r.utid: r.tid for r in q("select utid, tid from thread")}
        names = {r.tid: r.name for r in q("select tid, name from thread")}
        assert {pid: names.get(pid) for pid in TASKS if pid} == {
            pid: name for pid, (_, name, _) in TASKS.items() if pid}
        procs = {r.pid: r.name for r in q("select pid, name from process")}
        assert {pid: procs.get(pid) for pid in (100, 200, 300)} == {
            100: "app", 200: "db", 300: "dl-task"}

        # One slice per switch, at its exact timestamp: our clock comes through unchanged.
        sched = q("select ts, dur, cpu, utid, end_state from sched order by cpu, ts")
        assert len(sched) == sum(len(s) for s in SCHEDULE.values())
        by_cpu = defaultdict(list)
        for r in sched:
            by_cpu[r.cpu].append(r)
        assert sorted(by_cpu) == sorted(SCHEDULE)
        for cpu, seq in SCHEDULE.items():
            rows = by_cpu[cpu]
            assert [r.ts for r in rows] == [BASE + off for off, _, _ in seq]
            assert [tid_of[r.utid] for r in rows] == [nxt for _, nxt, _ in seq]
            for r, following in zip(rows, rows[1:]):
                assert r.dur == following.ts - r.ts
            assert rows[-1].dur in (-1, None) or rows[-1].dur >= 0  # still running at the end
        # The slice of app (100) ended by a preemption: end_state R+ (decoded for 6.12).
        preempted = [r for r in by_cpu[0] if r.ts == BASE + 1_000]
        assert preempted[0].end_state == "R+"
        states = {(tid_of[r.utid], r.ts): r.state
                  for r in q("select utid, ts, state from thread_state")}
        assert states[(100, BASE + 1_500)] == "R+"
        assert states[(101, BASE + 2_000)] == "S"
        assert states[(100, BASE + 2_600)] == "D"
        assert states[(300, BASE + 3_200)] == "I"

        # The wakeup of app-worker (101, asleep since 1_400) by app (100) on CPU 0.
        woken = q("select ts, state, waker_utid from thread_state join thread using (utid) "
                  f"where tid = 101 and ts = {BASE + 1_450}")
        assert woken and woken[0].state == "R" and tid_of[woken[0].waker_utid] == 100

        freqs = q("select t.cpu as cpu, c.ts as ts, c.value as value from counter c "
                  "join cpu_counter_track t on c.track_id = t.id where t.name = 'cpufreq' "
                  "order by t.cpu, c.ts")
        assert [(r.cpu, r.ts, r.value) for r in freqs] == [
            (0, BASE, 2_000_000), (0, BASE + 1_500, 3_100_000), (0, BASE + 2_500, 2_000_000),
            (1, BASE + 500, 1_200_000)]

        bad = {r.name: r.value for r in q("select name, value from stats where value > 0")}
        for name in ("mismatched_sched_switch_tids", "task_state_invalid",
                     "ftrace_bundle_tokenizer_errors", "clock_sync_failure",
                     "ftrace_packet_before_tracing_start"):
            assert name not in bad, f"trace processor reports {name}={bad[name]}"
    finally:
        tp.close()


# -- 3. bad input ---------------------------------------------------------------


def test_without_the_perfetto_package_one_clear_line(tmp_path, monkeypatch):
    import sys

    from click.testing import CliRunner

    from aios_lab.cli import main

    monkeypatch.setitem(sys.modules, "perfetto.protos.perfetto.trace", None)  # import fails
    out = tmp_path / "o.pftrace"
    res = CliRunner().invoke(main, ["export", "perfetto", str(schedule_trace(tmp_path / "t")),
                                    "-o", str(out)])
    assert res.exit_code != 0 and res.output.count("\n") == 1, res.output
    assert "needs the perfetto package" in res.output and "pip install" in res.output
    assert not out.exists()


def test_no_switches_is_a_clear_error(tmp_path):
    trace_dir = schedule_trace(tmp_path / "t", switches=False)
    out = tmp_path / "o.pftrace"
    with pytest.raises(TraceError) as err:
        export_perfetto(trace_dir, out)
    assert str(err.value) == NO_SWITCHES_MESSAGE.format(path=trace_dir)
    assert "--no-switches" in str(err.value) and "re-collect" in str(err.value)
    assert "\n" not in err.value.one_line()
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_trace_older_than_the_switches_table(tmp_path):
    trace_dir = schedule_trace(tmp_path / "t", switches=False)
    (trace_dir / "switches.parquet").unlink()
    with pytest.raises(TraceError, match="no sched_switch events"):
        export_perfetto(trace_dir, tmp_path / "o.pftrace")


def test_failure_leaves_an_existing_output_untouched(tmp_path):
    empty = schedule_trace(tmp_path / "empty", switches=False)
    out = tmp_path / "o.pftrace"
    out.write_bytes(b"an older export")
    with pytest.raises(TraceError):
        export_perfetto(empty, out)
    assert out.read_bytes() == b"an older export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "o.pftrace"]


def test_failure_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    trace_dir = schedule_trace(tmp_path / "t")
    out = tmp_path / "o.pftrace"
    out.write_bytes(b"an older export")

    def disk_full(self, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pf._BundleWriter, "_bundle", disk_full)
    with pytest.raises(TraceError, match="writing .* failed: No space left on device"):
        export_perfetto(trace_dir, out, run_rows=3)  # spills, so a scratch folder exists
    assert out.read_bytes() == b"an older export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.pftrace", "t"]


def test_arrow_allocates_outside_mimalloc_while_exporting_then_gets_it_back(tmp_path, monkeypatch):
    # mimalloc's huge-page faults cost ~1 s of system time per 10^7 events
    # on a host that compacts memory for them (benchmarks/RESULTS.md): the
    # export swaps Arrow's default pool, and puts it back, failure or not,
    # unless the user chose one.
    pa = pytest.importorskip("pyarrow")
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    trace_dir = schedule_trace(tmp_path / "t")
    before = pa.default_memory_pool().backend_name
    seen, real = [], pf._export

    def spy(*args):
        seen.append(pa.default_memory_pool().backend_name)
        real(*args)

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pf, "_export", spy)
    export_perfetto(trace_dir, tmp_path / "o.pftrace")
    assert seen == [pf._ARROW_POOL.pool().backend_name] and seen[0] in ("jemalloc", "system")
    assert pa.default_memory_pool().backend_name == before
    monkeypatch.setattr(pf, "_export", disk_full)
    with pytest.raises(TraceError, match="No space left"):
        export_perfetto(trace_dir, tmp_path / "o.pftrace")
    assert pa.default_memory_pool().backend_name == before
    monkeypatch.setattr(pf, "_export", spy)
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", before)
    export_perfetto(trace_dir, tmp_path / "o.pftrace")
    assert seen[-1] == before


def test_not_a_trace_and_bad_output_paths(tmp_path):
    with pytest.raises(TraceError, match="no such directory"):
        export_perfetto(tmp_path / "missing", tmp_path / "o.pftrace")
    trace_dir = schedule_trace(tmp_path / "t")
    with pytest.raises(TraceError, match="does not exist"):
        export_perfetto(trace_dir, tmp_path / "no" / "such" / "o.pftrace")
    with pytest.raises(TraceError, match="is a directory"):
        export_perfetto(trace_dir, tmp_path)


def test_damaged_switches_file(tmp_path):
    trace_dir = schedule_trace(tmp_path / "t")
    tr = Trace.open(trace_dir)  # validated while whole
    data = (trace_dir / "switches.parquet").read_bytes()
    half = len(data) // 2
    (trace_dir / "switches.parquet").write_bytes(data[:half] + bytes(len(data) - half - 8)
                                                 + data[-8:])
    with pytest.raises(TraceError, match="switches.parquet"):
        export_perfetto(tr, tmp_path / "o.pftrace")
    assert not (tmp_path / "o.pftrace").exists()


# -- 4. a large trace, streamed --------------------------------------------------


def test_large_trace_streams_through_the_external_sort(tmp_path):
    pd = pytest.importorskip("pandas")
    n, ncpu = 200_000, 4
    rng = np.random.default_rng(3)
    cpu = rng.integers(0, ncpu, n).astype(np.int32)
    ts = BASE + np.arange(n, dtype=np.int64) * 250
    pids = rng.integers(1000, 1100, n).astype(np.int32)
    # Consistent per-CPU chains: each switch's prev is the CPU's previous next.
    prev = np.zeros(n, dtype=np.int32)
    for c in range(ncpu):
        rows = np.flatnonzero(cpu == c)
        prev[rows[1:]] = pids[rows[:-1]]
    order = rng.permutation(n)  # and written out of order
    comms = np.array([f"w{p}" for p in range(1000, 1100)] + ["swapper"], dtype=object)
    name = lambda p: comms[np.where(p == 0, 100, p - 1000)]  # noqa: E731
    df = pd.DataFrame({
        "ts_ns": ts, "cpu": cpu, "prev_pid": prev, "prev_tgid": prev, "prev_comm": name(prev),
        "prev_prio": np.full(n, 120, np.int32), "prev_state": rng.choice([0, 1, 256], n),
        "next_pid": pids, "next_tgid": pids, "next_comm": name(pids),
        "next_prio": np.full(n, 120, np.int32), "next_wait_ns": np.zeros(n, np.int64),
    }).iloc[order]
    with TraceWriter(tmp_path / "t", {"kernel": {"release": "6.12.0"}}) as w:
        w.append_frame("switches", df)

    out = tmp_path / "o.pftrace"
    stats = export_perfetto(tmp_path / "t", out, run_rows=60_000, batch_rows=16_384)
    assert stats.order == pf.EXTERNAL_SORT and "switches.parquet row" in stats.read_order_refused
    assert stats.sched_switch == n and stats.cpus == list(range(ncpu))
    assert stats.bundles == sum(-(-int((cpu == c).sum()) // pf.DEFAULT_BUNDLE_EVENTS)
                                for c in range(ncpu))
    _, trace = decode(out)
    per_cpu = ftrace_events(trace)
    for c in range(ncpu):
        got = np.array([e.ts for e in per_cpu[c]], dtype=np.int64)
        np.testing.assert_array_equal(got, ts[cpu == c])
        assert [e.f.next_pid for e in per_cpu[c]] == pids[cpu == c].tolist()
        assert [e.f.prev_pid for e in per_cpu[c][1:]] == pids[cpu == c][:-1].tolist()
    assert stats.compact_events == n - ncpu  # consistent chains: all but each CPU's first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.pftrace", "t"]


# -- 5. read order: no global sort, the same events per CPU ----------------------


def _per_cpu(path: Path) -> tuple[dict, dict]:
    """Per CPU: its decoded events as comparable tuples, and its bundles'
    bytes in file order; plus the process tree's threads."""
    _, trace = decode(path)

    def fields(f):
        if isinstance(f, NS):
            return tuple(sorted(vars(f).items()))
        return tuple((fd.name, v) for fd, v in f.ListFields())

    events = {cpu: [(e.ts, e.kind, e.pid, e.compact, fields(e.f)) for e in evs]
              for cpu, evs in ftrace_events(trace).items()}
    bundles = defaultdict(list)
    for p in trace.packet:
        if p.HasField("ftrace_events"):
            bundles[p.ftrace_events.cpu].append(p.ftrace_events.SerializeToString())
    threads = sorted((t.tid, t.tgid, t.name) for p in trace.packet if p.HasField("process_tree")
                     for t in p.process_tree.threads)
    return events, {"bundles": dict(bundles), "threads": threads}


def _assert_same_as_sorted(trace_dir: Path, tmp_path: Path, order: str, **kw) -> ExportStats:
    fast = export_perfetto(trace_dir, tmp_path / "fast.pftrace", **kw)
    slow = export_perfetto(trace_dir, tmp_path / "sort.pftrace", reorder_rows=0,
                           **{k: v for k, v in kw.items() if k != "reorder_rows"})
    assert (fast.order, slow.order) == (order, pf.EXTERNAL_SORT)
    assert bool(fast.read_order_refused) == (order == pf.EXTERNAL_SORT)
    ev_fast, rest_fast = _per_cpu(tmp_path / "fast.pftrace")
    ev_slow, rest_slow = _per_cpu(tmp_path / "sort.pftrace")
    assert ev_fast == ev_slow
    assert rest_fast == rest_slow  # each CPU's bundles byte for byte, in the same order
    for name in ("sched_switch", "sched_waking", "cpu_frequency", "compact_events", "bundles",
                 "threads", "processes", "packets", "cpus", "skipped_wakeups"):
        assert getattr(fast, name) == getattr(slow, name), name
    return fast


@pytest.mark.parametrize("bundle_events", [pf.DEFAULT_BUNDLE_EVENTS, 2])
def test_read_order_matches_the_sort_on_the_schedule(tmp_path, bundle_events):
    # schedule_trace shuffles the switch rows: all in one batch, the window's
    # local sort puts them in order.
    stats = _assert_same_as_sorted(schedule_trace(tmp_path / "t"), tmp_path, pf.READ_ORDER,
                                   bundle_events=bundle_events)
    assert "sorted" not in stats.describe()


def test_read_order_gives_way_to_the_sort_when_rows_come_too_late(tmp_path):
    # Batches of 2 rows and a window of 1: the schedule's rows are not in
    # time order, and a row comes after later events of its CPU were written.
    stats = _assert_same_as_sorted(schedule_trace(tmp_path / "t"), tmp_path, pf.EXTERNAL_SORT,
                                   batch_rows=2, reorder_rows=1)
    assert stats.read_order_refused.startswith("switches.parquet row ")
    assert "comes after cpu" in stats.read_order_refused
    assert "sorted, the input being out of time order" in stats.describe()


def _collected_like(path: Path, n: int, shuffle: int, late: int = 0, seed: int = 1) -> Path:
    """Switches and wakeups in time order over 4 CPUs, as the collector
    writes them, then each run of ``shuffle`` rows permuted (CPUs' events
    meeting in one ring) and, with ``late``, one row moved ``late`` rows on."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    ncpu = 4
    cpu = rng.integers(0, ncpu, n).astype(np.int32)
    ts = BASE + np.cumsum(rng.integers(0, 3, n)).astype(np.int64) * 100  # with equal times
    pids = rng.integers(1000, 1050, n).astype(np.int32)
    prev = np.zeros(n, dtype=np.int32)
    for c in range(ncpu):
        rows = np.flatnonzero(cpu == c)
        prev[rows[1:]] = pids[rows[:-1]]
    name = lambda p: np.array([f"w{x}" if x else "swapper" for x in p], dtype=object)  # noqa: E731
    order = np.arange(n)
    if shuffle > 1:
        for lo in range(0, n, shuffle):
            order[lo:lo + shuffle] = rng.permutation(order[lo:lo + shuffle])
    # Keep each CPU's rows in order (the ring gives that): re-sort within CPU.
    for c in range(ncpu):
        at = np.flatnonzero(cpu[order] == c)
        order[at] = np.sort(order[at])
    if late:
        i = n // 3
        order = np.concatenate((order[:i], order[i + 1:i + 1 + late], [order[i]], order[i + 1 + late:]))
    sw = pd.DataFrame({
        "ts_ns": ts, "cpu": cpu, "prev_pid": prev, "prev_tgid": prev, "prev_comm": name(prev),
        "prev_prio": np.full(n, 120, np.int32), "prev_state": rng.choice([0, 1, 256], n),
        "next_pid": pids, "next_tgid": pids, "next_comm": name(pids),
        "next_prio": np.full(n, 120, np.int32), "next_wait_ns": np.zeros(n, np.int64)}).iloc[order]
    m = n // 4
    wk_ts = np.sort(rng.choice(ts, m))  # some at a switch's very time
    who = rng.integers(1000, 1050, m).astype(np.int32)
    wk = pd.DataFrame({"ts_ns": wk_ts, "pid": who, "tgid": who, "comm": name(who),
                       "target_cpu": rng.integers(0, ncpu, m).astype(np.int32),
                       "prev_cpu": rng.integers(0, ncpu, m).astype(np.int32),
                       "waker_cpu": rng.integers(0, ncpu, m).astype(np.int32),
                       "weight": np.full(m, 1024 << 10, np.int32)})
    with TraceWriter(path, {"kernel": {"release": "6.12.0"}}) as w:
        w.append_frame("switches", sw)
        w.append_frame("wakeups", wk)
    return path


def test_read_order_with_slight_disorder_within_the_window(tmp_path):
    trace_dir = _collected_like(tmp_path / "t", 4_000, shuffle=7)
    import pyarrow.parquet as pq
    ts = pq.read_table(trace_dir / "switches.parquet", columns=["ts_ns"]).column(0).to_numpy()
    assert (np.diff(ts) < 0).any()  # really out of order across CPUs
    stats = _assert_same_as_sorted(trace_dir, tmp_path, pf.READ_ORDER,
                                   bundle_events=100, batch_rows=500, reorder_rows=16)
    assert stats.sched_switch == 4_000 and stats.sched_waking == 1_000
    # The window is what absorbs it: with none, a wakeup on a CPU is written
    # before a switch of that CPU that comes first in time but later in the file.
    narrow = export_perfetto(trace_dir, tmp_path / "narrow.pftrace", bundle_events=100,
                             batch_rows=500, reorder_rows=1)
    assert narrow.order == pf.EXTERNAL_SORT


def test_read_order_row_later_than_the_window_falls_back(tmp_path):
    # One row of a CPU written 1000 rows late: its CPU has moved on by then.
    trace_dir = _collected_like(tmp_path / "t", 4_000, shuffle=1, late=1000)
    stats = _assert_same_as_sorted(trace_dir, tmp_path, pf.EXTERNAL_SORT,
                                   bundle_events=100, batch_rows=500, reorder_rows=16)
    assert "switches.parquet row 2333 (cpu " in stats.read_order_refused  # where it was written


def test_read_order_holds_a_cpu_until_its_first_switch(tmp_path):
    # CPU 2 has wakeups and a frequency long before its first switch: their
    # FtraceEvent.pid is that switch's prev task, in both paths.
    rows = switch_rows()
    for r in rows:
        if r["cpu"] == 2:
            r["ts_ns"] += 50_000
    with TraceWriter(tmp_path / "t", META) as w:
        w.append("switches", sorted(rows, key=lambda r: r["ts_ns"]))
        w.append("wakeups", [{"ts_ns": BASE + 900 + i, "pid": 100, "tgid": 100, "comm": None,
                              "target_cpu": 2, "prev_cpu": 2, "waker_cpu": 2, "weight": 1024}
                             for i in range(50)])
    stats = _assert_same_as_sorted(tmp_path / "t", tmp_path, pf.READ_ORDER,
                                   bundle_events=4, batch_rows=3, reorder_rows=1)
    _, trace = decode(tmp_path / "fast.pftrace")
    full = [e for e in ftrace_events(trace)[2] if e.kind == "sched_waking"]
    assert len(full) == 50 and {e.pid for e in full} == {0} and not any(e.compact for e in full)
    assert stats.sched_waking == 50


def test_cli(tmp_path):
    from click.testing import CliRunner

    from aios_lab.cli import main

    out = tmp_path / "o.pftrace"
    res = CliRunner().invoke(main, ["export", "perfetto", str(schedule_trace(tmp_path / "t")), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"perfetto trace written: {out} (") and out.stat().st_size > 0
    res = CliRunner().invoke(main, ["export", "perfetto", str(schedule_trace(tmp_path / "u", switches=False)),
                                    "-o", str(tmp_path / "p.pftrace")])
    assert res.exit_code == 3 and res.output.count("\n") == 1
    assert res.output.startswith("Error: trace ") and "no sched_switch events" in res.output
