"""Export a trace directory to a Perfetto protobuf trace (``.pftrace``).

Open the result in https://ui.perfetto.dev or query it with trace processor:
the CPU lanes, thread states, wakeup arrows and CPU frequency tracks come out
as if the trace had been recorded by Perfetto's own ftrace data source.

What maps to what
-----------------

==============================  ==============================================
aios-lab                        Perfetto (``perfetto.protos``)
==============================  ==============================================
``switches`` row                ``FtraceEvent.sched_switch`` on the bundle of
                                ``cpu``: prev_comm, prev_pid, prev_prio,
                                prev_state, next_comm, next_pid, next_prio;
                                ``FtraceEvent.pid`` = prev_pid
``wakeups`` row                 ``FtraceEvent.sched_waking`` on the bundle of
                                ``waker_cpu`` (``target_cpu`` when null; rows
                                with neither are skipped): comm, pid,
                                prio, success = 1, target_cpu.  prio is
                                120 + nice when ``weight`` is a kernel nice
                                weight, else 120.  ``FtraceEvent.pid`` is
                                the task running on that CPU then (the waker)
``cpu_intervals.freq_khz``      ``FtraceEvent.cpu_frequency`` (state = kHz,
                                cpu_id) at ``interval_start_ns`` wherever a
                                CPU's frequency is known and differs from its
                                previous known value
threads and processes seen      one ``process_tree``: a thread (tid, tgid,
                                name) per pid, with its latest comm; a process
                                (pid = tgid, ppid from ``processes`` when
                                sampled, cmdline = [comm of its main thread],
                                cmdline_is_comm) per tgid
``metadata["kernel"]``          ``system_info.utsname`` (sysname "Linux",
                                release, version, machine): trace processor
                                decodes prev_state by kernel release
``metadata["start"]``           ``clock_snapshot`` pairing the first ts with
                                the wall clock (REALTIME), so the UI can show
                                absolute times
==============================  ==============================================

``FtraceEvent.pid`` ("the task running on this CPU when the event fired") of
a wakeup or frequency change comes from the switch stream: the next_pid of
the CPU's latest earlier switch, or, before the CPU's first switch, that
switch's prev_pid.  Events of one CPU are in time order within and across
its bundles (at equal times: frequency change, then wakeup, then switch,
each in file order).

Clock
-----

Our timestamps are CLOCK_MONOTONIC ns and are written unchanged.  Trace
processor reads an ``FtraceEventBundle`` without ``ftrace_clock`` as
CLOCK_BOOTTIME, and BOOTTIME is also the trace time of a Perfetto trace
(``clock_snapshot.primary_trace_clock``), so nothing is converted and the
``sched`` table's ``ts`` equals our ``ts_ns``.  There is no ftrace clock
value for MONOTONIC, and declaring MONOTONIC elsewhere (packet defaults,
primary clock) would only make trace processor convert between the two
clocks, which needs a snapshot pairing them.  So the Perfetto trace labels
our monotonic times as boot time; the two differ only by time spent in
suspend, and nothing else in the file is on another clock.

Memory
------

The tables are read in Parquet batches into an external sort by (cpu, ts):
up to ``run_rows`` events are sorted in memory; beyond that, sorted runs are
spilled as Arrow IPC files to a scratch folder beside the output and merged
block by block, so the input need not be sorted and memory stays bounded
whatever the number of rows.  Sorted batches are encoded column-wise with
numpy and written packet by packet.  The output appears only once complete
(temporary file, then rename), so a failed export leaves no partial file
and keeps an older one intact.
"""
from __future__ import annotations

import datetime as _dt
import errno
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aios_lab.atomic import open_atomic
from aios_lab.analysis.db import TraceDB
from aios_lab.analysis.sanity import check_values
from aios_lab.errors import TraceError
from aios_lab.safe_output import scratch_prefix, sweep_stale
from aios_lab.telemetry.schema import TABLES
from aios_lab.telemetry.trace import Trace

# The one place that says why a trace cannot be exported: the CLI shows it.
NO_SWITCHES_MESSAGE = ("trace {path} has no sched_switch events (collected with --no-switches "
                       "or by an older aios-lab); re-collect it")
NO_SWITCHES_HINT = "Perfetto's CPU lanes are built from the switches table"

# Events per FtraceEventBundle (Perfetto itself writes one bundle per read of a
# CPU's ring buffer page set, a few thousand events at most).
DEFAULT_BUNDLE_EVENTS = 4096
# Rows per Parquet batch read, and per sorted batch encoded at once.
DEFAULT_BATCH_ROWS = 65_536
# Events sorted in memory at once (about 100 bytes each); a larger trace is
# sorted in runs of this size, spilled to disk and merged.
DEFAULT_RUN_ROWS = 1_000_000

# Trace processor decodes prev_state by kernel release, and our prev_state
# column uses the encoding of Linux 4.14 onwards (128 = I, 256 = R+).  When a
# trace does not record its release (or records an older one, which would
# not match the column's encoding), claim the first release with it.
FALLBACK_KERNEL_RELEASE = "4.14.0"
DEFAULT_PRIO = 120  # p->prio of a nice-0 CFS/EXT task

# Sequence id stamped on every packet, as the tracing service does.
_SEQUENCE_ID = 1
# Builtin clock ids (perfetto.protos.BuiltinClock).
_CLOCK_REALTIME = 1
_CLOCK_BOOTTIME = 6

