"""Export a trace directory to a Perfetto protobuf trace (``.pftrace``).

Open the result in https://ui.perfetto.dev or query it with trace processor:
the CPU lanes, thread states, wakeup arrows and CPU frequency tracks come out
as if the trace had been recorded by Perfetto's own ftrace data source.

What maps to what
-----------------

Written with the ``perfetto`` package's generated protos
(``perfetto.protos.perfetto.trace.perfetto_trace_pb2``), one ``Trace``
message per packet (serialized ``Trace`` messages concatenate into one).

==============================  ==============================================
aios-lab                        Perfetto
==============================  ==============================================
``switches`` row                in the ``FtraceEventBundle`` of ``cpu``:
                                ``compact_sched`` switch columns (timestamp
                                delta, prev_state, next_pid, next_prio,
                                next_comm as an index into the bundle's
                                ``intern_table``), as Perfetto's own ftrace
                                reader writes them. Trace processor takes a
                                compact switch's prev task from the CPU's
                                previous switch, so a switch whose prev
                                (pid, comm, prio) is not that task (the
                                CPU's first, a gap left by lost events, a
                                null field) is a full ``FtraceEvent.sched_switch``
                                instead, with ``FtraceEvent.pid`` = prev_pid
``wakeups`` row                 on the bundle of ``waker_cpu`` (``target_cpu``
                                when null; rows with neither are skipped):
                                ``compact_sched`` waking columns (timestamp
                                delta, pid, target_cpu, prio, comm index);
                                a full ``FtraceEvent.sched_waking`` (comm, pid,
                                prio, success = 1, target_cpu when known)
                                when the target CPU or comm is null. prio is
                                120 + nice when ``weight`` is a kernel nice
                                weight, else 120
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
a full wakeup or frequency change comes from the switch stream: the next_pid of
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

Memory and order
----------------

Trace processor needs each CPU's events in time order for the compact
encoding to mean what we mean (a compact switch's prev task is the CPU's
previous switch's next, taken after its sorter has ordered the events), and
puts every event into a per-CPU queue by its own timestamp, sorting the
queues itself: bundles of different CPUs may interleave in any order, as in
Perfetto's own recordings (one bundle per CPU per read of its ring buffer).
Two paths write the bundles; ``ExportStats.order`` says which ran.

*Read order* (tried first): the tables are read once, in batches, each in
its own file order, the batch of the stream furthest behind next. Rows wait
until every stream has moved past them, then each table's are sorted
locally by (cpu, ts) and appended to their CPU's open bundle, which places
the kinds by (ts, kind) and is written when it holds ``bundle_events``. A stream's next rows are expected no
earlier than the earliest of its last ``reorder_rows`` rows (the window:
the collector's rows are a few rows out of time order where CPUs' events
meet in one ring, and in order within a CPU). A row that would fall before
an event already written on its CPU means the input is not in that order:
the export starts again on the sort path (``read_order_refused`` says why).
Each CPU's bundles come out the same, byte for byte, as on the sort path;
only their interleaving differs, and the process tree comes last (its
timestamp is the first switch's). Memory held: at most ``run_rows`` rows
waiting (past that the oldest are written anyway, and a late row is still
caught), one open bundle per CPU (< ``bundle_events`` each) and, for a CPU
whose first switch has not come yet, its earlier events (at most
``run_rows`` in all, else the sort path).

*External sort* (input out of order, or ``reorder_rows=0``): the tables are
read into an external sort by (cpu, ts): up to ``run_rows`` events are
sorted in memory; beyond that, sorted runs are spilled as Arrow IPC files to
a scratch folder beside the output and merged block by block, so the input
need not be sorted and memory stays bounded whatever the number of rows.
Sorted events are cut into bundles of at most ``bundle_events``, each CPU's
in turn, after the header packets.

Each bundle is built as protos (the compact columns filled from numpy
arrays, each event kind's apart: compact_sched keeps them apart, and only
the few full events need the CPU's order of kinds) and written at once.
While exports run, Arrow allocates from jemalloc rather than mimalloc
(``_ArrowPool``: where the kernel compacts memory for transparent huge
pages, mimalloc's huge-page faults cost about a second of system time per
10^7 events). The output appears only once complete
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
import threading
from contextlib import contextmanager
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
from aios_lab.errors import MissingDependency, TraceError
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
# sorted in runs of this size, spilled to disk and merged. Also the most
# events the read-order path holds back.
DEFAULT_RUN_ROWS = 1_000_000
# The read-order path's window: a row may come this many rows of its table
# late (the collector's rows are a few rows out of time order at most, where
# CPUs' events met in one ring; within one CPU, in order).
DEFAULT_REORDER_ROWS = 4096

# ExportStats.order: which path wrote the bundles.
READ_ORDER = "read order"        # one pass, bundles per CPU as they fill, no global sort
EXTERNAL_SORT = "external sort"  # sorted by (cpu, ts) first: any input order

# Trace processor decodes prev_state by kernel release, and our prev_state
# column uses the encoding of Linux 4.14 onwards (128 = I, 256 = R+).  When a
# trace does not record its release (or records an older one, which would
# not match the column's encoding), claim the first release with it.
FALLBACK_KERNEL_RELEASE = "4.14.0"
DEFAULT_PRIO = 120  # p->prio of a nice-0 CFS/EXT task

# Sequence id stamped on every packet, as the tracing service does.
_SEQUENCE_ID = 1

# Event kinds in the merged stream; also the order at equal timestamps.
_FREQ, _WAKING, _SWITCH = 0, 1, 2
# Larger than any position in a bundle: a comm id not used in it yet.
_UNSEEN = np.iinfo(np.int64).max

# Kernel sched_prio_to_weight[], nice -20 .. 19.
_NICE_WEIGHTS = np.array([
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15], dtype=np.int64)
_NICE_ORDER = np.argsort(_NICE_WEIGHTS)  # for searchsorted, once (not per bundle)
_NICE_SORTED = _NICE_WEIGHTS[_NICE_ORDER]


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
    compact_events: int = 0         # switches and wakeups written as compact_sched columns
    skipped_wakeups: int = 0        # neither waker_cpu nor target_cpu known
    kernel_release: str = ""        # what utsname.release says
    kernel_release_assumed: bool = False  # FALLBACK_KERNEL_RELEASE was used
    order: str = ""                 # READ_ORDER or EXTERNAL_SORT
    read_order_refused: str = ""    # why the read-order path gave way to the sort, if it did

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
        if self.read_order_refused:
            out += f"; sorted, the input being out of time order ({self.read_order_refused})"
        return out


# -- reading the trace ------------------------------------------------------------

# One row per event, whatever its source table: a_* / b_* are the prev / next
# task of a switch, or the woken task (a_prio: its prio from its load
# weight) / (b_pid) target CPU of a wakeup;
# a_state is prev_state, or the kHz of a frequency change; ord is the row's
# number in its source file (ties of equal timestamps keep file order).
# Comms are ids into the export's _Comms: the external sort moves every column
# of every row, and moving strings cost 2.1 of 6.6 s at 10^6 events (cProfile,
# arrow's take), ints a fraction of that.
_EVENTS = pa.schema([
    ("ts", pa.int64()), ("cpu", pa.int32()), ("kind", pa.int8()), ("ord", pa.int64()),
    ("a_pid", pa.int32()), ("a_prio", pa.int32()), ("a_state", pa.int64()),
    ("a_comm", pa.int32()), ("b_pid", pa.int32()), ("b_prio", pa.int32()),
    ("b_comm", pa.int32()),
])


class _Comms:
    """Task names interned as int32 ids for the whole export (null stays null)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        self._last: tuple[pa.Array, np.ndarray] | None = None  # a dictionary and its ids

    def _id(self, name: str) -> int:
        i = self._ids.get(name)
        if i is None:
            i = self._ids[name] = len(self.names)
            self.names.append(name)
        return i

    def ids(self, arr: pa.Array) -> pa.Array:
        # Hashing in C++ (or the Parquet file's own dictionary, as _read
        # returns it); only the distinct names reach Python.
        enc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
        # Batches of one Parquet row group share its dictionary: map it once.
        if self._last is not None and self._last[0].equals(enc.dictionary):
            lut = self._last[1]
        else:
            lut = np.array([self._id(n) for n in enc.dictionary.to_pylist()], dtype=np.int32)
            self._last = (enc.dictionary, lut)
        idx = enc.indices
        if not len(lut):
            return pa.nulls(len(arr), pa.int32())
        if not idx.null_count:
            return pa.array(lut[idx.to_numpy()])
        vals = lut[pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)]
        return pa.array(vals, mask=idx.is_null().to_numpy(zero_copy_only=False))

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
        names = pq.read_schema(path).names
        present = [c for c in columns if c in names]
        # Strings (task names) as the file's dictionary indices: the exporter
        # interns them anyway, and building a string per row was half the read.
        strings = [c for c in present if pa.types.is_string(schema.field(c).type)]
        pf = pq.ParquetFile(path, read_dictionary=strings)
        row = 0
        # One thread: Arrow's decode threads cost 1.1-2.4x the CPU seconds of
        # one thread on a busy 2-core host (0.35-1.54 against 0.32-0.63 s for
        # 8 M switches, interleaved) and saved ~0.1 s of wall time when idle.
        for batch in pf.iter_batches(batch_size=batch_rows, columns=present, use_threads=False):
            cols = {}
            for name in columns:
                ftype = schema.field(name).type
                if name in present:
                    arr = batch.column(name)
                    plain = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
                    if not plain.equals(ftype):
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


