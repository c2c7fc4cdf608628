"""Open and validate a trace directory written by TraceWriter.

``Trace.open`` checks everything that is cheap to check (metadata.json,
schema_version, each table's Parquet footer, column names and types, row
counts) so that a bad trace fails there with one line that says what is
wrong and what to do, rather than as a pyarrow traceback deep in analysis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aios_lab.errors import TraceError
from aios_lab.safe_read import parse_json, read_bounded
from aios_lab.telemetry.metadata import check_metadata
from aios_lab.telemetry.schema import (METADATA_FILE, OPTIONAL_TABLES, SCHEMA_VERSION, TABLES,
                                       table_file)

# Versions this reader understands. A newer writer that only added nullable
# columns keeps the version, so extra columns are tolerated below.
SUPPORTED_SCHEMA_VERSIONS = frozenset({1, 2})  # 1: no sample_weight (read as nulls)
STATUSES = ("complete", "truncated")

_RECOLLECT = "re-collect it"
METADATA_LIMIT = 16 << 20  # a real metadata.json is a few KiB


def _same_family(found: pa.DataType, expected: pa.DataType) -> bool:
    """True if ``found`` holds the same values as ``expected`` (castable losslessly).

    Files rewritten by other tools (polars, duckdb) may use large/view string
    and list variants; those are the same column, not a type error.
    """
    if found.equals(expected):
        return True
    strings = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if any(f(expected) for f in strings):
        return any(f(found) for f in strings)
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_list_view,
             pa.types.is_large_list_view)
    if any(f(expected) for f in lists):
        return (any(f(found) for f in lists)
                and _same_family(found.value_type, expected.value_type))
    return False


class Trace:
    """A validated trace directory. Build with ``Trace.open(path)``."""

    def __init__(self, path: Path, metadata: dict, files: dict[str, Path | None],
                 file_schemas: dict[str, pa.Schema], rows: dict[str, int]) -> None:
        self.path = path
        self.metadata = metadata
        self._files = files
        self._file_schemas = file_schemas
        self._rows = rows
        self._cache: dict[str, pa.Table] = {}

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str) -> "Trace":
        path = Path(path)
        where = f"trace {path}"
        if not path.exists():
            raise TraceError(f"{where}: no such directory",
                             hint="check the path, or collect a trace first")
        if not path.is_dir():
            raise TraceError(f"{where}: not a directory (a trace is a directory of "
                             f"Parquet files and {METADATA_FILE})")
        metadata = _read_metadata(path, where)
        files: dict[str, Path] = {}
        schemas: dict[str, pa.Schema] = {}
        rows: dict[str, int] = {}
        for name, expected in TABLES.items():
            fname = table_file(name)
            fpath = path / fname
            if name in OPTIONAL_TABLES and not fpath.exists():
                # Added to version 1 later; an older trace simply has none.
                files[name], schemas[name], rows[name] = None, expected, 0
                continue
            if not fpath.is_file():
                raise TraceError(f"{where}: {fname} is missing; {_RECOLLECT}",
                                 hint="every trace has every table, empty or not")
            try:
                pf = pq.ParquetFile(fpath)
                found = pf.schema_arrow
                nrows = pf.metadata.num_rows
            except (pa.ArrowException, OSError, ValueError):
                raise TraceError(f"{where}: {fname} is not a Parquet file "
                                 f"(truncated or corrupt); {_RECOLLECT}") from None
            _check_columns(where, fname, found, expected)
            recorded = (metadata.get("rows") or {}).get(name) if isinstance(
                metadata.get("rows"), dict) else None
            if isinstance(recorded, int) and recorded != nrows:
                raise TraceError(f"{where}: {fname} has {nrows} rows but {METADATA_FILE} "
                                 f"records {recorded}; the file was replaced or damaged, "
                                 f"{_RECOLLECT}")
            files[name], schemas[name], rows[name] = fpath, found, nrows
        return cls(path, metadata, files, schemas, rows)

    # -- accessors -------------------------------------------------------------

    @property
    def status(self) -> str:
        """"complete", or "truncated" when collection was stopped early."""
        return self.metadata["status"]

    @property
    def schema_version(self) -> int:
        return self.metadata["schema_version"]

    @property
    def tables(self) -> list[str]:
        return list(TABLES)

    def file(self, name: str) -> Path | None:
        """The table's Parquet file, or None for an optional table the trace lacks."""
        self._require_table(name)
        return self._files[name]

    def rows(self, name: str) -> int:
        """Row count of a table, from its Parquet footer (no data read)."""
        self._require_table(name)
        return self._rows[name]

    def arrow(self, name: str) -> pa.Table:
        """The table as Arrow, with the schema.py types and column order.

        Columns the file lacks but the schema allows to be null (a file from
        before the column was added) come back as all-null; columns the
        schema does not know (a newer writer) are kept at the end.
        """
        self._require_table(name)
        if name in self._cache:
            return self._cache[name]
        fname = table_file(name)
        if self._files[name] is None:
            return TABLES[name].empty_table()
        try:
            raw = pq.read_table(self._files[name])
        except (pa.ArrowException, OSError, ValueError):
            raise TraceError(f"trace {self.path}: {fname} cannot be read (corrupt data "
                             f"pages); {_RECOLLECT}") from None
        expected = TABLES[name]
        columns, fields = [], []
        for field in expected:
            if field.name in raw.column_names:
                col = raw.column(field.name)
                if not col.type.equals(field.type):
                    col = col.cast(field.type)
            else:
                col = pa.nulls(raw.num_rows, field.type)
            columns.append(col)
            fields.append(field)
        for extra in raw.schema:
            if extra.name not in expected.names:
                columns.append(raw.column(extra.name))
                fields.append(extra)
        table = pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=expected.metadata))
        self._cache[name] = table
        return table

    def table(self, name: str):
        """The table as a pandas DataFrame (integer columns with nulls become float)."""
        return self.arrow(name).to_pandas()

    def _require_table(self, name: str) -> None:
        if name not in TABLES:
            raise TraceError(f"unknown trace table {name!r}",
                             hint=f"tables are: {', '.join(TABLES)}")

    def __repr__(self) -> str:
        return f"Trace({str(self.path)!r}, status={self.status!r})"