# Event kinds in the merged stream; also the order at equal timestamps.
_FREQ, _WAKING, _SWITCH = 0, 1, 2

# Kernel sched_prio_to_weight[], nice -20 .. 19.
_NICE_WEIGHTS = np.array([
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15], dtype=np.int64)


@dataclass
class ExportStats:
    """What ``export_perfetto`` wrote."""

    path: Path
    sched_switch: int = 0
    sched_waking: int = 0
    cpu_frequency: int = 0
    threads: int = 0
    processes: int = 0
    bundles: int = 0
    packets: int = 0
    bytes: int = 0
    cpus: list[int] = field(default_factory=list)
    skipped_wakeups: int = 0        # neither waker_cpu nor target_cpu known
    kernel_release: str = ""        # what utsname.release says
    kernel_release_assumed: bool = False  # FALLBACK_KERNEL_RELEASE was used

    @property
    def events(self) -> int:
        return self.sched_switch + self.sched_waking + self.cpu_frequency

    def describe(self) -> str:
        """One line for the CLI."""
        out = (f"{self.sched_switch:,} sched_switch, {self.sched_waking:,} sched_waking, "
               f"{self.cpu_frequency:,} cpu_frequency on {len(self.cpus)} CPUs, "
               f"{self.threads:,} threads, {self.bytes / 2**20:.1f} MiB")
        if self.skipped_wakeups:
            out += f"; {self.skipped_wakeups:,} wakeups without a CPU left out"
        if self.kernel_release_assumed:
            out += f"; kernel release unknown, {self.kernel_release} assumed for prev_state"
        return out


# -- protobuf wire format: scalar helpers (headers, small packets) --------------

_VARINT, _LEN = 0, 2


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative ints: two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field_no: int, wire: int) -> bytes:
    return _varint((field_no << 3) | wire)


def _f_varint(field_no: int, value: int) -> bytes:
    return _key(field_no, _VARINT) + _varint(int(value))