# One event kind's rows as numpy columns named as in _EVENTS: name ->
# (values at the column's own integer width, nulls as 0; validity, or None
# when every value is known). Each kind has only the columns it uses, so
# the read-order path moves no column of nulls (a wakeup has no prev task
# or state, a switch no target CPU) and keeps each kind apart up to the bundle, whose
# compact_sched columns are per kind anyway.
_Cols = dict
_KIND_COLS = {
    _SWITCH: ("ts", "cpu", "a_pid", "a_prio", "a_state", "a_comm", "b_pid", "b_prio", "b_comm"),
    _WAKING: ("ts", "cpu", "a_pid", "a_prio", "a_comm", "b_pid"),
    _FREQ: ("ts", "cpu", "a_state"),
}


def _ints(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """An integer column as numpy of its own width (nulls as 0) and its
    validity (None: no null). Not widened to int64: the read-order path
    moves every column twice (window, bundle), and half the bytes moved
    cost less."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not col.null_count:
        return col.to_numpy(zero_copy_only=False), None
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    return pc.fill_null(col, 0).to_numpy(zero_copy_only=False), valid


def _take_rows(cols: _Cols, rows) -> _Cols:
    """The rows ``rows`` (a slice, a mask or indices) of every column."""
    return {name: (v[rows], None if ok is None else ok[rows]) for name, (v, ok) in cols.items()}


def _concat(parts: list[_Cols]) -> _Cols:
    if len(parts) == 1:
        return parts[0]
    out = {}
    for name in parts[0]:
        oks = [p[name][1] for p in parts]
        ok = None if all(o is None for o in oks) else np.concatenate(
            [np.ones(len(p[name][0]), dtype=bool) if o is None else o for p, o in zip(parts, oks)])
        out[name] = (np.concatenate([p[name][0] for p in parts]), ok)
    return out


def _len(cols: _Cols | None) -> int:
    return 0 if cols is None else len(cols["ts"][0])


def _known(ok: np.ndarray | None, i: int) -> bool:
    return ok is None or bool(ok[i])


def _switch_cols(c: dict[str, pa.Array]) -> tuple[_Cols, None]:
    """A switches batch's events (``c``'s comm columns are comm ids, _Comms.ids)
    and which of its rows they are (None: all)."""
    return {name: _ints(c[col]) for name, col in (
        ("ts", "ts_ns"), ("cpu", "cpu"), ("a_pid", "prev_pid"), ("a_prio", "prev_prio"),
        ("a_state", "prev_state"), ("a_comm", "prev_comm"), ("b_pid", "next_pid"),
        ("b_prio", "next_prio"), ("b_comm", "next_comm"))}, None


def _kept(cols: _Cols, keep: np.ndarray) -> tuple[_Cols, np.ndarray | None]:
    if keep.all():
        return cols, None
    rows = np.flatnonzero(keep)
    return _take_rows(cols, rows), rows


def _waking_cols(c: dict[str, pa.Array]) -> tuple[_Cols, np.ndarray | None]:
    """The wakeups that have a CPU to show them on (``c``'s comm column is
    comm ids) and which rows they are; the rest are counted as skipped by
    the caller (None: all kept)."""
    waker, target = _np(c["waker_cpu"]), _np(c["target_cpu"])
    cpu = np.where(waker >= 0, waker, target).astype(np.int32)
    # prio from the weight here, once per batch: per bundle it was 0.1 s at 10^7 events.
    prio = _prio_from_weight(*_ints(c["weight"])).astype(np.int32)
    cols = {"ts": _ints(c["ts_ns"]), "cpu": (cpu, None), "a_pid": _ints(c["pid"]),
            "a_prio": (prio, None), "a_comm": _ints(c["comm"]), "b_pid": _ints(c["target_cpu"])}
    return _kept(cols, cpu >= 0)


def _freq_cols(c: dict[str, pa.Array]) -> tuple[_Cols, np.ndarray | None]:
    """Every interval with a known frequency; the bundle writer keeps changes."""
    freq, cpu = _np(c["freq_khz"]), _np(c["cpu"])
    cols = {"ts": _ints(c["interval_start_ns"]), "cpu": _ints(c["cpu"]), "a_state": _ints(c["freq_khz"])}
    return _kept(cols, (freq >= 0) & (cpu >= 0))


def _events_batch(kind: int, row: int, cols: _Cols, rows: np.ndarray | None) -> pa.RecordBatch:
    """One kind's events as an _EVENTS batch for the external sort (``rows``:
    which rows of the batch read at ``row`` they are, None: all)."""
    n = _len(cols)
    arrays = []
    for f in _EVENTS:
        if f.name == "kind":
            arrays.append(pa.array(np.full(n, kind, dtype=np.int8)))
        elif f.name == "ord":
            arrays.append(pa.array(np.arange(row, row + n, dtype=np.int64) if rows is None
                                   else rows.astype(np.int64) + row))
        elif f.name in cols:
            values, ok = cols[f.name]
            arrays.append(pa.array(values, type=f.type, mask=None if ok is None else ~ok))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=_EVENTS)


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


def _latest_rows(keys: np.ndarray, ts: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Among the rows where ``ok``, each key's latest row (by ts, then file order)."""
    idx = np.flatnonzero(ok)
    return idx[_last_per_group(keys[idx], ts[idx])] if len(idx) else idx


