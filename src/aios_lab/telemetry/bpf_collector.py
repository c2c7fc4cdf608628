"""Scheduler telemetry from BPF: per-interval task/CPU rows and event streams.

Loads bpf/telemetry.bpf.o (tp_btf programs; see the block comment there for
what is recorded and what is not) and turns its cumulative maps into the
per-interval rows of telemetry.schema, and its ring buffers into migration
and wakeup rows. Record layouts come from the object's BTF, never from
hand-written Python declarations.

Interval semantics. snapshot() diffs the cumulative counters against the
previous snapshot: a pid seen for the first time (or a reused pid, told apart
by its start time) counts from zero; a run or idle stretch still in progress
is included up to the moment of the read, so a task that has not been
switched out still shows its CPU time. Only tasks with activity in the
interval get a row.

Exited tasks. The BPF side marks an entry final at sched_process_free, which
the kernel fires after the task's last switch-out. snapshot() delivers that
entry's last delta and then deletes it, so its data lands in exactly one
interval and the map does not fill up with the dead. Nothing is deleted in
BPF, so no interval data is lost to a deletion user space has not seen.
"""
from __future__ import annotations

import os
import select
import struct
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import build, paths
from ..bpf import Btf, BpfObject, Map, RingArray, RingBuffer, bulk_supported, num_possible_cpus, require_root
from ..bpf.loader import LiveObject, LoadSpec, load
from ..errors import BpfError, BpfMapError
from .topology import CpuTopology

PROGRAMS = ("tel_switch", "tel_wakeup", "tel_wakeup_new", "tel_migrate", "tel_exit", "tel_free")
RINGS = {"migrations": "migration_ring", "wakeups": "wakeup_ring", "switches": "switch_ring"}
SWITCH_RING_SCALE = 4           # switch_ring is this many times ringbuf_pages (16 MiB by default)
WINDOW_NS = 1 << 24             # AIOS_WINDOW_SHIFT: the sampled streams' window (checked against BTF)
STREAMS = ("switches", "wakeups")  # enum aios_stream_kind order (checked against BTF)
EXITED = 2                      # enum aios_task_flag AIOS_TASK_EXITED (checked against BTF)
_INT32_MAX = 2**31 - 1


def object_path():
    return build.object_path(paths.project_root() / "bpf" / "telemetry.bpf.c")


def kernel_keeps_waits(btf_path=build.HOST_BTF) -> bool:
    """Whether the running kernel keeps per-task run-queue waits itself
    (task_struct.sched_info: CONFIG_SCHED_INFO, set by SCHEDSTATS or
    TASK_DELAY_ACCT, as in Debian's and Fedora's kernels) and the switch
    program can reach the rq clock they are kept in (sched_entity.cfs_rq:
    CONFIG_FAIR_GROUP_SCHED). With both the collector reads each wait at the
    switch-in and needs no hook on every wakeup; otherwise (or without
    kernel BTF) it times waits from the sched_wakeup tracepoints."""
    try:
        btf = Btf.parse(btf_path)
    except BpfError:
        return False
    try:
        return btf.has_member("task_struct", "sched_info") and btf.has_member("sched_entity", "cfs_rq")
    finally:
        btf.close()


def _nullable(v: np.ndarray, dtype: str):
    """BPF's -1 ("unknown") -> null, as a pandas nullable integer array."""
    unknown = v < 0
    return pd.arrays.IntegerArray(np.where(unknown, 0, v).astype(dtype.lower()), unknown)