def _f_bytes(field_no: int, data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return _key(field_no, _LEN) + _varint(len(data)) + data


# -- protobuf wire format: column-wise (numpy) -----------------------------------

_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def _as_u64(values: np.ndarray) -> np.ndarray:
    """Values as the uint64 a varint carries (negative: two's complement)."""
    if values.dtype.kind == "u":
        return values.astype(np.uint64, copy=False)
    return values.astype(np.int64, copy=False).view(np.uint64)


def _varint_len(values: np.ndarray) -> np.ndarray:
    return np.searchsorted(_VARINT_LIMITS, values, side="right").astype(np.int64) + 1


class _Messages:
    """``n`` protobuf messages of one shape, encoded column-wise with numpy.

    Each field becomes a block of an (n x width) byte matrix with a mask of
    the bytes a row uses (a varint takes 1 to 10, a null value none); the
    fields' blocks side by side, read row-major through the mask, are the
    messages one after another.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.size = np.zeros(n, dtype=np.int64)
        self._blocks: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []

    def _block(self, data: np.ndarray, mask: np.ndarray, size: np.ndarray) -> None:
        self._blocks.append(data)
        self._masks.append(mask)
        self.size += size

    def _const(self, data: bytes, valid: np.ndarray | None) -> None:
        row = np.frombuffer(data, dtype=np.uint8)
        block = np.broadcast_to(row, (self.n, len(row)))
        if valid is None:
            self._block(block, np.ones(block.shape, dtype=bool), np.full(self.n, len(row)))
        else:
            self._block(block, np.repeat(valid[:, None], len(row), axis=1),
                        valid.astype(np.int64) * len(row))

    def _varint(self, values: np.ndarray, valid: np.ndarray | None) -> None:
        v = _as_u64(np.asarray(values))
        lens = _varint_len(v)
        if valid is not None:
            lens = np.where(valid, lens, 0)
        width = int(lens.max()) if self.n else 0
        k = np.arange(width)
        block = ((v[:, None] >> (7 * k).astype(np.uint64)) & np.uint64(0x7F)).astype(np.uint8)
        block |= (k < (lens - 1)[:, None]).astype(np.uint8) << 7
        self._block(block, k < lens[:, None], lens)

    def varint(self, field_no: int, values: np.ndarray, valid: np.ndarray | None = None) -> None:
        if valid is not None and valid.all():
            valid = None
        self._const(_key(field_no, _VARINT), valid)
        self._varint(values, valid)

    def string(self, field_no: int, data: np.ndarray, starts: np.ndarray, lens: np.ndarray,
               valid: np.ndarray | None = None) -> None:
        if valid is not None and valid.all():
            valid = None
        if valid is not None:
            lens = np.where(valid, lens, 0)
        self._const(_key(field_no, _LEN), valid)
        self._varint(lens, valid)
        width = int(lens.max()) if self.n else 0
        k = np.arange(width)
        mask = k < lens[:, None]
        if not len(data):
            data = np.zeros(1, dtype=np.uint8)
        block = data[np.where(mask, starts[:, None] + k, 0)]
        self._block(block, mask, lens)

    def message(self, field_no: int, sub: "_Messages") -> None:
        self._const(_key(field_no, _LEN), None)
        self._varint(sub.size, None)
        self._blocks.extend(sub._blocks)
        self._masks.extend(sub._masks)
        self.size += sub.size

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """The (n x width) bytes and mask of the encoded messages."""
        return np.concatenate(self._blocks, axis=1), np.concatenate(self._masks, axis=1)


# -- reading the trace ------------------------------------------------------------

# One row per event, whatever its source table: a_* / b_* are the prev / next
# task of a switch, or the woken task / (b_pid) target CPU of a wakeup;
# a_state is prev_state, or the kHz of a frequency change; ord is the row's
# number in its source file (ties of equal timestamps keep file order).
_EVENTS = pa.schema([
    ("ts", pa.int64()), ("cpu", pa.int32()), ("kind", pa.int8()), ("ord", pa.int64()),
    ("a_pid", pa.int32()), ("a_prio", pa.int32()), ("a_state", pa.int64()),
    ("a_comm", pa.string()), ("b_pid", pa.int32()), ("b_prio", pa.int32()),
    ("b_comm", pa.string()), ("weight", pa.int32()),
])

_SWITCH_COLS = ("ts_ns", "cpu", "prev_pid", "prev_tgid", "prev_comm", "prev_prio", "prev_state",
                "next_pid", "next_tgid", "next_comm", "next_prio")
_WAKEUP_COLS = ("ts_ns", "pid", "tgid", "comm", "target_cpu", "waker_cpu", "weight")
_CPU_COLS = ("interval_start_ns", "cpu", "freq_khz")
_PROC_COLS = ("ts_ns", "pid", "ppid")


def _read(trace: Trace, table: str, columns: tuple[str, ...],
          batch_rows: int) -> Iterator[tuple[int, dict[str, pa.Array]]]:
    """(first row number, {column: Arrow array}) per Parquet batch, with the
    schema.py types; a nullable column the file predates reads as nulls."""
    path = trace.file(table)
    if path is None or trace.rows(table) == 0:
        return
    schema = TABLES[table]
    try:
        pf = pq.ParquetFile(path)
        present = [c for c in columns if c in pf.schema_arrow.names]
        row = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=present):
            cols = {}
            for name in columns:
                ftype = schema.field(name).type
                if name in present:
                    arr = batch.column(name)
                    if not arr.type.equals(ftype):
                        arr = arr.cast(ftype)
                else:
                    arr = pa.nulls(batch.num_rows, ftype)
                cols[name] = arr
            yield row, cols
            row += batch.num_rows
    except (pa.ArrowException, OSError, ValueError):
        raise TraceError(f"trace {trace.path}: {path.name} cannot be read (truncated or "
                         f"corrupt); re-collect it") from None


def _np(arr: pa.Array, fill: int = -1) -> np.ndarray:
    if arr.null_count:
        arr = pc.fill_null(arr, fill)
    return arr.to_numpy(zero_copy_only=False)


def _const(n: int, value: int, dtype) -> pa.Array:
    return pa.array(np.full(n, value, dtype=dtype))


def _rownums(row: int, n: int) -> pa.Array:
    return pa.array(np.arange(row, row + n, dtype=np.int64))


def _switch_events(row: int, c: dict[str, pa.Array]) -> pa.RecordBatch:
    n = len(c["ts_ns"])
    return pa.RecordBatch.from_arrays([
        c["ts_ns"], c["cpu"], _const(n, _SWITCH, np.int8), _rownums(row, n),
        c["prev_pid"], c["prev_prio"], c["prev_state"], c["prev_comm"],
        c["next_pid"], c["next_prio"], c["next_comm"], pa.nulls(n, pa.int32())], schema=_EVENTS)


def _waking_events(row: int, c: dict[str, pa.Array]) -> tuple[pa.RecordBatch, int]:
    """The wakeups that have a CPU to show them on, and how many have none."""
    n = len(c["ts_ns"])
    waker, target = _np(c["waker_cpu"]), _np(c["target_cpu"])
    cpu = np.where(waker >= 0, waker, target).astype(np.int32)
    keep = cpu >= 0
    batch = pa.RecordBatch.from_arrays([
        c["ts_ns"], pa.array(cpu), _const(n, _WAKING, np.int8), _rownums(row, n),
        c["pid"], pa.nulls(n, pa.int32()), pa.nulls(n, pa.int64()), c["comm"],
        c["target_cpu"], pa.nulls(n, pa.int32()), pa.nulls(n, pa.string()), c["weight"]],
        schema=_EVENTS)
    if keep.all():
        return batch, 0
    return batch.filter(pa.array(keep)), int((~keep).sum())


def _freq_events(row: int, c: dict[str, pa.Array]) -> pa.RecordBatch:
    """Every interval with a known frequency; the bundle writer keeps changes."""
    n = len(c["cpu"])
    freq, cpu = _np(c["freq_khz"]), _np(c["cpu"])
    batch = pa.RecordBatch.from_arrays([
        c["interval_start_ns"], c["cpu"], _const(n, _FREQ, np.int8), _rownums(row, n),
        pa.nulls(n, pa.int32()), pa.nulls(n, pa.int32()), c["freq_khz"],
        pa.nulls(n, pa.string()), pa.nulls(n, pa.int32()), pa.nulls(n, pa.int32()),
        pa.nulls(n, pa.string()), pa.nulls(n, pa.int32())], schema=_EVENTS)
    return batch.filter(pa.array((freq >= 0) & (cpu >= 0)))


def _pick_per_group(group: np.ndarray, ts: np.ndarray, latest: bool) -> np.ndarray:
    """Per distinct ``group`` value, the index of its row with the largest
    (``latest``) or smallest ts; among equal ts the last or first row."""
    order = np.argsort(group, kind="stable")
    g, t = group[order], ts[order]
    starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    extreme = (np.maximum if latest else np.minimum).reduceat(t, starts)
    hit = t == np.repeat(extreme, np.diff(np.append(starts, len(g))))
    pos = np.arange(len(g))
    if latest:
        pick = np.maximum.reduceat(np.where(hit, pos, -1), starts)
    else:
        pick = np.minimum.reduceat(np.where(hit, pos, len(g)), starts)
    return order[pick]


def _last_per_group(group: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """``_pick_per_group(group, ts, latest=True)``, in linear time when ts is
    sorted (as the collector writes it): then the latest row is the last."""
    if len(ts) > 1 and not np.all(ts[1:] >= ts[:-1]):
        return _pick_per_group(group, ts, latest=True)
    backwards = pa.array(group[::-1])
    ids = pc.dictionary_encode(backwards).indices.to_numpy()  # numbered by first appearance
    seen = np.maximum.accumulate(ids)
    new = np.concatenate(([True], ids[1:] > seen[:-1]))
    return len(group) - 1 - np.flatnonzero(new)


class _Latest:
    """Per key (a pid), the value of its latest row (by ts, then file order)."""

    def __init__(self) -> None:
        self.values: dict[int, tuple[int, object]] = {}

    def add(self, keys: np.ndarray, ts: np.ndarray, values: pa.Array,
            valid: np.ndarray | None = None) -> None:
        ok = values.is_valid().to_numpy(zero_copy_only=False) & (keys > 0)
        if valid is not None:
            ok &= valid
        idx = np.flatnonzero(ok)
        if not len(idx):
            return
        sel = idx[_last_per_group(keys[idx], ts[idx])]
        for key, when, value in zip(keys[sel].tolist(), ts[sel].tolist(),
                                    values.take(pa.array(sel)).to_pylist()):
            old = self.values.get(key)
            if old is None or when >= old[0]:
                self.values[key] = (when, value)

    def get(self, key: int):
        hit = self.values.get(key)
        return None if hit is None else hit[1]


class _Sorter:
    """External sort of event batches by (cpu, ts, kind, ord) in bounded memory.

    Batches are buffered up to ``run_rows`` rows, sorted and spilled as an
    Arrow IPC run file to a scratch folder; the runs are then merged block by
    block. A trace that fits in one run never touches the disk.
    """

    def __init__(self, scratch: "_Scratch", run_rows: int, batch_rows: int) -> None:
        self.scratch = scratch
        self.run_rows = run_rows
        self.batch_rows = batch_rows
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.runs: list[Path] = []

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.buffer.append(batch)
        self.buffered += batch.num_rows
        if self.buffered >= self.run_rows:
            self._spill()

    def _take_sorted(self) -> pa.Table:
        table = pa.Table.from_batches(self.buffer, schema=_EVENTS)
        self.buffer, self.buffered = [], 0
        return _sort(table)

    def _spill(self) -> None:
        table = self._take_sorted()
        path = self.scratch.path() / f"run-{len(self.runs)}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, _EVENTS) as writer:
            writer.write_table(table, max_chunksize=self.batch_rows)
        self.runs.append(path)

    def batches(self) -> Iterator[pa.RecordBatch]:
        if not self.runs:
            yield from self._take_sorted().to_batches(max_chunksize=self.batch_rows)
            return
        if self.buffered:
            self._spill()
        for table in _merge(self.runs):
            yield from table.to_batches(max_chunksize=self.batch_rows)


def _keys(table: pa.Table) -> list[np.ndarray]:
    return [table.column(k).to_numpy() for k in ("cpu", "ts", "kind", "ord")]


def _sort(table: pa.Table) -> pa.Table:
    cpu, ts, kind, ordn = _keys(table)
    order = np.lexsort((ordn, kind, ts, cpu))
    if np.all(order[1:] > order[:-1]):
        return table.combine_chunks()
    return table.take(pa.array(order)).combine_chunks()


def _merge(paths: list[Path]) -> Iterator[pa.Table]:
    """K-way merge of sorted run files: each step takes from every run the
    rows up to the smallest last key among the runs' current blocks (every
    row after it in any run is larger), sorts them and yields them."""
    readers = [pa.ipc.open_file(pa.OSFile(str(p))) for p in paths]  # not mmap: RSS would grow
    nexts = [0] * len(readers)
    pending: list[pa.Table | None] = [None] * len(readers)
    while True:
        for i, reader in enumerate(readers):
            while (pending[i] is None or not pending[i].num_rows) and \
                    nexts[i] < reader.num_record_batches:
                pending[i] = pa.Table.from_batches([reader.get_batch(nexts[i])])
                nexts[i] += 1
            if pending[i] is not None and not pending[i].num_rows:
                pending[i] = None
        live = [i for i in range(len(readers)) if pending[i] is not None]
        if not live:
            return
        bound = None
        for i in live:
            if nexts[i] < readers[i].num_record_batches:  # more blocks follow
                last = tuple(int(k[-1]) for k in _keys(pending[i]))
                bound = last if bound is None or last < bound else bound
        parts = []
        for i in live:
            table = pending[i]
            if bound is None:
                take = table.num_rows
            else:
                cpu, ts, kind, ordn = _keys(table)
                bc, bt, bk, bo = bound
                le = (cpu < bc) | ((cpu == bc) & ((ts < bt) | ((ts == bt) & (
                    (kind < bk) | ((kind == bk) & (ordn <= bo))))))
                take = int(le.sum())  # a prefix: the block is sorted
            if take:
                parts.append(table.slice(0, take))
                pending[i] = table.slice(take)
        yield _sort(pa.concat_tables(parts))


class _Scratch:
    """A scratch folder beside the output, made on first use."""

    def __init__(self, parent: Path, name: str) -> None:
        self.parent, self.name = parent, name
        self._dir: tempfile.TemporaryDirectory | None = None

    def path(self) -> Path:
        if self._dir is None:
            # The PID in the name lets safe_output.sweep_stale remove it after a SIGKILL.
            self._dir = tempfile.TemporaryDirectory(dir=self.parent,
                                                    prefix=scratch_prefix(self.parent / self.name, "sort") + "-")
        return Path(self._dir.name)

    def cleanup(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


# -- packets ------------------------------------------------------------------


def _packet(payload: bytes, timestamp: int | None = None) -> bytes:
    body = _f_varint(10, _SEQUENCE_ID)  # trusted_packet_sequence_id
    if timestamp is not None:
        body += _f_varint(8, timestamp)
    body += payload
    return _f_bytes(1, body)  # Trace.packet


def _wall_ns(start: object) -> int | None:
    """metadata["start"]["wall"] (epoch seconds, or ISO 8601) as epoch ns."""
    if isinstance(start, bool):
        return None
    if isinstance(start, int):
        return start * 1_000_000_000
    if isinstance(start, float):
        if not math.isfinite(start):
            return None
        # Through the shortest decimal that reads back as this float: x * 1e9
        # in binary would turn 1700000000.25 into ...249999872.
        return int(Decimal(repr(start)) * 1_000_000_000)
    if isinstance(start, str):
        try:
            when = _dt.datetime.fromisoformat(start)
        except ValueError:
            return None
        if when.tzinfo is None:
            return None  # local time of an unknown zone: better none than wrong
        delta = when - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return None


def _clock_snapshot(metadata: dict) -> bytes | None:
    start = metadata.get("start")
    if not isinstance(start, dict):
        return None
    mono = start.get("monotonic_ns")
    wall = _wall_ns(start.get("wall"))
    if isinstance(mono, bool) or not isinstance(mono, int) or mono < 0 or wall is None or wall < 0:
        return None
    clocks = (_f_bytes(1, _f_varint(1, _CLOCK_BOOTTIME) + _f_varint(2, mono))
              + _f_bytes(1, _f_varint(1, _CLOCK_REALTIME) + _f_varint(2, wall)))
    snapshot = clocks + _f_varint(2, _CLOCK_BOOTTIME)  # primary_trace_clock
    return _packet(_f_bytes(6, snapshot))  # TracePacket.clock_snapshot


def _kernel_release(release: object) -> str | None:
    """``release`` as trace processor will parse it (major.minor from the text
    between the dots), or None when it cannot or it predates 4.14."""
    if not isinstance(release, str):
        return None
    m = re.match(r"(\d+)\.(\d+)", release)
    if m is None or (int(m.group(1)), int(m.group(2))) < (4, 14):
        return None
    parts = release.split(".")
    if parts[0].isdigit() and len(parts) > 1 and parts[1].isdigit():
        return release
    # e.g. "6.12-rc1": trace processor would fail on "12-rc1" and fall back
    # to decoding prev_state as Linux 4.4 did.
    return f"{m.group(1)}.{m.group(2)}.0-{release}"


def _system_info(metadata: dict, stats: ExportStats) -> bytes:
    kernel = metadata.get("kernel") if isinstance(metadata.get("kernel"), dict) else {}
    host = metadata.get("host") if isinstance(metadata.get("host"), dict) else {}
    release = _kernel_release(kernel.get("release"))
    if release is None:
        release, stats.kernel_release_assumed = FALLBACK_KERNEL_RELEASE, True
    stats.kernel_release = release
    uts = _f_bytes(1, "Linux") + _f_bytes(3, release)
    if isinstance(kernel.get("version"), str):
        uts += _f_bytes(2, kernel["version"])
    if isinstance(host.get("machine"), str) and host["machine"]:
        uts += _f_bytes(4, host["machine"])
    info = _f_bytes(1, uts)
    cpus = host.get("cpus")
    if isinstance(cpus, int) and not isinstance(cpus, bool) and cpus > 0:
        info += _f_varint(8, cpus)  # num_cpus
    return _packet(_f_bytes(45, info))  # TracePacket.system_info


def _process_tree(tgids: _Latest, comms: _Latest, ppids: _Latest, first_ts: int,
                  stats: ExportStats, chunk: int = 4096) -> Iterator[bytes]:
    """ProcessTree packets: every thread seen, and every process (tgid) of one."""
    pids = sorted(set(tgids.values) | set(comms.values))
    entries: list[bytes] = []
    any_comm: dict[int, str] = {}  # tgid -> comm of its lowest tid with one
    for pid in pids:
        tgid, comm = tgids.get(pid), comms.get(pid)
        body = _f_varint(1, pid)                    # tid
        if comm is not None:
            body += _f_bytes(2, comm)               # name
        if tgid is not None:
            body += _f_varint(3, tgid)              # tgid
            if comm is not None:
                any_comm.setdefault(tgid, comm)
        entries.append(_f_bytes(2, body))           # ProcessTree.threads
    processes = sorted({t for t in (tgids.get(p) for p in pids) if t is not None and t > 0})
    for tgid in processes:
        body = _f_varint(1, tgid)                   # pid
        ppid = ppids.get(tgid)
        if ppid is not None:
            body += _f_varint(2, ppid)              # ppid
        comm = comms.get(tgid)  # its main thread's name
        if comm is None:
            comm = any_comm.get(tgid)
        if comm is not None:
            body += _f_bytes(3, comm) + _f_varint(9, 1)  # cmdline = [comm], cmdline_is_comm
        entries.append(_f_bytes(1, body))           # ProcessTree.processes
    stats.threads, stats.processes = len(pids), len(processes)
    for i in range(0, len(entries), chunk):
        yield _packet(_f_bytes(2, b"".join(entries[i:i + chunk])), first_ts)


# -- ftrace bundles -----------------------------------------------------------


def _ints(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """An integer column as numpy (zero-copy; null slots hold junk) and its
    validity mask, None when it has no nulls."""
    col = batch.column(name)
    if not pa.types.is_integer(col.type):
        raise TypeError(f"column {name} is {col.type}, expected an integer")
    dtype = col.type.to_pandas_dtype()
    if col.buffers()[1] is None:  # all null
        return np.zeros(len(col), dtype=dtype), np.zeros(len(col), dtype=bool)
    values = np.frombuffer(col.buffers()[1], dtype=dtype)[col.offset:col.offset + len(col)]
    valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None
    return values, valid


def _strings(batch: pa.RecordBatch, name: str):
    col = batch.column(name)
    if not pa.types.is_string(col.type):
        col = col.cast(pa.string())
    n = len(col)
    if col.buffers()[1] is None:  # all null
        zeros = np.zeros(n, dtype=np.int64)
        return np.zeros(0, np.uint8), zeros, zeros, np.zeros(n, dtype=bool)
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset:col.offset + n + 1]
    data_buf = col.buffers()[2]
    data = (np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None
            else np.zeros(0, np.uint8))
    starts = offsets[:-1].astype(np.int64)
    lens = (offsets[1:] - offsets[:-1]).astype(np.int64)
    valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None
    return data, starts, lens, valid


def _sub(valid: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if valid is None else valid[idx]


def _prio_from_weight(weight: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """p->prio of a CFS task from its load weight (raw or scaled by 1024)."""
    w = weight.astype(np.int64)
    scaled = (w % 1024 == 0) & (w >= 1024 * 15)
    w = np.where(scaled, w >> 10, w)
    order = np.argsort(_NICE_WEIGHTS)
    sorted_w = _NICE_WEIGHTS[order]
    at = np.clip(np.searchsorted(sorted_w, w), 0, len(sorted_w) - 1)
    exact = sorted_w[at] == w
    if valid is not None:
        exact &= valid
    nice = order[at] - 20
    return np.where(exact, 120 + nice, DEFAULT_PRIO).astype(np.int64)


def _put_string(m: "_Messages", field_no: int, batch: pa.RecordBatch, column: str,
                idx: np.ndarray) -> None:
    data, starts, lens, ok = _strings(batch, column)
    m.string(field_no, data, starts[idx], lens[idx], _sub(ok, idx))


def _put_int(m: "_Messages", field_no: int, batch: pa.RecordBatch, column: str,
             idx: np.ndarray) -> None:
    values, ok = _ints(batch, column)
    m.varint(field_no, values[idx], _sub(ok, idx))


class _BundleWriter:
    """Turns sorted event batches into FtraceEventBundle packets."""

    def __init__(self, out: BinaryIO, first_prev: dict[int, int], bundle_events: int,
                 stats: ExportStats) -> None:
        self.out = out
        self.running = dict(first_prev)  # cpu -> task running there now
        self.bundle_events = bundle_events
        self.stats = stats
        self.cpus: set[int] = set()
        self.freq: dict[int, int] = {}  # cpu -> last kHz written
        # The bundle being filled: its CPU, encoded events and their count.
        self._open_cpu: int | None = None
        self._open: list[memoryview] = []
        self._open_count = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        batch = self._frequency_changes(batch)
        n = batch.num_rows
        if not n:
            return
        ts, _ = _ints(batch, "ts")
        cpu, _ = _ints(batch, "cpu")
        kind, _ = _ints(batch, "kind")
        a_pid, a_pid_ok = _ints(batch, "a_pid")
        b_pid, b_pid_ok = _ints(batch, "b_pid")
        cpu = cpu.astype(np.int64)

        # The task running on the CPU when each event fired.
        is_switch = kind == _SWITCH
        rows = np.arange(n)
        last = np.maximum.accumulate(np.where(is_switch, rows, -1))
        lastc = np.maximum(last, 0)
        known = (last >= 0) & (cpu[lastc] == cpu)
        cpus, inverse = np.unique(cpu, return_inverse=True)
        carried = np.array([self.running.get(c, 0) for c in cpus.tolist()], dtype=np.int64)
        current = np.where(known, b_pid[lastc], carried[inverse])
        current = np.where(is_switch, a_pid, current)
        switch_rows = np.flatnonzero(is_switch)
        if len(switch_rows):
            sw_cpu = cpu[switch_rows]
            ends = np.append(np.flatnonzero(np.diff(sw_cpu)), len(sw_cpu) - 1)
            for c, row in zip(sw_cpu[ends].tolist(), switch_rows[ends].tolist()):
                self.running[c] = int(b_pid[row])

        parts = []
        for k, oneof, build in ((_SWITCH, 4, self._switch), (_WAKING, 20, self._waking),
                                (_FREQ, 11, self._freq)):
            idx = np.flatnonzero(kind == k)
            if not len(idx):
                continue
            event = _Messages(len(idx))
            event.varint(1, ts[idx])          # FtraceEvent.timestamp
            event.varint(2, current[idx])     # FtraceEvent.pid
            event.message(oneof, build(batch, idx, cpu, a_pid, a_pid_ok, b_pid, b_pid_ok))
            outer = _Messages(len(idx))
            outer.message(2, event)           # FtraceEventBundle.event
            parts.append((idx, outer.matrix()))
        width = max(d.shape[1] for _, (d, _) in parts)
        data = np.zeros((n, width), dtype=np.uint8)
        mask = np.zeros((n, width), dtype=bool)
        for idx, (d, m) in parts:
            data[idx, :d.shape[1]] = d
            mask[idx, :m.shape[1]] = m
        pos = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(mask.sum(axis=1), out=pos[1:])
        view = memoryview(data[mask])

        # Bundles: runs of one CPU, bundle_events events each but the last,
        # which the next batch may go on filling.
        cuts = np.flatnonzero(np.diff(cpu)) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = np.concatenate((cuts, [n])).tolist()
        for s, e in zip(starts, ends):
            c = int(cpu[s])
            self.cpus.add(c)
            if self._open_cpu != c:
                self.flush()
                self._open_cpu = c
            while s < e:
                take = min(e - s, self.bundle_events - self._open_count)
                self._open.append(view[pos[s]:pos[s + take]])
                self._open_count += take
                s += take
                if self._open_count == self.bundle_events:
                    self.flush()
                    self._open_cpu = c

    def flush(self) -> None:
        """Write the bundle being filled, if any."""
        if self._open_count:
            self._bundle(self._open_cpu, self._open)
        self._open, self._open_count, self._open_cpu = [], 0, None

    def _frequency_changes(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Drop frequency rows that repeat their CPU's previous frequency."""
        kind, _ = _ints(batch, "kind")
        rows = np.flatnonzero(kind == _FREQ)
        if not len(rows):
            return batch
        khz = _ints(batch, "a_state")[0][rows]
        cpu = _ints(batch, "cpu")[0][rows]
        first = np.concatenate(([True], cpu[1:] != cpu[:-1]))  # of its CPU in the batch
        before = np.empty_like(khz)
        before[1:] = khz[:-1]
        for i in np.flatnonzero(first).tolist():
            before[i] = self.freq.get(int(cpu[i]), -1)
        drop = khz == before
        ends = np.append(np.flatnonzero(first)[1:] - 1, len(rows) - 1)
        for i in ends.tolist():
            self.freq[int(cpu[i])] = int(khz[i])
        if not drop.any():
            return batch
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[rows[drop]] = False
        return batch.filter(pa.array(keep))

    def _bundle(self, cpu: int, events: list[memoryview]) -> None:
        head = _f_varint(1, cpu)  # FtraceEventBundle.cpu
        bundle_len = len(head) + sum(len(e) for e in events)
        seq = _f_varint(10, _SEQUENCE_ID)
        packet_len = len(seq) + len(_key(1, _LEN)) + len(_varint(bundle_len)) + bundle_len
        self.out.write(_key(1, _LEN) + _varint(packet_len) + seq
                       + _key(1, _LEN) + _varint(bundle_len) + head)
        for chunk in events:
            self.out.write(chunk)
        self.stats.bundles += 1
        self.stats.packets += 1

    def _switch(self, batch, idx, cpu, a_pid, a_pid_ok, b_pid, b_pid_ok) -> _Messages:
        m = _Messages(len(idx))
        _put_string(m, 1, batch, "a_comm", idx)                          # prev_comm
        m.varint(2, a_pid[idx])                                          # prev_pid
        _put_int(m, 3, batch, "a_prio", idx)                             # prev_prio
        _put_int(m, 4, batch, "a_state", idx)                            # prev_state
        _put_string(m, 5, batch, "b_comm", idx)                          # next_comm
        m.varint(6, b_pid[idx])                                          # next_pid
        _put_int(m, 7, batch, "b_prio", idx)                             # next_prio
        self.stats.sched_switch += len(idx)
        return m

    def _waking(self, batch, idx, cpu, a_pid, a_pid_ok, b_pid, b_pid_ok) -> _Messages:
        m = _Messages(len(idx))
        _put_string(m, 1, batch, "a_comm", idx)                          # comm
        m.varint(2, a_pid[idx])                                          # pid
        weight, ok = _ints(batch, "weight")
        m.varint(3, _prio_from_weight(weight[idx], _sub(ok, idx)))      # prio
        m.varint(4, np.ones(len(idx), dtype=np.int64))                   # success
        m.varint(5, b_pid[idx], _sub(b_pid_ok, idx))                     # target_cpu
        self.stats.sched_waking += len(idx)
        return m

    def _freq(self, batch, idx, cpu, a_pid, a_pid_ok, b_pid, b_pid_ok) -> _Messages:
        m = _Messages(len(idx))
        state, _ = _ints(batch, "a_state")
        m.varint(1, state[idx])                                          # state (kHz)
        m.varint(2, cpu[idx])                                            # cpu_id
        self.stats.cpu_frequency += len(idx)
        return m