def _read_metadata(path: Path, where: str) -> dict[str, Any]:
    mpath = path / METADATA_FILE
    if not mpath.is_file():
        partial = ".partial-" in path.name
        raise TraceError(
            f"{where}: {METADATA_FILE} is missing, so the trace was never finished "
            f"or this is not a trace directory; {_RECOLLECT}",
            hint="this is a writer's temporary directory left by a crash; delete it"
            if partial else "")
    # Bounded and never blocking (a FIFO named metadata.json), with parser
    # failures (huge integers, deep nesting) as TraceError.
    raw = read_bounded(mpath, limit=METADATA_LIMIT, error=TraceError, what=f"{where}: {METADATA_FILE}")
    metadata = parse_json(raw, error=TraceError, what=f"{where}: {METADATA_FILE}", fix=_RECOLLECT)
    if not isinstance(metadata, dict):
        raise TraceError(f"{where}: {METADATA_FILE} must hold a JSON object, not "
                         f"{type(metadata).__name__}; {_RECOLLECT}")
    version = metadata.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise TraceError(f"{where}: {METADATA_FILE} has no integer schema_version "
                         f"(found {version!r}); not written by aios-lab, or damaged")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        if version > SCHEMA_VERSION:
            raise TraceError(f"{where}: schema_version {version} is newer than this "
                             f"aios-lab reads (up to {SCHEMA_VERSION})",
                             hint="upgrade aios-lab")
        raise TraceError(f"{where}: schema_version {version} is no longer supported "
                         f"(this aios-lab reads {sorted(SUPPORTED_SCHEMA_VERSIONS)})",
                         hint="re-collect the trace, or read it with an older aios-lab")
    status = metadata.get("status")
    if status not in STATUSES:
        raise TraceError(f"{where}: {METADATA_FILE} status is {status!r}, expected "
                         f"{' or '.join(STATUSES)}; the trace was not finished properly")
    check_metadata(metadata, where)
    return metadata


def _check_columns(where: str, fname: str, found: pa.Schema, expected: pa.Schema) -> None:
    for field in expected:
        idx = found.get_field_index(field.name)
        if idx < 0:
            if field.nullable:
                continue  # compatible: filled with nulls on read
            raise TraceError(f"{where}: {fname} lacks required column {field.name}; "
                             f"{_RECOLLECT}")
        got = found.field(idx).type
        if not _same_family(got, field.type):
            raise TraceError(f"{where}: {fname} column {field.name} is {got}, expected "
                             f"{field.type}; the file was not written by this schema "
                             f"version, {_RECOLLECT}")