class _Latest:
    """Per key (a pid), the value of its latest row: by ts, then by the rank
    its caller gives (table, batch, column: the order the sort path has
    always noted them in), so that both paths, which read the tables in
    different orders, agree. Each batch's rows are reduced to one per key
    and kept as numpy chunks, reduced together now and then: a Python loop
    over every key of every batch cost 0.5 s at 10^7 events."""

    _REDUCE_AT = 1 << 18  # candidates held before reducing them

    def __init__(self, decode=None) -> None:
        self._chunks: list[tuple[np.ndarray, ...]] = []  # keys, ts, rank, values
        self._held = 0
        self._values: dict[int, object] | None = None
        self._decode = decode  # a value as the process tree wants it (comm id -> name)

    def add(self, keys: np.ndarray, ts: np.ndarray, values: pa.Array, rank: int,
            rows: np.ndarray | None = None) -> None:
        """Note integer ``values`` by ``keys`` (pids > 0) at ``ts``. ``rows``,
        when given, is ``_latest_rows(keys, ts, keys > 0)``, which holds when
        ``values`` has no null: callers noting several columns of the same
        rows find them once."""
        if rows is None or values.null_count:
            rows = _latest_rows(keys, ts, (keys > 0) & values.is_valid().to_numpy(zero_copy_only=False))
        if not len(rows):
            return
        self._chunks.append((keys[rows], ts[rows], np.full(len(rows), rank, dtype=np.int64),
                             _np(values)[rows]))
        self._held += len(rows)
        self._values = None
        if self._held > self._REDUCE_AT:
            self._reduce()

    def _reduce(self) -> None:
        if not self._chunks:
            return
        keys, ts, rank, values = (np.concatenate(x) for x in zip(*self._chunks))
        order = np.lexsort((rank, ts, keys))  # a batch has one row per key: no tie left
        last = order[np.append(keys[order][1:] != keys[order][:-1], True)]
        self._chunks = [(keys[last], ts[last], rank[last], values[last])]
        self._held = len(last)

    @property
    def values(self) -> dict[int, object]:
        if self._values is None:
            self._reduce()
            keys, values = (self._chunks[0][0], self._chunks[0][3]) if self._chunks else ((), ())
            decode = self._decode or (lambda v: v)
            self._values = {k: decode(v) for k, v in zip(np.asarray(keys).tolist(),
                                                          np.asarray(values).tolist())}
        return self._values

    def get(self, key: int):
        return self.values.get(key)


# _Latest ranks: the order the sort path has always noted the tables in.
def _rank(table: int, row: int, column: int = 0) -> int:
    return (table << 60) | (row << 1) | column


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
    # One chunk first: take() over a many-chunked table resolves every index
    # chunk by chunk and cost 4x the sort itself at 10^6 events.
    table = table.combine_chunks()
    cpu, ts, kind, ordn = _keys(table)
    order = np.lexsort((ordn, kind, ts, cpu))
    if np.all(order[1:] > order[:-1]):
        return table
    return table.take(pa.array(order))


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
            take = table.num_rows if bound is None else _prefix_le(table, bound)
            if take:
                parts.append(table.slice(0, take))
                pending[i] = table.slice(take)
        yield _sort(pa.concat_tables(parts))


def _prefix_le(table: pa.Table, bound: tuple[int, ...]) -> int:
    """How many leading rows of ``table`` (sorted by _keys) have keys <= ``bound``:
    a binary search key by key (comparing every row of every run's pending
    block at each merge step made a step cost rows x runs)."""
    lo, hi = 0, table.num_rows
    for key, b in zip(_keys(table), bound):
        part = key[lo:hi]  # rows whose earlier keys equal the bound's
        lo, hi = lo + int(np.searchsorted(part, b, "left")), lo + int(np.searchsorted(part, b, "right"))
        if lo == hi:
            return lo
    return hi


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


def _protos():
    """The ``perfetto`` package's generated trace protos (imported on first use:
    only this exporter needs them)."""
    try:
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2
    except ImportError:
        raise MissingDependency(
            "export perfetto needs the perfetto package (Perfetto's trace protos)",
            hint="pip install 'perfetto>=0.50' protobuf, or reinstall aios-lab") from None
    return perfetto_trace_pb2


def _write_packet(out: BinaryIO, trace) -> None:
    """Writes a ``Trace`` holding packets. Serialized ``Trace`` messages
    concatenate into one ``Trace`` (``packet`` is a repeated field), so each
    is written as soon as it is built and none is kept."""
    out.write(trace.SerializeToString())


def _new_packet(pb, timestamp: int | None = None):
    trace = pb.Trace()
    packet = trace.packet.add()
    packet.trusted_packet_sequence_id = _SEQUENCE_ID
    if timestamp is not None:
        packet.timestamp = timestamp
    return trace, packet


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


def _clock_snapshot(pb, metadata: dict):
    start = metadata.get("start")
    if not isinstance(start, dict):
        return None
    mono = start.get("monotonic_ns")
    wall = _wall_ns(start.get("wall"))
    if isinstance(mono, bool) or not isinstance(mono, int) or mono < 0 or wall is None or wall < 0:
        return None
    trace, packet = _new_packet(pb)
    snap = packet.clock_snapshot
    snap.clocks.add(clock_id=pb.BUILTIN_CLOCK_BOOTTIME, timestamp=mono)
    snap.clocks.add(clock_id=pb.BUILTIN_CLOCK_REALTIME, timestamp=wall)
    snap.primary_trace_clock = pb.BUILTIN_CLOCK_BOOTTIME
    return trace


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


def _system_info(pb, metadata: dict, stats: ExportStats):
    kernel = metadata.get("kernel") if isinstance(metadata.get("kernel"), dict) else {}
    host = metadata.get("host") if isinstance(metadata.get("host"), dict) else {}
    release = _kernel_release(kernel.get("release"))
    if release is None:
        release, stats.kernel_release_assumed = FALLBACK_KERNEL_RELEASE, True
    stats.kernel_release = release
    trace, packet = _new_packet(pb)
    info = packet.system_info
    info.utsname.sysname = "Linux"
    info.utsname.release = release
    if isinstance(kernel.get("version"), str):
        info.utsname.version = kernel["version"]
    if isinstance(host.get("machine"), str) and host["machine"]:
        info.utsname.machine = host["machine"]
    cpus = host.get("cpus")
    if isinstance(cpus, int) and not isinstance(cpus, bool) and cpus > 0:
        info.num_cpus = cpus
    return trace


def _process_tree(pb, tgids: _Latest, comms: _Latest, ppids: _Latest, first_ts: int,
                  stats: ExportStats, chunk: int = 4096) -> Iterator:
    """ProcessTree packets: every thread seen, and every process (tgid) of one."""
    pids = sorted(set(tgids.values) | set(comms.values))
    any_comm: dict[int, str] = {}  # tgid -> comm of its lowest tid with one
    threads = []
    for pid in pids:
        tgid, comm = tgids.get(pid), comms.get(pid)
        threads.append((pid, tgid, comm))
        if tgid is not None and comm is not None:
            any_comm.setdefault(tgid, comm)
    processes = sorted({t for t in (tgids.get(p) for p in pids) if t is not None and t > 0})
    stats.threads, stats.processes = len(pids), len(processes)
    entries = [("t", t) for t in threads] + [("p", p) for p in processes]
    for i in range(0, len(entries), chunk):
        trace, packet = _new_packet(pb, first_ts)
        tree = packet.process_tree
        for kind, entry in entries[i:i + chunk]:
            if kind == "t":
                pid, tgid, comm = entry
                t = tree.threads.add(tid=pid)
                if comm is not None:
                    t.name = comm
                if tgid is not None:
                    t.tgid = tgid
                continue
            p = tree.processes.add(pid=entry)
            ppid = ppids.get(entry)
            if ppid is not None:
                p.ppid = ppid
            comm = comms.get(entry)  # its main thread's name
            if comm is None:
                comm = any_comm.get(entry)
            if comm is not None:
                p.cmdline.append(comm)
                p.cmdline_is_comm = True
        yield trace


