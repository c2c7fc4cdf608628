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

from .. import build, paths
from ..bpf import BpfObject, Map, RingArray, RingBuffer, bulk_supported, num_possible_cpus, require_root
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
    import pyarrow as pa

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


def _neg_none(v: int) -> int | None:
    """BPF uses -1 for "unknown"; the schema uses null."""
    return None if v < 0 else int(v)


def _bucket_bound(hist: list[int], q: float) -> int | None:
    """Upper bound of the log2 bucket holding quantile q (bucket i: < 2^(i+1) ns)."""
    total = sum(hist)
    if not total:
        return None
    need, seen = q * total, 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= need:
            return 1 << (i + 1)
    return 1 << len(hist)


class BpfCollector:
    """Load, attach and read the telemetry BPF object (root only).

    stream_budget: records per second per CPU that the switch and wakeup
    streams each keep at most; above it they are sampled by whole windows
    (bpf/telemetry.bpf.c, "Sampled streams"), every record carrying the
    number of events it stands for. None records every event."""

    # Records per ring per poll() on the libbpf callback path (CPUs without
    # bulk reads): under a flood an unbounded consume never returns.
    POLL_BUDGET = 65536

    def __init__(self, wakeup_events: bool = True, ringbuf_pages: int = 1024,
                 max_tasks: int = 16384, topology: CpuTopology | None = None, wakeup_sample: int = 1,
                 switch_events: bool = False, stream_budget: int | None = None) -> None:
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
        self.ringbuf_pages = ringbuf_pages
        self.max_tasks = max_tasks
        self.topology = topology or CpuTopology.read()
        self.obj: BpfObject | None = None
        self._loaded: LiveObject | None = None
        self._rings: dict[str, RingArray | RingBuffer] = {}
        self._epoll = None
        self._raw: dict[str, list] = {"migrations": [], "wakeups": [], "switches": []}
        self._topo_arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._prev_tasks: dict[int, tuple] = {}    # pid -> (start_ns, cumulative counters)
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
        spec = LoadSpec(object_path(), programs=PROGRAMS, rodata={
            "wakeup_events": bool(self.wakeup_events),
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

    def pending_events(self) -> int:
        """Records drained by poll() and not yet taken."""
        return sum(len(r) if not isinstance(r, bytes) else 1 for raws in self._raw.values() for r in raws)

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

    def snapshot(self, interval_start_ns: int, interval_end_ns: int) -> dict[str, list[dict]]:
        """Per-interval deltas: {"task_intervals": [...], "cpu_intervals": [...]}."""
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

    def _task_rows(self, start: int, end: int, ended: int, now: int,
                   running_on: dict[int, int]) -> list[dict]:
        rows: list[dict] = []
        seen: set[int] = set()
        final: list[tuple[bytes, int]] = []
        slot = ended & 1
        for key, raw in self._read_all(self._tasks):
            t = self._task_t.from_buffer_copy(raw)
            pid = int(t.pid)
            running = 0
            if t.oncpu_since_ns and now > t.oncpu_since_ns and running_on.get(pid) == t.last_cpu:
                running = now - t.oncpu_since_ns
            cum = (t.oncpu_ns + running, t.wait_ns, t.wait_count, t.wakeups,
                   t.voluntary_switches, t.involuntary_switches, t.migrations)
            hist = list(t.wait_hist)
            prev = self._prev_tasks.get(pid)
            if prev is None or prev[0] != t.start_ns:
                prev = (t.start_ns, (0,) * len(cum), [0] * len(hist))
            d = [max(0, c - p) for c, p in zip(cum, prev[1])]
            dhist = [(c - p) & 0xFFFFFFFF for c, p in zip(hist, prev[2])]
            seen.add(pid)
            if t.flags & EXITED:
                final.append((key, int(t.start_ns)))
                self._prev_tasks.pop(pid, None)
            else:
                self._prev_tasks[pid] = (t.start_ns, cum, hist)
            if not any(d):
                continue
            wmax = int(t.wait_max_ns[slot]) if t.wait_max_epoch[slot] == ended else 0
            rows.append({
                "interval_start_ns": start, "interval_end_ns": end, "pid": pid,
                "tgid": int(t.tgid), "comm": t.comm.decode(errors="replace"),
                "cgroup_id": int(t.cgroup_id), "oncpu_ns": d[0], "wait_ns": d[1],
                "wait_count": d[2], "wait_p50_ns": _bucket_bound(dhist, 0.5),
                "wait_p99_ns": _bucket_bound(dhist, 0.99), "wait_max_ns": wmax if d[2] else None,
                "wait_hist": dhist, "wakeups": d[3], "voluntary_switches": d[4],
                "involuntary_switches": d[5], "migrations": d[6],
                "last_cpu": _neg_none(t.last_cpu), "weight": min(int(t.weight), _INT32_MAX),
                "nice": int(t.nice),
            })
        for pid in [p for p in self._prev_tasks if p not in seen]:
            del self._prev_tasks[pid]   # entry gone (reset or deleted): forget it
        for key, start_ns in final:
            # Re-check right before deleting: a new task may have taken the pid.
            raw = self._tasks.lookup(key)
            if raw is not None:
                t = self._task_t.from_buffer_copy(raw)
                if t.start_ns == start_ns and t.flags & EXITED:
                    self._tasks.delete(key)
        return rows

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