def _comm(c: np.ndarray):
    """char comm[16] fields -> a string column, cut at the first NUL (bytes
    after it may be whatever the ring slot held before).

    Built as one Arrow array: pandas 3 turned a column of Python str into
    its Arrow string type one element at a time, most of the collector's CPU
    time (1.2 s of 0.5 s CPU-seconds per hackbench run, profiled)."""
    if not len(c):
        return pd.arrays.ArrowStringArray(pa.array([], type=pa.string()))
    u = np.ascontiguousarray(c).view(np.uint8).reshape(len(c), -1)
    nul = u == 0
    first = np.where(nul.any(axis=1), nul.argmax(axis=1), u.shape[1])
    u = np.where(np.arange(u.shape[1])[None, :] >= first[:, None], 0, u).astype(np.uint8)
    fixed = np.ascontiguousarray(u).view(f"S{u.shape[1]}").reshape(-1)  # trailing NULs drop here
    try:
        arr = pa.array(fixed).cast(pa.string())
    except pa.ArrowInvalid:     # a name that is not UTF-8 (prctl takes any bytes)
        arr = pa.array([b.decode("utf-8", "replace") for b in fixed.tolist()], type=pa.string())
    return pd.arrays.ArrowStringArray(arr)


def _is_na(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


class BpfCollector:
    """Load, attach and read the telemetry BPF object (root only).

    stream_budget: records per second per CPU that the switch and wakeup
    streams each keep at most; above it they are sampled by whole windows
    (bpf/telemetry.bpf.c, "Sampled streams"), every record carrying the
    number of events it stands for. None records every event.

    kernel_waits: read run-queue waits from the kernel's sched_info at each
    switch-in (no hook on sched_wakeup unless the wakeup stream is kept);
    None uses it wherever the running kernel has it (kernel_keeps_waits),
    False times waits from the wakeup tracepoints on any kernel. Resolved
    at start() (reading the kernel's BTF), where it becomes a bool."""

    # Records per ring per poll() on the libbpf callback path (CPUs without
    # bulk reads): under a flood an unbounded consume never returns.
    POLL_BUDGET = 65536

    def __init__(self, wakeup_events: bool = True, ringbuf_pages: int = 1024,
                 max_tasks: int = 16384, topology: CpuTopology | None = None, wakeup_sample: int = 1,
                 switch_events: bool = False, stream_budget: int | None = None,
                 kernel_waits: bool | None = None) -> None:
        if ringbuf_pages < 1 or ringbuf_pages & (ringbuf_pages - 1):
            raise ValueError(f"ringbuf_pages must be a power of two, got {ringbuf_pages}")
        if wakeup_sample < 1:
            raise ValueError(f"wakeup_sample must be >= 1, got {wakeup_sample}")
        if stream_budget is not None and stream_budget < 1:
            raise ValueError(f"stream_budget must be >= 1 record/s, got {stream_budget}")
        self.wakeup_events = wakeup_events
        self.wakeup_sample = wakeup_sample
        self.switch_events = switch_events
        self.stream_budget = stream_budget
        self.kernel_waits = kernel_waits
        self.ringbuf_pages = ringbuf_pages
        self.max_tasks = max_tasks
        self.topology = topology or CpuTopology.read()
        self.obj: BpfObject | None = None
        self._loaded: LiveObject | None = None
        self._rings: dict[str, RingArray | RingBuffer] = {}
        self._epoll = None
        self._raw: dict[str, list] = {"migrations": [], "wakeups": [], "switches": []}
        self._topo_arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._prev_tasks: dict[str, np.ndarray] = {}   # the last snapshot's counters, by pid (_task_rows)
        self._prev_cpus: dict[int, tuple] = {}
        self._epoch = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        require_root("the BPF telemetry collector")
        if self.obj is not None:
            return
        page = os.sysconf("SC_PAGE_SIZE")
        ring_bytes = self.ringbuf_pages * page
        # Switches outnumber the other events (about 2 per wakeup under
        # hackbench) and arrive in bursts the reader is woken late for.
        switch_bytes = ring_bytes * SWITCH_RING_SCALE if self.switch_events else page
        if self.kernel_waits is None:
            self.kernel_waits = kernel_keeps_waits()
        # Every wakeup must be seen only to start the wait clock, which the
        # kernel's sched_info makes unnecessary.
        programs = tuple(p for p in PROGRAMS if p != "tel_wakeup" or self.wakeup_events
                         or not self.kernel_waits)
        spec = LoadSpec(object_path(), programs=programs, rodata={
            "wakeup_events": bool(self.wakeup_events),
            "kernel_waits": bool(self.kernel_waits),
            "ignore_tgid": os.getpid(),
            "wakeup_sample": int(self.wakeup_sample),
            "switch_events": bool(self.switch_events),
            # records/s -> records per window, at least one
            "stream_budget": 0 if self.stream_budget is None else
                             max(1, self.stream_budget * WINDOW_NS // 1_000_000_000),
        }, max_entries={
            **{ring: switch_bytes if ring == "switch_ring" else ring_bytes for ring in RINGS.values()},
            "task_stats": self.max_tasks,
            "cpu_stats": num_possible_cpus(),
        })
        try:
            live = load(spec, before_attach=self._bind)
        except BaseException:
            self._close_rings()
            raise
        self._loaded, self.obj = live, live.obj

    def _bind(self, obj: BpfObject) -> None:
        """After load, before the programs attach: layouts from BTF, maps, rings."""
        btf = obj.btf
        self._task_t = btf.ctypes_type("aios_task_stats")
        self._task_dt = np.dtype(self._task_t)
        self._cpu_t = btf.ctypes_type("aios_cpu_stats")
        self._mig_t = btf.ctypes_type("aios_migration_event")
        self._wake_t = btf.ctypes_type("aios_wakeup_event")
        self._switch_t = btf.ctypes_type("aios_switch_event")
        if btf.enum("aios_task_flag")["AIOS_TASK_EXITED"] != EXITED:
            raise BpfError("enum aios_task_flag changed: update EXITED")
        kinds = btf.enum("aios_stream_kind")
        if [kinds[f"AIOS_STREAM_{s.upper()}"] for s in STREAMS] != list(range(len(STREAMS))):
            raise BpfError("enum aios_stream_kind changed: update STREAMS")
        self._drop_names = {i: n.removeprefix("AIOS_DROP_").lower()
                            for n, i in btf.enum("aios_telemetry_drop").items()
                            if not n.startswith("AIOS_NR")}
        self._tasks: Map = obj.map("task_stats")
        self._cpus: Map = obj.map("cpu_stats")
        self._drops: Map = obj.map("drops")
        self._epoch_map: Map = obj.map("epoch")
        self._dtypes = {"migrations": np.dtype(self._mig_t), "wakeups": np.dtype(self._wake_t),
                        "switches": np.dtype(self._switch_t)}
        self._epoll = select.epoll()
        for table, ring in RINGS.items():
            m = obj.map(ring)
            self._rings[table] = (RingArray(m, self._dtypes[table]) if bulk_supported()
                                  else RingBuffer(m, self._raw[table].append))
            # Edge-triggered: woken only when BPF forces a wakeup (a ring a
            # quarter full), not whenever a record is waiting.
            self._epoll.register(m.fd, select.EPOLLIN | select.EPOLLET)

    def _close_rings(self) -> None:
        rings, self._rings = self._rings, {}
        for rb in rings.values():
            rb.close()
        ep, self._epoll = self._epoll, None
        if ep is not None:
            ep.close()

    def close(self) -> None:
        """Detach and free everything; idempotent."""
        self._close_rings()
        live, self._loaded, self.obj = self._loaded, None, None
        if live is not None:
            live.close()

    def __enter__(self) -> "BpfCollector":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def now_ns() -> int:
        """CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns and of every ts column."""
        return time.monotonic_ns()

    def _live(self) -> BpfObject:
        if self.obj is None:
            raise BpfError("the telemetry collector is not started", hint="call start() first")
        return self.obj

    # -- event streams ---------------------------------------------------------------

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms (less if a ring fills to a quarter), then
        drain every ring; returns records consumed."""
        self._live()
        if timeout_ms > 0:
            try:
                self._epoll.poll(timeout_ms / 1000.0)
            except InterruptedError:
                pass
        n = 0
        for table, rb in self._rings.items():
            if isinstance(rb, RingArray):
                a = rb.read()
                if len(a):
                    self._raw[table].append(a)
                n += len(a)
            else:
                n += rb.consume(max_records=self.POLL_BUDGET)
        return n

    def pending_bytes(self) -> int:
        """Bytes of raw records drained by poll() and not yet taken."""
        return sum(len(r) if isinstance(r, bytes) else r.nbytes for raws in self._raw.values() for r in raws)

    def take_event_frames(self) -> dict[str, "pd.DataFrame"]:
        """Events drained since the last call, decoded in one numpy pass per
        ring: {"migrations": DataFrame, "wakeups": DataFrame} in schema columns.

        poll() keeps whole arrays (bulk reads) or each record's bytes (the
        callback path); decoding record by record in Python cost ~10 us
        each, the largest share of the collector's CPU time under a wakeup
        flood (benchmarks/RESULTS.md)."""
        out = {}
        for table, raws in self._raw.items():
            if not raws:
                out[table] = None
                continue
            dt = self._dtypes[table]
            if isinstance(raws[0], bytes):
                a = np.frombuffer(b"".join(r[:dt.itemsize] for r in raws), dtype=dt)
            else:
                a = np.concatenate(raws) if len(raws) > 1 else raws[0]
            raws.clear()
            decode = {"migrations": self._decode_migrations, "wakeups": self._decode_wakeups,
                      "switches": self._decode_switches}[table]
            out[table] = decode(a)
        return out

    def take_events(self) -> dict[str, list[dict]]:
        """take_event_frames() as lists of row dicts (None for unknown values)."""
        out: dict[str, list[dict]] = {}
        for table, df in self.take_event_frames().items():
            out[table] = [] if df is None else [
                {k: (None if _is_na(v) else v) for k, v in row.items()} for row in df.to_dict("records")]
        return out

    def _topology_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._topo_arrays is None:
            n = max(self.topology.cpus + [0]) + 1
            llc = np.full(n + 1, -1, dtype=np.int64)
            node = np.full(n + 1, -1, dtype=np.int64)
            for c, v in self.topology.llc.items():
                llc[c] = v
            for c, v in self.topology.node.items():
                node[c] = v
            self._topo_arrays = (llc, node)
        return self._topo_arrays

    @staticmethod
    def _same(ids: np.ndarray, a: np.ndarray, b: np.ndarray):
        """same_llc/same_node per row; null where sysfs said nothing about a CPU."""
        n = len(ids) - 1  # ids[n] is -1: out-of-range CPUs land there
        ia = ids[np.where((a >= 0) & (a < n), a, n)]
        ib = ids[np.where((b >= 0) & (b < n), b, n)]
        return pd.arrays.BooleanArray(ia == ib, (ia < 0) | (ib < 0))

    def _decode_migrations(self, a: np.ndarray) -> "pd.DataFrame":
        llc, node = self._topology_arrays()
        src, dst = a["src_cpu"].astype(np.int64), a["dst_cpu"].astype(np.int64)
        return pd.DataFrame({
            "ts_ns": a["ts_ns"].astype(np.int64), "pid": a["pid"].astype(np.int32),
            "tgid": a["tgid"].astype(np.int32), "comm": _comm(a["comm"]),
            "src_cpu": src.astype(np.int32), "dst_cpu": dst.astype(np.int32),
            "src_nr_running": _nullable(a["src_nr_running"], "Int32"),
            "dst_nr_running": _nullable(a["dst_nr_running"], "Int32"),
            "src_load": _nullable(a["src_load"], "Int64"), "dst_load": _nullable(a["dst_load"], "Int64"),
            "same_llc": self._same(llc, src, dst), "same_node": self._same(node, src, dst),
            "runtime_ns": _nullable(a["runtime_ns"], "Int64"),
            "since_last_ran_ns": _nullable(a["since_last_ran_ns"], "Int64"),
            "weight": np.minimum(a["weight"], _INT32_MAX).astype(np.int32),
            "nr_migrations": a["nr_migrations"].astype(np.int64),
        })

    def _decode_wakeups(self, a: np.ndarray) -> "pd.DataFrame":
        return pd.DataFrame({
            "ts_ns": a["ts_ns"].astype(np.int64), "pid": a["pid"].astype(np.int32),
            "tgid": a["tgid"].astype(np.int32), "comm": _comm(a["comm"]),
            "target_cpu": a["target_cpu"].astype(np.int32), "prev_cpu": _nullable(a["prev_cpu"], "Int32"),
            "waker_cpu": a["waker_cpu"].astype(np.int32),
            "target_nr_running": _nullable(a["target_nr_running"], "Int32"),
            "since_last_ran_ns": _nullable(a["since_last_ran_ns"], "Int64"),
            "weight": np.minimum(a["weight"], _INT32_MAX).astype(np.int32),
            "sample_weight": a["sample_weight"].astype(np.int32),
        })

    @staticmethod
    def _decode_switches(a: np.ndarray) -> "pd.DataFrame":
        return pd.DataFrame({
            "ts_ns": a["ts_ns"].astype(np.int64), "cpu": a["cpu"].astype(np.int32),
            "prev_pid": a["prev_pid"].astype(np.int32), "prev_tgid": a["prev_tgid"].astype(np.int32),
            "prev_comm": _comm(a["prev_comm"]), "prev_prio": a["prev_prio"].astype(np.int32),
            "prev_state": a["prev_state"].astype(np.int64),
            "next_pid": a["next_pid"].astype(np.int32), "next_tgid": a["next_tgid"].astype(np.int32),
            "next_comm": _comm(a["next_comm"]), "next_prio": a["next_prio"].astype(np.int32),
            "next_wait_ns": _nullable(a["next_wait_ns"], "Int64"),
            "sample_weight": a["sample_weight"].astype(np.int32),
        })

    # -- interval tables -------------------------------------------------------------

    @staticmethod
    def _read_all(m: Map) -> list[tuple[bytes, bytes]]:
        try:
            return m.lookup_batch()  # one syscall per 256 entries
        except BpfMapError:
            return list(m.items())  # kernels without batch ops for this map type

    def _bump_epoch(self) -> int:
        """Start a new max-epoch; returns the one that just ended."""
        ended, self._epoch = self._epoch, self._epoch + 1
        self._epoch_map.update(struct.pack("=I", 0), struct.pack("=I", self._epoch & 0xFFFFFFFF))
        return ended & 0xFFFFFFFF

    def snapshot(self, interval_start_ns: int, interval_end_ns: int) -> dict:
        """Per-interval deltas: {"task_intervals": an Arrow table of that
        schema (hundreds of rows: built from columns), "cpu_intervals": [row
        dicts]}."""
        self._live()
        ended = self._bump_epoch()
        now = self.now_ns()
        cpu_raw = self._read_all(self._cpus)
        cpus = self._cpu_rows(cpu_raw, interval_start_ns, interval_end_ns, ended, now)
        # Who each CPU runs now, per our last seen switch: only those tasks
        # get their run in progress credited (a task that left unseen does not).
        running = {}
        for key, raw in cpu_raw:
            c = self._cpu_t.from_buffer_copy(raw)
            if c.last_switch_ns and c.curr_pid:
                running[int(c.curr_pid)] = struct.unpack("=I", key)[0]
        tasks = self._task_rows(interval_start_ns, interval_end_ns, ended, now, running)
        return {"task_intervals": tasks, "cpu_intervals": cpus}

    # The cumulative per-task counters an interval row is the delta of, in order.
    _TASK_CUM = ("oncpu_ns", "wait_ns", "wait_count", "wakeups", "voluntary_switches", "involuntary_switches",
                 "migrations")

    def _task_rows(self, start: int, end: int, ended: int, now: int,
                   running_on: dict[int, int]) -> pa.Table:
        """Per-task deltas since the last snapshot, in numpy over the whole
        map: done per task through ctypes, the snapshot was the collector's
        largest CPU cost once decoding the rings was batched (~15 ms per
        interval for ~800 tasks under hackbench, on the workload's cores)."""
        entries = self._read_all(self._tasks)
        if not entries:
            self._prev_tasks = {}
            return self._task_table(np.zeros(0, dtype=self._task_dt), np.zeros((0, len(self._TASK_CUM)), np.int64),
                                    np.zeros((0, 1), np.int64), start, end, ended)
        a = np.frombuffer(b"".join(v[:self._task_dt.itemsize] for _, v in entries), dtype=self._task_dt)
        exited = (a["flags"] & EXITED) != 0
        if exited.any():
            # Their last counts are in `a`: delete them now, in one call. A
            # pid taken by a new task between the read and this delete would
            # lose that task's first counts; the kernel hands out pids
            # cyclically, so that needs all of pid_max (>= 32768) forked in
            # the milliseconds between, which cannot happen.
            self._tasks.delete_batch([entries[i][0] for i in np.flatnonzero(exited)])
        pid = a["pid"].astype(np.int64)
        start_ns = a["start_ns"].astype(np.int64)
        last_cpu = a["last_cpu"].astype(np.int64)
        since = a["oncpu_since_ns"].astype(np.int64)
        # A run in progress is credited only to the task its CPU's last seen
        # switch put there (a task that left unseen is not).
        running = np.zeros(len(a), dtype=np.int64)
        for rpid, rcpu in running_on.items():
            hit = (pid == rpid) & (last_cpu == rcpu) & (since > 0) & (now > since)
            running[hit] = now - since[hit]
        cum = np.stack([a[f].astype(np.int64) for f in self._TASK_CUM], axis=1)
        cum[:, 0] += running
        hist = a["wait_hist"].astype(np.int64)
        prev = self._prev_tasks     # {"pid", "start", "cum", "hist"}: sorted by pid
        pcum, phist = np.zeros_like(cum), np.zeros_like(hist)
        if prev:
            j = np.minimum(np.searchsorted(prev["pid"], pid), len(prev["pid"]) - 1)
            same = (prev["pid"][j] == pid) & (prev["start"][j] == start_ns)
            pcum[same], phist[same] = prev["cum"][j[same]], prev["hist"][j[same]]
        d = np.maximum(0, cum - pcum)
        dhist = (hist - phist) & 0xFFFFFFFF     # u32 buckets wrap
        keep = ~exited
        order = np.argsort(pid[keep], kind="stable")
        self._prev_tasks = {"pid": pid[keep][order], "start": start_ns[keep][order],
                            "cum": cum[keep][order], "hist": hist[keep][order]}
        return self._task_table(a, d, dhist, start, end, ended)

    @staticmethod
    def _quantile_bound(dhist: np.ndarray, q: float) -> np.ndarray:
        """Per row: the upper bound of the log2 bucket holding quantile q
        (bucket i: < 2^(i+1) ns), -1 where the row has no waits."""
        cs = np.cumsum(dhist, axis=1)
        total = cs[:, -1]
        i = np.argmax(cs >= (q * total)[:, None], axis=1)
        return np.where(total > 0, np.left_shift(2, i, dtype=np.int64), -1)

    def _task_table(self, a: np.ndarray, d: np.ndarray, dhist: np.ndarray, start: int, end: int,
                    ended: int) -> pa.Table:
        """task_intervals rows (an Arrow table of its schema, built from the
        columns: no Python object per task) of the tasks that did anything."""
        from .schema import TASK_INTERVALS

        sel = np.flatnonzero(d.any(axis=1))
        a, d, dhist = a[sel], d[sel], dhist[sel]
        n = len(a)
        slot = ended & 1
        wmax = np.where(a["wait_max_epoch"][:, slot] == ended, a["wait_max_ns"][:, slot].astype(np.int64), 0)
        last_cpu = a["last_cpu"].astype(np.int32)

        def col(v: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
            return pa.array(v, mask=null)

        hist = pa.ListArray.from_arrays(pa.array(np.arange(0, n + 1, dtype=np.int32) * dhist.shape[1]),
                                        pa.array(dhist.astype(np.uint32).reshape(-1)))
        p50, p99 = self._quantile_bound(dhist, 0.5), self._quantile_bound(dhist, 0.99)
        cols = {
            "interval_start_ns": pa.array(np.full(n, start, dtype=np.int64)),
            "interval_end_ns": pa.array(np.full(n, end, dtype=np.int64)),
            "pid": col(a["pid"].astype(np.int32)), "tgid": col(a["tgid"].astype(np.int32)),
            "comm": pa.array(_comm(a["comm"])), "cgroup_id": col(a["cgroup_id"].astype(np.uint64)),
            "oncpu_ns": col(d[:, 0]), "wait_ns": col(d[:, 1]), "wait_count": col(d[:, 2]),
            "wait_p50_ns": col(p50, p50 < 0), "wait_p99_ns": col(p99, p99 < 0),
            "wait_max_ns": col(wmax, d[:, 2] == 0), "wait_hist": hist, "wakeups": col(d[:, 3]),
            "voluntary_switches": col(d[:, 4]), "involuntary_switches": col(d[:, 5]), "migrations": col(d[:, 6]),
            "last_cpu": col(last_cpu, last_cpu < 0),
            "weight": col(np.minimum(a["weight"], _INT32_MAX).astype(np.int32)),
            "nice": col(a["nice"].astype(np.int32)),
        }
        return pa.Table.from_arrays([cols[f.name] for f in TASK_INTERVALS], schema=TASK_INTERVALS)

    def _cpu_rows(self, entries: list[tuple[bytes, bytes]], start: int, end: int, ended: int,
                  now: int) -> list[dict]:
        rows: list[dict] = []
        slot = ended & 1
        online = set(self.topology.cpus) or None
        for key, raw in entries:
            cpu = struct.unpack("=I", key)[0]
            if online is not None and cpu not in online:
                continue
            c = self._cpu_t.from_buffer_copy(raw)
            busy, idle = int(c.busy_ns), int(c.idle_ns)
            if c.last_switch_ns and now > c.last_switch_ns:
                # The stretch in progress, split by what runs now.
                if c.curr_pid:
                    busy += now - c.last_switch_ns
                else:
                    idle += now - c.last_switch_ns
            cum = (busy, idle, c.switches, c.migrations_in, c.migrations_out,
                   c.rq_len_samples, c.rq_len_sum, c.stream[0].recorded, c.stream[1].seen,
                   c.stream[1].recorded)
            prev = self._prev_cpus.get(cpu, (0,) * len(cum))
            self._prev_cpus[cpu] = cum
            d = [max(0, a - b) for a, b in zip(cum, prev)]
            rq_max = int(c.rq_len_max[slot]) if c.rq_max_epoch[slot] == ended and d[5] else None
            rows.append({
                "interval_start_ns": start, "interval_end_ns": end, "cpu": cpu,
                "busy_ns": d[0], "idle_ns": d[1], "switches": d[2], "migrations_in": d[3],
                "migrations_out": d[4], "rq_len_samples": d[5],
                "rq_len_mean": d[6] / d[5] if d[5] else None, "rq_len_max": rq_max,
                "freq_khz": None,   # the caller fills it from cpufreq sysfs
                # what the sampled streams kept (a stream that is off keeps 0)
                "switch_records": d[7] if self.switch_events else None,
                "wakeup_events": d[8] if self.wakeup_events else None,
                "wakeup_records": d[9] if self.wakeup_events else None,
            })
        return rows

    def run_time(self) -> dict[str, int]:
        """Runs and nanoseconds of all our programs so far, as the kernel counts
        them while kernel.bpf_stats_enabled is 1 (zeros otherwise)."""
        obj = self._live()
        out = {"runs": 0, "ns": 0}
        for name in PROGRAMS:
            st = obj.program(name).run_stats()
            out["runs"] += st["run_cnt"]
            out["ns"] += st["run_time_ns"]
        return out

    # -- loss ------------------------------------------------------------------------------

    def lost(self) -> dict[str, int]:
        """What the BPF side could not record, by cause (enum aios_telemetry_drop):
        {"migration_ring", "wakeup_ring", "task_map_full", "unpaired_switch", "switch_ring"}."""
        self._live()
        return {name: self._drops.sum_percpu_u64(struct.pack("=I", idx))
                for idx, name in sorted(self._drop_names.items())}


__all__ = ["BpfCollector", "PROGRAMS", "object_path"]