# -- ftrace bundles -----------------------------------------------------------


def _prio_from_weight(weight: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """p->prio of a CFS task from its load weight (raw or scaled by 1024)."""
    w = weight.astype(np.int64)
    scaled = (w % 1024 == 0) & (w >= 1024 * 15)
    w = np.where(scaled, w >> 10, w)
    order, sorted_w = _NICE_ORDER, _NICE_SORTED
    at = np.clip(np.searchsorted(sorted_w, w), 0, len(sorted_w) - 1)
    exact = sorted_w[at] == w
    if valid is not None:
        exact &= valid
    nice = order[at] - 20
    return np.where(exact, 120 + nice, DEFAULT_PRIO).astype(np.int64)


def _deltas(ts: np.ndarray) -> list[int]:
    """CompactSched's timestamps: the first absolute, then each minus the one before."""
    out = ts.copy()
    out[1:] -= ts[:-1]
    return out.tolist()


# The columns of the external sort's batches the bundle writer reads,
# converted once per sorted batch. Converting them per bundle, from a table
# rebuilt out of batch slices, cost as much as filling the protos (cProfile
# at 10^7 events: 0.88 s against 0.91 s in the extend calls).
_BUNDLE_COLS = ("ts", "cpu", "kind", "a_pid", "a_prio", "a_state", "a_comm",
                "b_pid", "b_prio", "b_comm")


def _columns(batch: pa.RecordBatch) -> _Cols:
    return {name: _ints(batch.column(name)) for name in _BUNDLE_COLS}


class _Pending:
    """One CPU's events not yet in a bundle, each kind in its own column
    chunks, in time order. Wakeups and frequency changes carry their place
    in the CPU's sequence of events (column ``pos``: the CPU's first event
    is 0), which says which bundle each goes to; switches fill the places
    left. So no event is moved to interleave the kinds, which
    compact_sched keeps apart anyway."""

    def __init__(self) -> None:
        self.chunks: dict[int, list[_Cols]] = {_FREQ: [], _WAKING: [], _SWITCH: []}
        self.start = 0  # place of the first event not in a bundle yet
        self.end = 0    # place after the last event added

    def add(self, kinds: dict[int, _Cols]) -> None:
        """Events that come after all those added before, each kind's in
        time order (file order at equal times)."""
        empty = np.empty(0, dtype=np.int64)
        ts = {k: kinds[k]["ts"][0] if k in kinds else empty for k in self.chunks}
        # A place: the event's rank in its kind, plus the events of other
        # kinds before it (at equal times a frequency change comes first,
        # then a wakeup, then a switch).
        for kind, others in ((_WAKING, ((_SWITCH, "left"), (_FREQ, "right"))),
                             (_FREQ, ((_SWITCH, "left"), (_WAKING, "left")))):
            if kind in kinds:
                t = ts[kind]
                pos = np.arange(self.end, self.end + len(t), dtype=np.int64)
                for other, side in others:
                    if len(ts[other]):
                        pos += np.searchsorted(ts[other], t, side)
                kinds[kind]["pos"] = (pos, None)
        for kind, cols in kinds.items():
            self.chunks[kind].append(cols)
            self.end += _len(cols)

    def count_before(self, kind: int, place: int) -> int:
        """How many pending events of ``kind`` (not a switch) come before ``place``."""
        n = 0
        for cols in self.chunks[kind]:
            pos = cols["pos"][0]
            if pos[-1] >= place:
                return n + int(np.searchsorted(pos, place))
            n += len(pos)
        return n

    def take(self, kind: int, n: int) -> _Cols | None:
        """The first ``n`` pending events of ``kind``, removed."""
        if not n:
            return None
        chunks, parts = self.chunks[kind], []
        while n:
            have = _len(chunks[0])
            if have <= n:
                parts.append(chunks.pop(0))
                n -= have
            else:
                parts.append(_take_rows(chunks[0], slice(0, n)))
                chunks[0] = _take_rows(chunks[0], slice(n, None))
                n = 0
        return _concat(parts)


class _BundleWriter:
    """Turns each CPU's events, in time order, into FtraceEventBundle packets.

    Switches and wakeups go into the bundle's ``compact_sched`` columns, as
    Perfetto's own ftrace reader writes them: a switch there carries only
    its next task and prev_state, and trace processor takes the prev task
    from the CPU's previous switch. So a switch goes compact only when its
    prev task (pid, comm, prio) is that previous switch's next task and its
    fields are all known; otherwise (a CPU's first switch, a gap left by lost
    events, a rename) it is written as a full ``sched_switch`` event, and so
    is a wakeup without a target CPU or comm. Frequency changes are full
    ``cpu_frequency`` events. A CPU's bundles hold its events
    ``bundle_events`` at a time, in (ts, kind, file order). Each bundle is
    built as protos, each compact column filled by one ``extend`` of a list
    made from a numpy array, and written at once; only the bundles being
    filled are held.
    """

    def __init__(self, pb, out: BinaryIO, first_prev: dict[int, int], bundle_events: int,
                 stats: ExportStats, comms: _Comms, hold_first: bool = False) -> None:
        self.pb = pb
        self.names = comms.names
        self.out = out
        self.running = dict(first_prev)  # cpu -> task running there now
        # cpu -> (pid, comm id, prio) of the task its latest switch switched to
        self.chain: dict[int, tuple[int, int | None, int | None]] = {}
        self.bundle_events = bundle_events
        self.stats = stats
        self.cpus: set[int] = set()
        self.freq: dict[int, int] = {}  # cpu -> last kHz written
        self._pending: dict[int, _Pending] = {}  # per CPU, the events of its bundles being filled
        # In read order (hold_first), a CPU's events wait until its first
        # switch is seen: the full events before it name that switch's prev
        # task (self.running), which the sort path learns in pass 1.
        self.hold_first = hold_first
        self.held = 0  # events waiting so
        # Scratch for the per-bundle intern tables, indexed by comm id: the
        # first position of each id in the bundle (_UNSEEN between bundles),
        # and its index in the bundle's table.
        self._first = np.full(len(self.names), _UNSEEN, dtype=np.int64)
        self._index = np.zeros(len(self.names), dtype=np.int64)
        self._names = np.array(self.names, dtype=object)  # to pick a table's names at once

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Events sorted by (cpu, ts, kind, ord), every CPU's in one run (the
        external sort's output): a CPU's last bundle is written when the next
        CPU begins."""
        cols = _columns(batch)
        cpu, kind = cols["cpu"][0], cols["kind"][0]
        cuts = np.flatnonzero(np.diff(cpu)) + 1
        for s, e in zip(np.concatenate(([0], cuts)).tolist(), np.concatenate((cuts, [len(cpu)])).tolist()):
            kinds = {}
            for k, names in _KIND_COLS.items():
                rows = np.flatnonzero(kind[s:e] == k) + s
                if len(rows):
                    kinds[k] = _take_rows({name: cols[name] for name in names}, rows)
            self.add(int(cpu[s]), kinds, close_others=True)

    def add(self, cpu: int, kinds: dict[int, _Cols], close_others: bool = False) -> None:
        """``cpu``'s next events, per kind, each kind's in time order and all
        after the events given for ``cpu`` before. ``close_others``: write
        the other CPUs' partial bundles first (the sort path, where a CPU
        does not come back)."""
        if _FREQ in kinds:
            kinds[_FREQ] = self._frequency_changes(cpu, kinds[_FREQ])
        kinds = {k: cols for k, cols in kinds.items() if _len(cols)}
        if not kinds:
            return
        if close_others:
            for other in [o for o in self._pending if o != cpu]:
                self.flush(other)
        self.cpus.add(cpu)
        pending = self._pending.get(cpu)
        if pending is None:
            pending = self._pending[cpu] = _Pending()
        if self.hold_first and cpu not in self.running:
            if _SWITCH not in kinds:
                self.held += sum(_len(cols) for cols in kinds.values())
                pending.add(kinds)
                return
            self.running[cpu] = int(kinds[_SWITCH]["a_pid"][0][0])
            self.held -= pending.end - pending.start
        pending.add(kinds)
        self._cut(cpu, pending, last=False)

    def _cut(self, cpu: int, pending: _Pending, last: bool) -> None:
        """Write ``cpu``'s full bundles (``last``: and the partial one)."""
        while pending.end - pending.start >= self.bundle_events or (last and pending.end > pending.start):
            place = min(pending.start + self.bundle_events, pending.end)
            wk = pending.count_before(_WAKING, place)
            fq = pending.count_before(_FREQ, place)
            self._bundle(cpu, pending.take(_SWITCH, place - pending.start - wk - fq),
                         pending.take(_WAKING, wk), pending.take(_FREQ, fq), pending.start)
            pending.start = place

    def flush(self, cpu: int | None = None) -> None:
        """Write the bundles being filled (of ``cpu``, or of every CPU)."""
        for c in ([cpu] if cpu is not None else sorted(self._pending)):
            pending = self._pending.pop(c, None)
            if pending is not None:
                self._cut(c, pending, last=True)  # held events may be more than one bundle

    def _frequency_changes(self, cpu: int, cols: _Cols) -> _Cols:
        """Drop frequency rows that repeat their CPU's previous frequency."""
        khz = cols["a_state"][0]
        if not len(khz):
            return cols
        before = np.empty_like(khz)
        before[1:] = khz[:-1]
        before[0] = self.freq.get(cpu, -1)
        self.freq[cpu] = int(khz[-1])
        keep = khz != before
        return cols if keep.all() else _take_rows(cols, keep)

    def _intern(self, used: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The bundle's intern table (names in order of first use) and each
        use's index into it, in time linear in the uses (a sort per bundle,
        np.unique, was a seventh of the writer's time)."""
        grow = len(self.names) - len(self._first)
        if grow > 0:  # names met since (in read order, the names grow as rows are read)
            self._first = np.concatenate((self._first, np.full(grow, _UNSEEN, dtype=np.int64)))
            self._index = np.concatenate((self._index, np.zeros(grow, dtype=np.int64)))
            self._names = np.array(self.names, dtype=object)
        pos = np.arange(len(used))
        np.minimum.at(self._first, used, pos)
        ids = used[self._first[used] == pos]  # at their first use: in order of it
        self._first[ids] = _UNSEEN
        self._index[ids] = np.arange(len(ids))
        return self._names[ids].tolist(), self._index[used]

    def _compact_switches(self, cpu: int, sw: _Cols) -> np.ndarray:
        """Which switches go compact: prev task = the previous switch's next,
        every field known."""
        a_pid, b_pid = sw["a_pid"][0], sw["b_pid"][0]
        a_prio, a_prio_ok = sw["a_prio"]
        a_comm, a_comm_ok = sw["a_comm"]
        b_prio, b_prio_ok = sw["b_prio"]
        b_comm, b_comm_ok = sw["b_comm"]
        compact = np.empty(len(a_pid), dtype=bool)
        compact[1:] = (a_pid[1:] == b_pid[:-1]) & (a_prio[1:] == b_prio[:-1]) & (a_comm[1:] == b_comm[:-1])
        for ok, this in ((a_prio_ok, True), (a_comm_ok, True), (b_prio_ok, False), (b_comm_ok, False)):
            if ok is not None:
                compact[1:] &= ok[1:] if this else ok[:-1]
        last = self.chain.get(cpu)
        compact[0] = (last is not None and last[1] is not None and last[2] is not None
                      and _known(a_prio_ok, 0) and _known(a_comm_ok, 0) and int(a_pid[0]) == last[0]
                      and int(a_prio[0]) == last[2] and int(a_comm[0]) == last[1])
        for ok in (sw["a_state"][1], b_prio_ok, b_comm_ok):  # the compact columns' own fields
            if ok is not None:
                compact &= ok
        self.chain[cpu] = (int(b_pid[-1]), int(b_comm[-1]) if _known(b_comm_ok, -1) else None,
                           int(b_prio[-1]) if _known(b_prio_ok, -1) else None)
        return compact

    def _bundle(self, cpu: int, sw: _Cols | None, wk: _Cols | None, fq: _Cols | None,
                start: int) -> None:
        """One bundle of ``cpu``'s events: its switches, wakeups and frequency
        changes (``start``: the place of its first event)."""
        pb = self.pb
        n_sw, n_wk, n_fq = _len(sw), _len(wk), _len(fq)
        compact_sw = self._compact_switches(cpu, sw) if n_sw else np.zeros(0, dtype=bool)
        compact_wk = np.ones(n_wk, dtype=bool)
        if n_wk:
            for ok in (wk["b_pid"][1], wk["a_comm"][1]):  # target_cpu and comm known
                if ok is not None:
                    compact_wk &= ok
        n_csw, n_cwk = int(compact_sw.sum()), int(compact_wk.sum())
        # All of them compact (the rule): the columns as they are, not a copy.
        csw = slice(None) if n_csw == n_sw else np.flatnonzero(compact_sw)
        cwk = slice(None) if n_cwk == n_wk else np.flatnonzero(compact_wk)

        trace, packet = _new_packet(pb)
        bundle = packet.ftrace_events
        bundle.cpu = cpu
        if n_csw or n_cwk:
            cs = bundle.compact_sched
            used = [sw["b_comm"][0][csw]] if n_csw else []
            if n_cwk:
                used.append(wk["a_comm"][0][cwk])
            table, index = self._intern(np.concatenate(used) if len(used) > 1 else used[0])
            cs.intern_table.extend(table)
            if n_csw:
                cs.switch_timestamp.extend(_deltas(sw["ts"][0][csw]))
                cs.switch_prev_state.extend(sw["a_state"][0][csw].tolist())
                cs.switch_next_pid.extend(sw["b_pid"][0][csw].tolist())
                cs.switch_next_prio.extend(sw["b_prio"][0][csw].tolist())
                cs.switch_next_comm_index.extend(index[:n_csw].tolist())
            if n_cwk:
                cs.waking_timestamp.extend(_deltas(wk["ts"][0][cwk]))
                cs.waking_pid.extend(wk["a_pid"][0][cwk].tolist())
                cs.waking_target_cpu.extend(wk["b_pid"][0][cwk].tolist())
                cs.waking_prio.extend(wk["a_prio"][0][cwk].tolist())
                cs.waking_comm_index.extend(index[n_csw:].tolist())
        if n_csw < n_sw or n_cwk < n_wk or n_fq:
            self._full_events(bundle, cpu, sw, wk, fq, start, compact_sw, compact_wk)
        self.stats.sched_switch += n_sw
        self.stats.sched_waking += n_wk
        self.stats.cpu_frequency += n_fq
        self.stats.compact_events += n_csw + n_cwk
        if n_sw:
            self.running[cpu] = int(sw["b_pid"][0][-1])
        _write_packet(self.out, trace)
        self.stats.bundles += 1
        self.stats.packets += 1

    def _full_events(self, bundle, cpu: int, sw: _Cols | None, wk: _Cols | None, fq: _Cols | None,
                     start: int, compact_sw: np.ndarray, compact_wk: np.ndarray) -> None:
        """The events compact_sched cannot carry, one FtraceEvent each, in the
        CPU's order (few: a CPU's first switch, gaps, frequency changes)."""
        n_sw, n_wk, n_fq = _len(sw), _len(wk), _len(fq)
        # Each event's place in the bundle: wakeups and frequency changes
        # carry theirs, the switches are in the places left.
        wk_at = wk["pos"][0] - start if n_wk else np.zeros(0, dtype=np.int64)
        fq_at = fq["pos"][0] - start if n_fq else np.zeros(0, dtype=np.int64)
        free = np.ones(n_sw + n_wk + n_fq, dtype=bool)
        free[wk_at] = False
        free[fq_at] = False
        sw_at = np.flatnonzero(free)
        events = sorted([(p, _SWITCH, i) for i, p in zip(np.flatnonzero(~compact_sw).tolist(),
                                                          sw_at[~compact_sw].tolist())]
                        + [(p, _WAKING, i) for i, p in zip(np.flatnonzero(~compact_wk).tolist(),
                                                           wk_at[~compact_wk].tolist())]
                        + [(p, _FREQ, i) for i, p in enumerate(fq_at.tolist())])
        # FtraceEvent.pid: the task on the CPU then (the latest earlier switch's next).
        carried = self.running.get(cpu, 0)

        def known(cols: _Cols, name: str, row: int) -> int | None:
            values, ok = cols[name]
            return int(values[row]) if _known(ok, row) else None

        def comm(cols: _Cols, name: str, row: int) -> str | None:
            i = known(cols, name, row)
            return None if i is None else self.names[i]

        for place, kind, row in events:
            if kind == _SWITCH:
                ev = bundle.event.add(timestamp=int(sw["ts"][0][row]))
                ev.pid = int(sw["a_pid"][0][row])
                s = ev.sched_switch
                s.prev_pid, s.next_pid = int(sw["a_pid"][0][row]), int(sw["b_pid"][0][row])
                for field_name, value in (("prev_comm", comm(sw, "a_comm", row)),
                                          ("prev_prio", known(sw, "a_prio", row)),
                                          ("prev_state", known(sw, "a_state", row)),
                                          ("next_comm", comm(sw, "b_comm", row)),
                                          ("next_prio", known(sw, "b_prio", row))):
                    if value is not None:
                        setattr(s, field_name, value)
                continue
            at = int(np.searchsorted(sw_at, place)) - 1
            current = int(sw["b_pid"][0][at]) if at >= 0 else carried
            cols = wk if kind == _WAKING else fq
            ev = bundle.event.add(timestamp=int(cols["ts"][0][row]))
            ev.pid = current
            if kind == _WAKING:
                w = ev.sched_waking
                w.pid, w.prio, w.success = int(wk["a_pid"][0][row]), int(wk["a_prio"][0][row]), 1
                name = comm(wk, "a_comm", row)
                if name is not None:
                    w.comm = name
                target = known(wk, "b_pid", row)
                if target is not None:
                    w.target_cpu = target
            else:
                ev.cpu_frequency.state = int(fq["a_state"][0][row])
                ev.cpu_frequency.cpu_id = cpu


# -- entry point --------------------------------------------------------------


def export_perfetto(trace: Trace | str | Path, out: Path | str, *,
                    bundle_events: int = DEFAULT_BUNDLE_EVENTS,
                    batch_rows: int = DEFAULT_BATCH_ROWS,
                    run_rows: int = DEFAULT_RUN_ROWS,
                    reorder_rows: int = DEFAULT_REORDER_ROWS) -> ExportStats:
    """Write ``trace`` as a Perfetto protobuf trace at ``out``; see the module
    docstring for what maps to what and which clock the times are on.

    ``bundle_events`` caps the events of one FtraceEventBundle, ``batch_rows``
    the rows read and encoded at once, ``run_rows`` the events sorted in
    memory before the sort spills to a scratch folder beside ``out`` (and the
    most the read-order path holds), ``reorder_rows`` how late (in rows of
    its table) a row may come in read order; 0: always sort. The result's
    ``order`` says which path wrote the file (see "Memory" above).

    Raises TraceError when the trace cannot be read or has no sched_switch
    events (``NO_SWITCHES_MESSAGE``), or the output cannot be written; then
    ``out`` is untouched (absent, or the file it was before).
    """
    if not isinstance(trace, Trace):
        trace = Trace.open(trace)
    out = Path(out)
    if bundle_events < 1 or batch_rows < 1 or run_rows < 1 or reorder_rows < 0:
        raise ValueError("bundle_events, batch_rows and run_rows must be >= 1, reorder_rows >= 0")
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

    pb = _protos()
    stats = ExportStats(path=out)
    scratch = _Scratch(parent, out.name)
    try:
        with open_atomic(out, "wb", buffering=1 << 20) as f, _ARROW_POOL.use():
            _export(pb, trace, f, stats, scratch, bundle_events, batch_rows, run_rows, reorder_rows)
            stats.bytes = f.tell()
    except OSError as e:
        hint = ("check that the folder is writable" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                else "check free disk space")
        raise TraceError(f"writing {out} failed: {e.strerror or e}", hint=hint) from None
    finally:
        scratch.cleanup()
    return stats


class _ArrowPool:
    """Arrow allocates from jemalloc (else the C library's malloc) while
    exports run, instead of pyarrow's default, mimalloc, unless
    ARROW_DEFAULT_MEMORY_POOL names a pool (the user's choice stands). The
    previous default comes back when the last export in the process ends.

    Why: mimalloc backs its segments with transparent huge pages and gives
    freed ones back to the kernel soon after, so reading the Parquet tables
    faults huge pages in again and again; where the kernel compacts memory
    to find them (THP "madvise", as on this project's VM) a fault costs
    about a millisecond of system time. Reading the benchmark's 8 M switches
    at 10^7 events: 1.52 CPU-s of system time with mimalloc (84 MB of
    AnonHugePages, 1,336 faults), 0.06 with jemalloc or malloc; a whole
    export 0.9-1.6 against 0.15-0.22 with jemalloc (2026-12-04). Nothing
    else changes: same allocations, same output."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._before: pa.MemoryPool | None = None

    @staticmethod
    def pool() -> pa.MemoryPool:
        try:
            return pa.jemalloc_memory_pool()
        except NotImplementedError:  # a pyarrow built without jemalloc
            return pa.system_memory_pool()

    @contextmanager
    def use(self) -> Iterator[None]:
        if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
            yield
            return
        with self._lock:
            if not self._users:
                self._before = pa.default_memory_pool()
                pa.set_memory_pool(self.pool())
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if not self._users:
                    pa.set_memory_pool(self._before)
                    self._before = None


_ARROW_POOL = _ArrowPool()


class _Notes:
    """What the header packets need, noted while the tables are read: each
    pid's latest tgid and comm, each process's ppid, each CPU's first switch
    (ts, row, prev_pid) and the first timestamp."""

    def __init__(self, names: _Comms, first: bool = True) -> None:
        self.tgids, self.ppids = _Latest(), _Latest()
        self.comms = _Latest(decode=lambda i: names.names[i])  # comm ids
        self.want_first = first  # the read-order path finds each CPU's first switch as it writes
        self.first: dict[int, tuple[int, int, int]] = {}
        self.first_ts: int | None = None

    def switches(self, trace: Trace, row: int, c: dict[str, pa.Array]) -> None:
        """``c``'s comm columns are comm ids (_Comms.ids)."""
        ts, cpu = _np(c["ts_ns"]), _np(c["cpu"])
        if (cpu < 0).any():
            raise TraceError(f"trace {trace.path}: switches.parquet has a negative cpu in row "
                             f"{row + int(np.argmax(cpu < 0))}; the file is damaged, re-collect it")
        low = int(ts.min())
        self.first_ts = low if self.first_ts is None else min(self.first_ts, low)
        prev, nxt = _np(c["prev_pid"]), _np(c["next_pid"])
        for i in (_pick_per_group(cpu, ts, latest=False).tolist() if self.want_first else ()):
            c_i, key = int(cpu[i]), (int(ts[i]), row + i)
            if c_i not in self.first or key < self.first[c_i][:2]:
                self.first[c_i] = key + (int(prev[i]),)
        for column, (pids, tg, cm) in enumerate(((prev, c["prev_tgid"], c["prev_comm"]),
                                                 (nxt, c["next_tgid"], c["next_comm"]))):
            rows = _latest_rows(pids, ts, pids > 0)
            self.tgids.add(pids, ts, tg, _rank(0, row, column), rows)
            self.comms.add(pids, ts, cm, _rank(0, row, column), rows)

    def wakeups(self, row: int, c: dict[str, pa.Array]) -> None:
        """``c``'s comm column is comm ids (_Comms.ids)."""
        ts, pids = _np(c["ts_ns"]), _np(c["pid"])
        rows = _latest_rows(pids, ts, pids > 0)
        self.tgids.add(pids, ts, c["tgid"], _rank(1, row), rows)
        self.comms.add(pids, ts, c["comm"], _rank(1, row), rows)

    def processes(self, trace: Trace, batch_rows: int) -> None:
        for row, c in _read(trace, "processes", _PROC_COLS, batch_rows):
            self.ppids.add(_np(c["pid"]), _np(c["ts_ns"]), c["ppid"], _rank(0, row))

    def process_tree(self, pb, stats: ExportStats) -> Iterator:
        return _process_tree(pb, self.tgids, self.comms, self.ppids, self.first_ts or 0, stats)


def _streams(trace: Trace, notes: _Notes, names: _Comms, stats: ExportStats,
             batch_rows: int) -> dict[int, Iterator[tuple[int, _Cols, np.ndarray | None]]]:
    """Per event kind, its table's events in read order, a batch at a time:
    (the batch's first row number, its events' columns, which of its rows
    they are or None for all), noting what the header needs on the way."""
    def switches():
        for row, c in _read(trace, "switches", _SWITCH_COLS, batch_rows):
            c = {**c, "prev_comm": names.ids(c["prev_comm"]), "next_comm": names.ids(c["next_comm"])}
            notes.switches(trace, row, c)
            yield (row, *_switch_cols(c))

    def wakings():
        for row, c in _read(trace, "wakeups", _WAKEUP_COLS, batch_rows):
            c = {**c, "comm": names.ids(c["comm"])}
            notes.wakeups(row, c)
            cols, rows = _waking_cols(c)
            stats.skipped_wakeups += 0 if rows is None else len(c["ts_ns"]) - len(rows)
            yield row, cols, rows

    def frequencies():
        for row, c in _read(trace, "cpu_intervals", _CPU_COLS, batch_rows):
            yield (row, *_freq_cols(c))

    return {_FREQ: frequencies(), _WAKING: wakings(), _SWITCH: switches()}


def _export(pb, trace: Trace, f: BinaryIO, stats: ExportStats, scratch: _Scratch,
            bundle_events: int, batch_rows: int, run_rows: int, reorder_rows: int) -> None:
    if reorder_rows:
        try:
            _export_in_read_order(pb, trace, f, stats, bundle_events, batch_rows, run_rows,
                                  reorder_rows)
            stats.order = READ_ORDER
            return
        except _OutOfOrder as e:
            # Start again from nothing: the sort path writes its own header.
            f.seek(0)
            f.truncate()
            vars(stats).update(vars(ExportStats(path=stats.path)))
            stats.read_order_refused = str(e)
    _export_sorted(pb, trace, f, stats, scratch, bundle_events, batch_rows, run_rows)
    stats.order = EXTERNAL_SORT


def _header(pb, f: BinaryIO, trace: Trace, stats: ExportStats) -> None:
    snapshot = _clock_snapshot(pb, trace.metadata)
    if snapshot is not None:
        _write_packet(f, snapshot)
        stats.packets += 1
    _write_packet(f, _system_info(pb, trace.metadata, stats))
    stats.packets += 1


def _export_sorted(pb, trace: Trace, f: BinaryIO, stats: ExportStats, scratch: _Scratch,
                   bundle_events: int, batch_rows: int, run_rows: int) -> None:
    # Pass 1: read every table once, in batches, into the external sort,
    # noting on the way what the header packets need.
    sorter = _Sorter(scratch, run_rows, batch_rows)
    names = _Comms()
    notes = _Notes(names)
    for kind, batches in _streams(trace, notes, names, stats, batch_rows).items():
        for row, cols, rows in batches:
            sorter.add(_events_batch(kind, row, cols, rows))
    notes.processes(trace, batch_rows)

    # Pass 2: the header packets, then the events in (cpu, ts) order.
    _header(pb, f, trace, stats)
    for packet in notes.process_tree(pb, stats):
        _write_packet(f, packet)
        stats.packets += 1
    # Before a CPU's first switch, the task running there is that switch's prev.
    running = {cpu: prev for cpu, (_, _, prev) in notes.first.items()}
    bundles = _BundleWriter(pb, f, running, bundle_events, stats, names)
    for batch in sorter.batches():
        bundles.write_batch(batch)
    bundles.flush()
    stats.cpus = sorted(bundles.cpus)


def _with_last(batches: Iterator) -> Iterator[tuple[object, bool]]:
    """(batch, whether it is the last) for each batch: a stream that has
    ended must stop holding the others back at once."""
    it = iter(batches)
    ahead = next(it, None)
    while ahead is not None:
        batch, ahead = ahead, next(it, None)
        yield batch, ahead is None


def _export_in_read_order(pb, trace: Trace, f: BinaryIO, stats: ExportStats, bundle_events: int,
                          batch_rows: int, run_rows: int, reorder_rows: int) -> None:
    """One pass in read order, no global sort: the header, each CPU's
    bundles as they fill (CPUs interleaved, as Perfetto's own traces are),
    then the process tree (trace processor sorts packets by timestamp, and
    the tree's is the first switch's). Raises _OutOfOrder, having written
    part of the file, when the input is not in time order within the window."""
    names = _Comms()
    notes = _Notes(names, first=False)
    _header(pb, f, trace, stats)
    bundles = _BundleWriter(pb, f, {}, bundle_events, stats, names, hold_first=True)
    merge = _InOrder(bundles, run_rows)
    streams = {k: _with_last(v) for k, v in _streams(trace, notes, names, stats, batch_rows).items()}
    live: dict[int, tuple[int, int] | None] = dict.fromkeys(streams)  # kind -> (guard, latest ts)
    while live:
        # Read from the stream that is furthest behind, so that the streams
        # advance together and few rows wait.
        kind = min(live, key=lambda k: -math.inf if live[k] is None else live[k][1])
        item, last = next(streams[kind], (None, True))
        if item is not None and _len(item[1]):
            live[kind] = merge.add(kind, *item, reorder_rows)
        if last:
            del live[kind]
        # A stream's next rows are expected at or after its guard: the
        # earliest time among its last reorder_rows rows.
        if not live:
            break
        if None not in live.values():
            merge.emit(min(guard for guard, _ in live.values()))
    merge.emit(math.inf)
    bundles.flush()
    notes.processes(trace, batch_rows)
    for packet in notes.process_tree(pb, stats):
        _write_packet(f, packet)
        stats.packets += 1
    stats.cpus = sorted(bundles.cpus)


class _OutOfOrder(Exception):
    """The input is not in time order within the read-order path's window."""


class _InOrder:
    """Events of several streams (one per kind), each in (nearly) time
    order, handed to the bundle writer per CPU and kind, in time order,
    without a global sort.

    Rows are held until every stream has moved past them (``emit``), then
    each kind's are sorted locally by (cpu, ts) (stable: file order at
    ties) and written; the kinds are never interleaved into one table (the
    writer places them). A row that would fall before an event already
    written on its CPU raises _OutOfOrder; so does holding more than
    ``max_rows`` rows (past that, the oldest are written anyway and any
    late row is caught).
    """

    def __init__(self, writer: _BundleWriter, max_rows: int) -> None:
        self.writer = writer
        self.max_rows = max_rows
        self.parts: dict[int, list[_Cols]] = {_FREQ: [], _WAKING: [], _SWITCH: []}
        self.rows = 0
        # Per CPU (index), the (ts, kind) of the last event written.
        self.last_ts = np.full(0, np.iinfo(np.int64).min, dtype=np.int64)
        self.last_kind = np.zeros(0, dtype=np.int64)

    def add(self, kind: int, row: int, cols: _Cols, rows: np.ndarray | None,
            reorder_rows: int) -> tuple[int, int]:
        """Hold the events ``cols`` of kind ``kind`` (``rows``: which rows of
        the batch read at ``row`` they are, None: all); returns the stream's
        guard (the earliest ts of its last ``reorder_rows`` rows: its next
        rows are expected at or after it) and its latest ts."""
        ts, cpu = cols["ts"][0], cols["cpu"][0]
        top = int(cpu.max())
        if top >= len(self.last_ts):
            grow = top + 1 - len(self.last_ts)
            self.last_ts = np.concatenate((self.last_ts, np.full(grow, np.iinfo(np.int64).min)))
            self.last_kind = np.concatenate((self.last_kind, np.zeros(grow, dtype=np.int64)))
        # Rows after every event written (in order, the rule) cannot be late: one comparison.
        if int(ts.min()) <= int(self.last_ts.max()):
            before = self.last_ts[cpu]
            late = (ts < before) | ((ts == before) & (kind < self.last_kind[cpu]))
            if late.any():
                i = int(np.argmax(late))
                raise _OutOfOrder(f"{_TABLE_OF[kind]} row {row + (i if rows is None else int(rows[i]))} "
                                  f"(cpu {int(cpu[i])}, ts {int(ts[i])}) comes after cpu {int(cpu[i])}'s "
                                  f"events up to ts {int(before[i])} were written")
        self.parts[kind].append(cols)
        self.rows += len(ts)
        return int(ts[-reorder_rows:].min()), int(ts.max())

    def emit(self, until: float) -> None:
        """Write the rows with ts < ``until`` (and, past max_rows held, the oldest)."""
        if not self.rows:
            return
        if self.rows > self.max_rows:
            ts = np.concatenate([part["ts"][0] for parts in self.parts.values() for part in parts])
            cut = self.rows - self.max_rows // 2
            until = max(until, int(np.partition(ts, cut)[cut]))
        per_cpu: dict[int, dict[int, _Cols]] = {}
        self.rows = 0
        for kind, parts in self.parts.items():
            out, keep = _split(parts, until)
            self.parts[kind] = keep
            self.rows += sum(_len(part) for part in keep)
            if not out:
                continue
            rows = _concat(out)
            order = _cpu_time_order(rows["cpu"][0], rows["ts"][0])
            if order is not None:
                rows = _take_rows(rows, order)
            cpu = rows["cpu"][0]
            cuts = (np.flatnonzero(cpu[1:] != cpu[:-1]) + 1).tolist()
            for s, e in zip([0] + cuts, cuts + [len(cpu)]):
                per_cpu.setdefault(int(cpu[s]), {})[kind] = _take_rows(rows, slice(s, e))
        for c in sorted(per_cpu):
            kinds = per_cpu[c]
            self.last_ts[c], self.last_kind[c] = max((int(cols["ts"][0][-1]), kind)
                                                     for kind, cols in kinds.items())
            self.writer.add(c, kinds)
        if self.writer.held > self.max_rows:
            raise _OutOfOrder(f"more than {self.max_rows:,} events on CPUs with no switch yet")


def _split(parts: list[_Cols], until: float) -> tuple[list[_Cols], list[_Cols]]:
    """Parts of one stream cut into the rows before ``until`` and the rest:
    a part wholly before (after) it goes (stays) as it is, a sorted one is
    cut by views; only the rest is copied row by row."""
    out, keep = [], []
    for part in parts:
        ts = part["ts"][0]
        if until == math.inf or ts.max() < until:
            out.append(part)
        elif ts.min() >= until:
            keep.append(part)
        elif np.all(ts[1:] >= ts[:-1]):
            at = int(np.searchsorted(ts, until, "left"))
            out.append(_take_rows(part, slice(0, at)))
            keep.append(_take_rows(part, slice(at, None)))
        else:
            early = ts < until
            out.append(_take_rows(part, early))
            keep.append(_take_rows(part, ~early))
    return out, keep


def _cpu_time_order(cpu: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """The stable order by (cpu, ts) of one kind's rows, or None when they
    are in it already. They are a few parts, each in (nearly) time order: a
    stable sort by time merges their runs, then a stable sort by CPU as
    int16 is a radix sort; half the CPU time of np.lexsort."""
    in_time = bool(np.all(ts[1:] >= ts[:-1]))
    if in_time and bool(np.all(cpu[1:] == cpu[:-1])):
        return None
    if int(cpu.max()) >= (1 << 15):
        return np.lexsort((ts, cpu))
    by_time = None if in_time else np.argsort(ts, kind="stable")
    if by_time is None:
        return np.argsort(cpu.astype(np.int16), kind="stable")
    return by_time[np.argsort(cpu[by_time].astype(np.int16), kind="stable")]


_TABLE_OF = {_SWITCH: "switches.parquet", _WAKING: "wakeups.parquet", _FREQ: "cpu_intervals.parquet"}
