"""SQL over a trace's Parquet files with duckdb, in bounded memory.

Every analysis query goes through ``TraceDB``: duckdb scans the Parquet
files itself (column pruning, predicate pushdown, parallel row groups) and
spills to disk past ``memory_limit``, so a trace of 10^7 events is analysed
without ever being a pandas DataFrame. Only aggregates (a few thousand rows
at most) come back to Python.

Each table is a view named after it, with exactly the schema.py columns:
columns an older file lacks are NULL of the right type (the same rule as
``Trace.arrow``), and an optional table the trace lacks is an empty view.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aios_lab.errors import InputError, TraceError
from aios_lab.telemetry.schema import TABLES
from aios_lab.telemetry.trace import Trace

DEFAULT_MEMORY_LIMIT = "1GB"


def _sql_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"{_sql_type(t.value_type)}[]"
    mapping = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.uint32(): "UINTEGER",
               pa.uint64(): "UBIGINT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN",
               pa.string(): "VARCHAR"}
    for k, v in mapping.items():
        if t.equals(k):
            return v
    raise TypeError(f"no SQL type for {t}")  # a schema.py change without a mapping here


_UNITS = {"B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
MIN_MEMORY = 16 * 10 ** 6


def parse_memory_limit(text: str) -> str:
    """A memory size such as 512MB, 2GB or 1.5GiB, as duckdb's config value;
    InputError for anything else, or for less than 16 MB (duckdb cannot
    run a query in less)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)\s*", str(text), re.IGNORECASE)
    if not m:
        raise InputError(f"--memory-limit {text!r} is not a size", hint="e.g. 512MB, 2GB or 1.5GiB")
    size = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not MIN_MEMORY <= size <= 1 << 50:
        raise InputError(f"--memory-limit {text!r} is outside 16MB..1PiB", hint="e.g. 512MB or 2GB")
    return f"{int(size)}B"


def _quote_path(p: Path) -> str:
    return "'" + str(p).replace("'", "''") + "'"


class TraceDB:
    """A duckdb connection with one view per trace table."""

    def __init__(self, trace: Trace, memory_limit: str = DEFAULT_MEMORY_LIMIT,
                 threads: int | None = None) -> None:
        import duckdb

        self.trace = trace
        # Settings go in as connection config, never spliced into SQL: a
        # --memory-limit of "1GB'; COPY ... TO 'x'" must stay a bad value.
        limit = parse_memory_limit(memory_limit)
        # Spill to a private temp dir: the trace's folder may be read-only.
        self._spill = tempfile.TemporaryDirectory(prefix="aios-duckdb-")
        try:
            self.con = duckdb.connect(":memory:", config={
                "memory_limit": limit, "temp_directory": self._spill.name,
                "preserve_insertion_order": False, "threads": int(threads or os.cpu_count() or 1)})
        except duckdb.Error as e:
            self._spill.cleanup()
            raise InputError(f"--memory-limit {memory_limit!r}: duckdb refused it "
                             f"({str(e).splitlines()[0]})", hint="e.g. 512MB or 2GB") from None
        for name, schema in TABLES.items():
            self._create_view(name, schema)

    def _create_view(self, name: str, schema: pa.Schema) -> None:
        path = self.trace.file(name)
        if path is None:
            cols = ", ".join(f"NULL::{_sql_type(f.type)} AS {f.name}" for f in schema)
            self.con.execute(f"CREATE VIEW {name} AS SELECT {cols} WHERE false")
            return
        try:
            have = set(pq.ParquetFile(path).schema_arrow.names)
        except (OSError, pa.ArrowException) as e:  # damaged since Trace.open checked it
            self.close()
            raise TraceError(f"trace {self.trace.path}: {path.name} cannot be read ({e}); "
                             "re-collect it") from None
        cols = ", ".join(f.name if f.name in have else f"NULL::{_sql_type(f.type)} AS {f.name}"
                         for f in schema)
        self.con.execute(f"CREATE VIEW {name} AS SELECT {cols} FROM read_parquet({_quote_path(path)})")

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        """Run a query and return its rows; a damaged data page is a TraceError."""
        import duckdb

        try:
            return self.con.execute(sql, params or []).fetchall()
        except duckdb.OutOfMemoryException as e:
            raise TraceError(f"trace {self.trace.path}: analysis ran out of its memory limit "
                             f"({e})", hint="raise --memory-limit") from None
        except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException):
            raise  # our SQL is wrong: a bug, not bad input
        except duckdb.Error as e:
            # Damaged pages under a valid footer surface here (IOException,
            # InvalidInputException, or a bare Error from the Thrift decoder).
            raise TraceError(f"trace {self.trace.path}: a table cannot be read (corrupt data "
                             f"pages?): {str(e).splitlines()[0]}; re-collect it") from None

    def one(self, sql: str, params: list | None = None) -> tuple:
        r = self.rows(sql, params)
        return r[0] if r else ()

    def close(self) -> None:
        self.con.close()
        self._spill.cleanup()

    def __enter__(self) -> "TraceDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