# -- entry point --------------------------------------------------------------


def export_perfetto(trace: Trace | str | Path, out: Path | str, *,
                    bundle_events: int = DEFAULT_BUNDLE_EVENTS,
                    batch_rows: int = DEFAULT_BATCH_ROWS,
                    run_rows: int = DEFAULT_RUN_ROWS) -> ExportStats:
    """Write ``trace`` as a Perfetto protobuf trace at ``out``; see the module
    docstring for what maps to what and which clock the times are on.

    ``bundle_events`` caps the events of one FtraceEventBundle, ``batch_rows``
    the rows read and encoded at once, ``run_rows`` the events sorted in
    memory before the sort spills to a scratch folder beside ``out``.

    Raises TraceError when the trace cannot be read or has no sched_switch
    events (``NO_SWITCHES_MESSAGE``), or the output cannot be written; then
    ``out`` is untouched (absent, or the file it was before).
    """
    if not isinstance(trace, Trace):
        trace = Trace.open(trace)
    out = Path(out)
    if bundle_events < 1 or batch_rows < 1 or run_rows < 1:
        raise ValueError("bundle_events, batch_rows and run_rows must be >= 1")
    if trace.rows("switches") == 0:
        raise TraceError(NO_SWITCHES_MESSAGE.format(path=trace.path), hint=NO_SWITCHES_HINT)
    with TraceDB(trace) as db:  # no negative or int64-max timestamps into Perfetto
        check_values(db, ("switches", "wakeups", "cpu_intervals"))
    sweep_stale(out)  # scratch of an export that was SIGKILLed
    if out.is_dir():
        raise TraceError(f"output {out} is a directory", hint="give a file name, e.g. out.pftrace")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise TraceError(f"output folder {parent} does not exist",
                         hint="create it first, or write elsewhere")

    stats = ExportStats(path=out)
    scratch = _Scratch(parent, out.name)
    try:
        with open_atomic(out, "wb", buffering=1 << 20) as f:
            _export(trace, f, stats, scratch, bundle_events, batch_rows, run_rows)
            stats.bytes = f.tell()
    except OSError as e:
        hint = ("check that the folder is writable" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                else "check free disk space")
        raise TraceError(f"writing {out} failed: {e.strerror or e}", hint=hint) from None
    finally:
        scratch.cleanup()
    return stats


