"""Write a trace directory atomically.

Everything goes into a hidden sibling directory (``.NAME.partial-<pid>``)
and is renamed onto ``out_dir`` only once every table file and
metadata.json are complete, so a reader never sees a half-written trace:
either ``out_dir`` is absent or it holds a whole trace (status "complete",
or "truncated" when collection was cut short on purpose, e.g. Ctrl-C).
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aios_lab.atomic import publish_dir, write_text_atomic
from aios_lab.errors import TraceError
from aios_lab.safe_output import sweep_stale
from aios_lab.telemetry.schema import (
    METADATA_FILE,
    SCHEMA_VERSION,
    TABLES,
    WAIT_HIST_BUCKETS,
    table_file,
)

STATUSES = ("complete", "truncated")

# Rows buffered per table before they are written as one row group: large
# enough that row groups compress well, small enough to bound memory.
DEFAULT_FLUSH_ROWS = 65_536

# zstd: smaller than snappy and read by pyarrow, pandas, duckdb and polars.
COMPRESSION = "zstd"


def _json_default(obj: Any) -> Any:
    # Metadata often carries paths and timestamps; anything else that JSON
    # cannot hold is a caller bug and should fail before collection starts.
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as e:
        raise TraceError(f"trace metadata cannot be written as JSON: {e}",
                         hint="pass only str/int/float/bool/list/dict values") from None


def _aios_version() -> str:
    try:
        from aios_lab import __version__
        return str(__version__)
    except Exception:  # pragma: no cover - only in a broken install
        return "unknown"


class TraceWriter:
    """Collects rows per table and publishes them as one trace directory.

    ``append`` validates and converts rows at once (so a bad row fails at the
    call that made it), buffers them, and writes a row group every
    ``flush_rows`` rows. ``close`` publishes the trace; ``abort`` drops it.

    As a context manager: a normal exit closes with status "complete"; an
    exception aborts (nothing is left behind) and propagates; a
    KeyboardInterrupt closes with status "truncated", so Ctrl-C keeps what
    was collected, and then propagates so the caller still sees it.
    """

    def __init__(self, out_dir: Path | str, metadata: dict | None = None, *,
                 flush_rows: int = DEFAULT_FLUSH_ROWS) -> None:
        self.out_dir = Path(out_dir)
        self.metadata = dict(metadata or {})
        _dumps(self.metadata)  # fail now, not after an hour of collection
        if flush_rows < 1:
            raise ValueError("flush_rows must be >= 1")
        self.flush_rows = int(flush_rows)
        # Refuse early too: finding out at close() would waste the collection.
        self._check_target()
        sweep_stale(self.out_dir)  # scratch of a writer that was SIGKILLed
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.partial-{os.getpid()}"
        if self.tmp_dir.exists():
            # Left by an earlier process with our pid that died: it can only
            # be garbage, because a live writer would be us.
            shutil.rmtree(self.tmp_dir)
        try:
            self.tmp_dir.mkdir(parents=True)
        except OSError as e:
            raise TraceError(f"cannot create trace directory {self.tmp_dir}: {e.strerror}",
                             hint="check that the output folder is writable") from None
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._buffers: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
        self._buffered: dict[str, int] = {name: 0 for name in TABLES}
        self._counts: dict[str, int] = {name: 0 for name in TABLES}
        self._state = "open"  # open -> closed | aborted
        self.path: Path | None = None

    # -- rows ------------------------------------------------------------------

    def _schema(self, table: str) -> pa.Schema:
        """The schema of `table` in an open writer, or TraceError."""
        self._require_open()
        schema = TABLES.get(table)
        if schema is None:
            raise TraceError(f"unknown trace table {table!r}", hint=f"tables are: {', '.join(TABLES)}")
        return schema

    def _buffer(self, table: str, batch: pa.Table) -> None:
        """Keep a converted batch; write the table's buffer out once it is large."""
        self._buffers[table].append(batch)
        self._buffered[table] += batch.num_rows
        self._counts[table] += batch.num_rows
        if self._buffered[table] >= self.flush_rows:
            self._flush_table(table)

    def append(self, table: str, rows: list[dict]) -> None:
        """Validate ``rows`` against ``table``'s schema and buffer them."""
        schema = self._schema(table)
        if not rows:
            return
        batch = _convert(table, schema, rows)
        self._buffer(table, batch)

    def append_frame(self, table: str, df) -> None:
        """Like append() for a pandas DataFrame with the table's columns (fast path
        for decoded ring-buffer batches)."""
        schema = self._schema(table)
        if df is None or len(df) == 0:
            return
        unknown = sorted(set(df.columns) - set(schema.names))
        missing = [f.name for f in schema if not f.nullable and f.name not in df.columns]
        if unknown or missing:
            raise TraceError(f"{table}: unknown column(s) {unknown}, missing required {missing}")
        try:
            # Nullable columns the frame lacks become nulls, as in append().
            present = [f for f in schema if f.name in df.columns]
            batch = pa.Table.from_pandas(df[[f.name for f in present]], schema=pa.schema(present),
                                         preserve_index=False)
            batch = pa.Table.from_arrays(
                [batch.column(f.name) if f.name in df.columns else pa.nulls(len(df), f.type)
                 for f in schema], schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
            raise TraceError(f"{table}: cannot convert the batch: {exc}") from None
        self._buffer(table, batch)

    def append_table(self, table: str, data: pa.Table) -> None:
        """Like append() for an Arrow table already of the table's schema
        (the collector's per-task interval rows, built from columns)."""
        schema = self._schema(table)
        if not data.schema.equals(schema):
            raise TraceError(f"{table}: the table's schema is not the trace's: {data.schema}")
        if not data.num_rows:
            return
        self._buffer(table, data)

    def warm_up(self) -> None:
        """Run one throw-away conversion per table before collection starts.

        pyarrow pays a one-off cost the first time it converts each schema
        (~15 ms each here, over a second each in an emulated guest); paid
        mid-collection it would stretch the first interval.
        """
        for name, schema in TABLES.items():
            _convert(name, schema, [_dummy_row(schema)])

    def counts(self) -> dict[str, int]:
        """Rows appended so far per table (written or still buffered)."""
        return dict(self._counts)

    def flush(self) -> None:
        """Write every buffered row as row groups now."""
        self._require_open()
        for name in TABLES:
            self._flush_table(name)

    def _flush_table(self, name: str) -> None:
        if not self._buffered[name]:
            return
        data = pa.concat_tables(self._buffers[name])
        self._buffers[name] = []
        self._buffered[name] = 0
        try:
            writer = self._writers.get(name)
            if writer is None:
                # Opened lazily: a table that never gets rows costs nothing
                # until close() writes its empty file.
                writer = pq.ParquetWriter(self.tmp_dir / table_file(name), TABLES[name],
                                          compression=COMPRESSION)
                self._writers[name] = writer
            writer.write_table(data, row_group_size=max(self.flush_rows, data.num_rows))
        except OSError as e:
            raise TraceError(f"writing {table_file(name)} in {self.tmp_dir} failed: {e}",
                             hint="check free disk space") from None

    # -- finishing -------------------------------------------------------------

    def close(self, status: str = "complete", extra: dict | None = None) -> Path:
        """Finish every table, write metadata.json and publish ``out_dir``.

        If ``out_dir`` turned up non-empty meanwhile, the finished trace is
        left in the temporary directory and the TraceError's hint says where.
        """
        self._require_open()
        if status not in STATUSES:
            raise TraceError(f"trace status must be one of {', '.join(STATUSES)}, not {status!r}")
        try:
            self._finish_files(status, extra or {})
        except BaseException:
            # Whatever went wrong, no half trace may survive.
            self.abort()
            raise
        self._state = "closed"
        self._publish()
        self.path = self.out_dir
        return self.out_dir

    def _finish_files(self, status: str, extra: dict) -> None:
        self.flush()
        for name, schema in TABLES.items():
            writer = self._writers.pop(name, None)
            path = self.tmp_dir / table_file(name)
            try:
                if writer is None:
                    # Every trace has every table, so readers need no special
                    # cases: an untouched table is an empty file with the schema.
                    pq.write_table(schema.empty_table(), path, compression=COMPRESSION)
                else:
                    writer.close()
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
            except OSError as e:
                raise TraceError(f"finishing {table_file(name)} in {self.tmp_dir} failed: {e}",
                                 hint="check free disk space") from None
        meta = dict(self.metadata)
        meta.update(extra)
        meta.update({
            "schema_version": SCHEMA_VERSION,
            "status": status,
            "rows": self.counts(),
            "aios_lab_version": _aios_version(),
        })
        text = _dumps(meta) + "\n"
        # metadata.json is the marker of a finished trace: write it whole
        # (temp + rename) so it is never seen half-written.
        write_text_atomic(self.tmp_dir / METADATA_FILE, text)

    def _publish(self) -> None:
        # rename(2) replaces an empty directory atomically and refuses a
        # non-empty one, so the overwrite check and the publish are one step.
        try:
            publish_dir(self.tmp_dir, self.out_dir, replace=False)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise TraceError(
                    f"trace {self.out_dir} already exists and is not empty; not overwriting it",
                    hint=f"the new trace was kept at {self.tmp_dir}: move it elsewhere, "
                         "or remove the old trace and rename it") from None
            raise TraceError(f"cannot move trace into place at {self.out_dir}: {e.strerror}",
                             hint=f"the finished trace is at {self.tmp_dir}") from None

    def abort(self) -> None:
        """Drop everything: close the writers and remove the temporary directory."""
        if self._state != "open":
            return
        self._state = "aborted"
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception:
                pass  # the file is being deleted anyway
        self._writers.clear()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def _check_target(self) -> None:
        out = self.out_dir
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise TraceError(f"trace {out} already exists and is not empty; not overwriting it",
                             hint="choose another output path or remove the old trace")

    def _require_open(self) -> None:
        if self._state != "open":
            raise TraceError(f"trace writer for {self.out_dir} is already {self._state}")

    # -- context manager -------------------------------------------------------

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._state != "open":
            return False  # closed or aborted explicitly inside the block
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close(status="truncated")
        else:
            self.abort()
        return False


def _dummy_row(schema: pa.Schema) -> dict:
    row: dict[str, Any] = {}
    for f in schema:
        t = f.type
        if pa.types.is_list(t):
            row[f.name] = [0] * WAIT_HIST_BUCKETS
        elif pa.types.is_string(t):
            row[f.name] = ""
        elif pa.types.is_boolean(t):
            row[f.name] = False
        elif pa.types.is_floating(t):
            row[f.name] = 0.0
        else:
            row[f.name] = 0
    return row


def _convert(table: str, schema: pa.Schema, rows: list[dict]) -> pa.Table:
    """Rows -> Arrow table of exactly ``schema``, or TraceError naming the problem."""
    names = set(schema.names)
    seen: set[str] = set()
    for row in rows:
        if not isinstance(row, dict):
            raise TraceError(f"{table}: rows must be dicts, got {type(row).__name__}")
        seen.update(row.keys())
    unknown = sorted(seen - names, key=str)
    if unknown:
        raise TraceError(f"{table}: unknown column(s) {', '.join(map(str, unknown))}",
                         hint=f"columns are: {', '.join(schema.names)}")
    required = [f.name for f in schema if not f.nullable]
    missing = [n for n in required if any(n not in row for row in rows)]
    if missing:
        raise TraceError(f"{table}: missing required column(s) {', '.join(missing)}")
    try:
        # Missing nullable keys become nulls here.
        data = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        raise _explain_conversion(table, schema, rows) from None
    for field in schema:
        col = data.column(field.name)
        if not field.nullable and col.null_count:
            first = pc.index(pc.is_null(col), True).as_py()
            raise TraceError(f"{table}: required column {field.name} is null in row {first}")
    if "wait_hist" in names:
        lengths = pc.list_value_length(data.column("wait_hist"))
        bad = pc.and_(pc.is_valid(lengths), pc.not_equal(lengths, WAIT_HIST_BUCKETS))
        if pc.any(bad).as_py():
            first = pc.index(bad, True).as_py()
            raise TraceError(f"{table}: wait_hist in row {first} has {lengths[first].as_py()} "
                             f"buckets, expected {WAIT_HIST_BUCKETS}")
    return data


def _explain_conversion(table: str, schema: pa.Schema, rows: list[dict]) -> TraceError:
    # Only on the error path: convert column by column to name the culprit.
    for field in schema:
        try:
            pa.array([row.get(field.name) for row in rows], type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as e:
            return TraceError(f"{table}: column {field.name} ({field.type}) cannot hold "
                              f"the given values: {e}")
    return TraceError(f"{table}: rows do not fit the schema")