REFINE_BUCKETS = 1024


def stream_sampled(db: TraceDB, table: str) -> bool:
    """Whether an event stream (``switches``, ``wakeups``: the tables with a
    ``sample_weight`` column) kept only some of its events: a row standing
    for more than one event, past the collector's stream budget. A sampled
    stream still gives rates (weighted) but not what needs every event,
    such as exact wait percentiles or run lengths. Traces of schema version
    1 were never sampled (their weights are null)."""
    (w,) = db.one(f"SELECT max(sample_weight) FROM {table}")
    return w is not None and w > 1


def log2_buckets(db: TraceDB, table: str, column: str) -> list[tuple[int, int, int, int]]:
    """(k, count, min, max) per log2 bucket k = floor(log2(max(v, 1))) of an
    integer column, in value order: the wait histogram and the first level
    of exact_quantiles' search, from one scan."""
    return [(int(k), int(c), int(lo), int(hi)) for k, c, lo, hi in db.rows(f"""
        SELECT CAST(floor(log2(greatest({column}, 1))) AS BIGINT) AS k, count(*), min({column}),
               max({column})
        FROM {table} WHERE {column} IS NOT NULL GROUP BY k ORDER BY min({column})""")]


def exact_quantiles(db: TraceDB, table: str, column: str, qs: tuple[float, ...],
                    levels: list[tuple[int, int, int, int]] | None = None) -> list[int | None]:
    """Exact nearest-rank quantiles (the smallest value with at least q of
    the values at or below it) of an integer column, in bounded memory.

    duckdb's quantile_disc keeps the whole column in memory and cannot
    spill (it ran out of a 256MB limit on 10^7 waits). Here the log2
    buckets (``levels``: log2_buckets' result, computed if not given) find
    the bucket holding each rank, then range histograms of REFINE_BUCKETS
    linear buckets narrow it down until one value is left: a few scans,
    each with a handful of groups.
    """
    col, src = column, table
    if levels is None:
        levels = log2_buckets(db, table, column)
    n = sum(c for _, c, _, _ in levels)
    out: list[int | None] = []
    for q in qs:
        if not n:
            out.append(None)
            continue
        rank = max(1, math.ceil(q * n))   # 1-based rank of the value sought
        below = 0
        for _, c, lo, hi in levels:
            if below + c >= rank:
                break
            below += c
        while lo < hi:
            width = -(-(hi - lo + 1) // REFINE_BUCKETS)
            buckets = db.rows(f"""
                SELECT ({col} - {lo}) // {width} AS b, count(*), min({col}), max({col}) FROM {src}
                WHERE {col} BETWEEN {lo} AND {hi} GROUP BY b ORDER BY b""")
            for _, c, blo, bhi in buckets:
                if below + c >= rank:
                    lo, hi = int(blo), int(bhi)
                    break
                below += int(c)
        out.append(lo)
    return out