def _export(trace: Trace, f: BinaryIO, stats: ExportStats, scratch: _Scratch,
            bundle_events: int, batch_rows: int, run_rows: int) -> None:
    # Pass 1: read every table once, in batches, into the external sort,
    # noting on the way what the header packets need.
    sorter = _Sorter(scratch, run_rows, batch_rows)
    tgids, comms, ppids = _Latest(), _Latest(), _Latest()
    first: dict[int, tuple[int, int, int]] = {}  # cpu -> (ts, row, prev_pid) of its first switch
    first_ts: int | None = None
    for row, c in _read(trace, "switches", _SWITCH_COLS, batch_rows):
        ts, cpu = _np(c["ts_ns"]), _np(c["cpu"])
        if (cpu < 0).any():
            raise TraceError(f"trace {trace.path}: switches.parquet has a negative cpu in row "
                             f"{row + int(np.argmax(cpu < 0))}; the file is damaged, re-collect it")
        first_ts = int(ts.min()) if first_ts is None else min(first_ts, int(ts.min()))
        prev, nxt = _np(c["prev_pid"]), _np(c["next_pid"])
        for i in _pick_per_group(cpu, ts, latest=False).tolist():
            c_i, key = int(cpu[i]), (int(ts[i]), row + i)
            if c_i not in first or key < first[c_i][:2]:
                first[c_i] = key + (int(prev[i]),)
        for pids, tg, cm in ((prev, c["prev_tgid"], c["prev_comm"]),
                             (nxt, c["next_tgid"], c["next_comm"])):
            tgids.add(pids, ts, tg)
            comms.add(pids, ts, cm)
        sorter.add(_switch_events(row, c))
    for row, c in _read(trace, "wakeups", _WAKEUP_COLS, batch_rows):
        ts, pids = _np(c["ts_ns"]), _np(c["pid"])
        tgids.add(pids, ts, c["tgid"])
        comms.add(pids, ts, c["comm"])
        batch, skipped = _waking_events(row, c)
        stats.skipped_wakeups += skipped
        sorter.add(batch)
    for row, c in _read(trace, "cpu_intervals", _CPU_COLS, batch_rows):
        sorter.add(_freq_events(row, c))
    for row, c in _read(trace, "processes", _PROC_COLS, batch_rows):
        ppids.add(_np(c["pid"]), _np(c["ts_ns"]), c["ppid"])

    # Pass 2: the header packets, then the events in (cpu, ts) order.
    snapshot = _clock_snapshot(trace.metadata)
    if snapshot is not None:
        f.write(snapshot)
        stats.packets += 1
    f.write(_system_info(trace.metadata, stats))
    stats.packets += 1
    for packet in _process_tree(tgids, comms, ppids, first_ts or 0, stats):
        f.write(packet)
        stats.packets += 1
    # Before a CPU's first switch, the task running there is that switch's prev.
    running = {cpu: prev for cpu, (_, _, prev) in first.items()}
    bundles = _BundleWriter(f, running, bundle_events, stats)
    for batch in sorter.batches():
        bundles.write_batch(batch)
    bundles.flush()
    stats.cpus = sorted(bundles.cpus)
