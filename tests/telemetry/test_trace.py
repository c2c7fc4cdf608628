"""Trace format: writer atomicity, reader validation, analysis, docs (no root)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aios_lab.errors import AiosError, TraceError
from aios_lab.telemetry import schema
from aios_lab.telemetry.schema import TABLES, WAIT_HIST_BUCKETS, table_file
from aios_lab.telemetry.trace import Trace
from aios_lab.telemetry.writer import TraceWriter

from tests.helpers import REPO


META = {
    "kernel": {"release": "6.12.0-test"},
    "workload": {"command": ["stress-ng", "--cpu", "2"]},
    "start": {"monotonic_ns": 0, "wall": "2025-01-01T00:00:00+00:00"},
    "end": {"monotonic_ns": 2_000_000_000, "wall": "2025-01-01T00:00:02+00:00"},
    "lost": {"wakeups": 3},
    "sources": ["bpf:sched", "proc"],
}


def _value(field: pa.Field, i: int):
    """A distinct, type-correct value for every column, so a round trip
    checks every column of every table."""
    t = field.type
    if field.name == "wait_hist":
        return [(i + b) % 7 for b in range(WAIT_HIST_BUCKETS)]
    if pa.types.is_string(t):
        return f"{field.name}-{i}"
    if pa.types.is_boolean(t):
        return i % 2 == 0
    if pa.types.is_floating(t):
        return i + 0.5
    if pa.types.is_unsigned_integer(t):
        return 2**63 + i  # beyond int64: catches a signed round trip
    if pa.types.is_integer(t):
        return 1000 * i + len(field.name)
    raise AssertionError(f"no test value for {field}")


def full_rows(table: str, n: int = 3) -> list[dict]:
    return [{f.name: _value(f, i) for f in TABLES[table]} for i in range(n)]


def write_full_trace(out: Path, n: int = 3) -> Path:
    with TraceWriter(out, META) as w:
        for name in TABLES:
            w.append(name, full_rows(name, n))
    return out


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name)


# -- round trip ----------------------------------------------------------------


def test_round_trip_every_table(tmp_path):
    out = write_full_trace(tmp_path / "t", n=4)
    tr = Trace.open(out)
    assert tr.status == "complete"
    assert tr.metadata["schema_version"] == schema.SCHEMA_VERSION
    assert tr.metadata["rows"] == {name: 4 for name in TABLES}
    assert tr.metadata["kernel"] == META["kernel"]
    assert tr.metadata["aios_lab_version"]
    for name, sch in TABLES.items():
        got = tr.arrow(name)
        assert got.schema.equals(sch), name
        assert got.to_pylist() == full_rows(name, 4), name
        df = tr.table(name)
        assert list(df.columns) == sch.names
        assert len(df) == 4
    assert leftovers(tmp_path) == []


def test_untouched_tables_are_empty_files_with_schema(tmp_path):
    with TraceWriter(tmp_path / "t", {}) as w:
        w.append("processes", full_rows("processes", 1))
    for name, sch in TABLES.items():
        f = tmp_path / "t" / table_file(name)
        assert f.is_file()
        assert pq.read_schema(f).equals(sch)
    tr = Trace.open(tmp_path / "t")
    assert tr.rows("migrations") == 0 and tr.rows("processes") == 1
    assert tr.table("wakeups").empty


def test_missing_nullable_columns_become_null_and_counts(tmp_path):
    with TraceWriter(tmp_path / "t", {}) as w:
        w.append("migrations", [{"ts_ns": 5, "pid": 7}, {"ts_ns": 6, "pid": 8, "comm": "x"}])
        w.append("migrations", [])
        assert w.counts()["migrations"] == 2 and w.counts()["wakeups"] == 0
    rows = Trace.open(tmp_path / "t").arrow("migrations").to_pylist()
    assert rows[0]["comm"] is None and rows[0]["src_cpu"] is None
    assert rows[1]["comm"] == "x"


def test_rows_are_written_as_row_groups(tmp_path):
    w = TraceWriter(tmp_path / "t", {}, flush_rows=2)
    for i in range(5):
        w.append("wakeups", [{"ts_ns": i, "pid": 1}])
    w.flush()
    w.append("wakeups", [{"ts_ns": 9, "pid": 1}])
    w.close()
    pf = pq.ParquetFile(tmp_path / "t" / "wakeups.parquet")
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == [2, 2, 1, 1]
    assert pf.read().column("ts_ns").to_pylist() == [0, 1, 2, 3, 4, 9]


@pytest.mark.parametrize("table,rows,needle", [
    ("nope", [{"ts_ns": 1}], "unknown trace table 'nope'"),
    ("wakeups", [{"ts_ns": 1, "pid": 1, "bogus": 2, "zzz": 3}], "unknown column(s) bogus, zzz"),
    ("wakeups", [{"ts_ns": 1}], "missing required column(s) pid"),
    ("task_intervals", [{"interval_start_ns": 1, "interval_end_ns": 2, "tgid": 1, "pid": 1,
                         "comm": "a"}, {"interval_start_ns": 1, "pid": 1}],
     "missing required column(s) interval_end_ns, tgid"),
    ("wakeups", [{"ts_ns": 1, "pid": "x"}], "column pid (int32)"),
    ("wakeups", [{"ts_ns": 1, "pid": 2**40}], "column pid (int32)"),
    ("wakeups", [{"ts_ns": 1, "pid": 1}, {"ts_ns": None, "pid": 1}],
     "required column ts_ns is null in row 1"),
    ("task_intervals", [{"interval_start_ns": 1, "interval_end_ns": 2, "pid": 1, "tgid": 1,
                         "wait_hist": [1, 2]}], "wait_hist in row 0 has 2 buckets, expected 32"),
])
def test_append_rejects_bad_rows(tmp_path, table, rows, needle):
    with TraceWriter(tmp_path / "t", {}) as w:
        with pytest.raises(TraceError) as ei:
            w.append(table, rows)
        assert needle in str(ei.value)
        assert w.counts() == {name: 0 for name in TABLES}


# -- atomicity -----------------------------------------------------------------


def test_exception_inside_with_leaves_nothing(tmp_path):
    out = tmp_path / "t"
    with pytest.raises(RuntimeError, match="boom"):
        with TraceWriter(out, META, flush_rows=1) as w:
            w.append("wakeups", full_rows("wakeups", 3))  # already on disk in the temp dir
            assert len(leftovers(tmp_path)) == 1 and not out.exists()
            raise RuntimeError("boom")
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_keyboard_interrupt_keeps_rows_as_truncated(tmp_path):
    out = tmp_path / "t"
    with pytest.raises(KeyboardInterrupt):
        with TraceWriter(out, META) as w:
            w.append("wakeups", full_rows("wakeups", 2))
            raise KeyboardInterrupt
    tr = Trace.open(out)
    assert tr.status == "truncated"
    assert tr.rows("wakeups") == 2
    assert tr.arrow("wakeups").to_pylist() == full_rows("wakeups", 2)
    assert leftovers(tmp_path) == []


def test_failure_during_close_leaves_nothing(tmp_path):
    w = TraceWriter(tmp_path / "t", {})
    w.append("wakeups", full_rows("wakeups", 1))
    with pytest.raises(TraceError, match="JSON"):
        w.close(extra={"bad": object()})
    assert not (tmp_path / "t").exists() and leftovers(tmp_path) == []
    with pytest.raises(TraceError, match="already aborted"):
        w.append("wakeups", full_rows("wakeups", 1))


def test_hard_crash_never_leaves_a_trace_at_out_dir(tmp_path):
    # os._exit skips every cleanup handler, like a SIGKILL mid-collection.
    out = tmp_path / "t"
    code = textwrap.dedent(f"""
        import os
        from aios_lab.telemetry.writer import TraceWriter
        w = TraceWriter({str(out)!r}, {{}}, flush_rows=1)
        w.append("wakeups", [{{"ts_ns": 1, "pid": 1}}])
        os._exit(3)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert not out.exists()
    [partial] = leftovers(tmp_path)
    with pytest.raises(TraceError, match="metadata.json is missing") as ei:
        Trace.open(tmp_path / partial)
    assert "left by a crash" in ei.value.one_line()


def test_refuses_to_overwrite(tmp_path):
    out = write_full_trace(tmp_path / "t")
    before = (out / "metadata.json").read_bytes()
    with pytest.raises(TraceError, match="already exists and is not empty") as ei:
        TraceWriter(out, {})
    assert ei.value.hint
    assert (out / "metadata.json").read_bytes() == before
    assert leftovers(tmp_path) == []


def test_empty_out_dir_is_replaced(tmp_path):
    (tmp_path / "t").mkdir()
    write_full_trace(tmp_path / "t")
    assert Trace.open(tmp_path / "t").status == "complete"


def test_out_dir_appearing_during_collection_is_not_overwritten(tmp_path):
    out = tmp_path / "t"
    w = TraceWriter(out, {})
    w.append("wakeups", full_rows("wakeups", 1))
    out.mkdir()
    (out / "precious").write_text("keep")
    with pytest.raises(TraceError, match="not overwriting") as ei:
        w.close()
    assert (out / "precious").read_text() == "keep"
    # The finished trace is kept, and the hint says where.
    [partial] = leftovers(tmp_path)
    assert partial in ei.value.hint
    assert Trace.open(tmp_path / partial).rows("wakeups") == 1


def test_bad_status_and_double_close(tmp_path):
    w = TraceWriter(tmp_path / "t", {})
    with pytest.raises(TraceError, match="status"):
        w.close(status="done")
    assert w.close(status="truncated", extra={"note": "x"}) == tmp_path / "t"
    with pytest.raises(TraceError, match="already closed"):
        w.close()
    md = Trace.open(tmp_path / "t").metadata
    assert md["status"] == "truncated" and md["note"] == "x"


# -- malformed traces ----------------------------------------------------------


def _open_error(path: Path) -> str:
    with pytest.raises(TraceError) as ei:
        Trace.open(path)
    msg = ei.value.one_line()
    assert "\n" not in msg and isinstance(ei.value, AiosError)
    return msg


def test_missing_directory(tmp_path):
    assert "no such directory" in _open_error(tmp_path / "nope")


def test_missing_metadata(tmp_path):
    out = write_full_trace(tmp_path / "t")
    (out / "metadata.json").unlink()
    msg = _open_error(out)
    assert "metadata.json is missing" in msg and "re-collect" in msg


def test_metadata_not_json(tmp_path):
    out = write_full_trace(tmp_path / "t")
    (out / "metadata.json").write_text('{"schema_version": 1, ')
    assert "metadata.json is not valid JSON (line 1" in _open_error(out)
    (out / "metadata.json").write_text("[1, 2]")
    assert "must hold a JSON object" in _open_error(out)


@pytest.mark.parametrize("version,needle", [
    (99, f"schema_version 99 is newer than this aios-lab reads (up to {schema.SCHEMA_VERSION}) "
         "(upgrade aios-lab)"),
    (0, "schema_version 0 is no longer supported"),
    ("1", "no integer schema_version"),
])
def test_unsupported_schema_version(tmp_path, version, needle):
    out = write_full_trace(tmp_path / "t")
    md = json.loads((out / "metadata.json").read_text())
    md["schema_version"] = version
    (out / "metadata.json").write_text(json.dumps(md))
    assert needle in _open_error(out)


def test_truncated_table_file(tmp_path):
    out = write_full_trace(tmp_path / "t", n=200)
    f = out / "migrations.parquet"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    msg = _open_error(out)
    assert msg == (f"trace {out}: migrations.parquet is not a Parquet file "
                   "(truncated or corrupt); re-collect it")


def test_wrong_column_type(tmp_path):
    out = write_full_trace(tmp_path / "t")
    f = out / "migrations.parquet"
    t = pq.read_table(f)
    i = t.schema.get_field_index("pid")
    t = t.set_column(i, "pid", t.column("pid").cast(pa.string()))
    pq.write_table(t, f)
    msg = _open_error(out)
    assert "migrations.parquet column pid is string, expected int32" in msg


def test_missing_table_file(tmp_path):
    out = write_full_trace(tmp_path / "t")
    (out / "wakeups.parquet").unlink()
    assert f"trace {out}: wakeups.parquet is missing; re-collect it" in _open_error(out)


def test_version_1_trace_reads_without_the_sampling_columns(tmp_path):
    """A trace written before the streams could be sampled (version 1) has
    no sample_weight or cpu_intervals stream counts: they read as null."""
    out = write_full_trace(tmp_path / "t")
    new = {"switches": ["sample_weight"], "wakeups": ["sample_weight"],
           "cpu_intervals": ["switch_records", "wakeup_events", "wakeup_records"]}
    for table, cols in new.items():
        f = out / table_file(table)
        pq.write_table(pq.read_table(f).drop_columns(cols), f)
    md = json.loads((out / "metadata.json").read_text())
    md["schema_version"] = 1
    (out / "metadata.json").write_text(json.dumps(md))
    t = Trace.open(out)
    for table, cols in new.items():
        got = t.table(table)
        assert len(got) == 3 and all(got[c].isna().all() for c in cols), table


def test_trace_from_before_the_switches_table_reads_it_as_empty(tmp_path):
    out = write_full_trace(tmp_path / "t")
    (out / "switches.parquet").unlink()
    t = Trace.open(out)
    assert t.rows("switches") == 0 and t.file("switches") is None
    sw = t.arrow("switches")
    assert sw.num_rows == 0 and sw.schema.names == schema.TABLES["switches"].names


def test_missing_required_column_and_row_mismatch(tmp_path):
    out = write_full_trace(tmp_path / "t")
    f = out / "wakeups.parquet"
    pq.write_table(pq.read_table(f).drop_columns(["pid"]), f)
    assert "wakeups.parquet lacks required column pid" in _open_error(out)
    pq.write_table(pa.Table.from_pylist(full_rows("wakeups", 1), schema=TABLES["wakeups"]), f)
    assert "wakeups.parquet has 1 rows but metadata.json records 3" in _open_error(out)


def test_compatible_files_are_accepted(tmp_path):
    # Versioning rule: a nullable column missing from an older file reads as
    # null; a column from a newer writer is kept; large_string is a string.
    out = write_full_trace(tmp_path / "t")
    f = out / "wakeups.parquet"
    t = pq.read_table(f).drop_columns(["weight"])
    t = t.set_column(t.schema.get_field_index("comm"), "comm",
                     t.column("comm").cast(pa.large_string()))
    t = t.append_column("future_col", pa.array([1, 2, 3], pa.int8()))
    pq.write_table(t, f)
    got = Trace.open(out).arrow("wakeups")
    assert got.schema.names == TABLES["wakeups"].names + ["future_col"]
    assert got.column("weight").null_count == 3
    assert got.schema.field("comm").type == pa.string()


def test_unknown_table_name(tmp_path):
    tr = Trace.open(write_full_trace(tmp_path / "t"))
    with pytest.raises(TraceError, match="unknown trace table"):
        tr.table("bogus")


# -- readable without aios-lab -------------------------------------------------


def test_readable_without_aios_lab(tmp_path):
    out = write_full_trace(tmp_path / "t", n=3)
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["aios_lab"] = None  # any import of aios_lab now fails
        import pyarrow.parquet as pq, pandas as pd
        d = {str(out)!r}
        meta = json.load(open(d + "/metadata.json"))
        res = {{"schema_version": meta["schema_version"], "status": meta["status"]}}
        res["pandas"] = {{n: len(pd.read_parquet(f"{{d}}/{{n}}.parquet")) for n in meta["rows"]}}
        t = pq.read_table(d + "/task_intervals.parquet")
        res["hist_len"] = len(t.column("wait_hist")[0].as_py())
        try:
            import duckdb
            res["duckdb"] = duckdb.connect().execute(
                f"SELECT count(*), sum(busy_ns) FROM '{{d}}/cpu_intervals.parquet'").fetchone()
        except ImportError:
            pass
        try:
            import polars as pl
            res["polars"] = pl.read_parquet(d + "/migrations.parquet")["pid"].to_list()
        except ImportError:
            pass
        print(json.dumps(res))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["schema_version"] == schema.SCHEMA_VERSION and res["status"] == "complete"
    assert res["pandas"] == {name: 3 for name in TABLES}
    assert res["hist_len"] == WAIT_HIST_BUCKETS
    busy = [row["busy_ns"] for row in full_rows("cpu_intervals", 3)]
    if "duckdb" in res:
        assert res["duckdb"] == [3, sum(busy)]
    if "polars" in res:
        assert res["polars"] == [row["pid"] for row in full_rows("migrations", 3)]


def test_doc_lists_every_column():
    doc = (REPO / "docs" / "trace-format.md").read_text()
    assert f"schema version {schema.SCHEMA_VERSION}" in doc
    assert schema.METADATA_FILE in doc and str(WAIT_HIST_BUCKETS) in doc
    # Each table's columns must be in that table's own section.
    sections = re.split(r"^### ", doc, flags=re.M)
    by_table = {s.split("\n", 1)[0].strip().strip("`"): s for s in sections}
    missing = []
    for name, sch in TABLES.items():
        section = by_table.get(name)
        assert section is not None, f"docs/trace-format.md has no '### `{name}`' section"
        for field in sch:
            if f"| `{field.name}` | {_doc_type(field.type)}" not in section:
                missing.append(f"{name}.{field.name} ({field.type})")
    assert not missing, f"columns not documented with their type: {missing}"


def _doc_type(t: pa.DataType) -> str:
    # The doc spells types the way the schema declares them (pa.float64(),
    # pa.list_(pa.uint32())), not Arrow's str() ("double", "list<item: ...>").
    if pa.types.is_list(t):
        return f"list\\<{_doc_type(t.value_type)}\\>"
    return {"double": "float64"}.get(str(t), str(t))


def test_an_old_decision_trace_with_the_kernel_as_a_string_still_opens(tmp_path):
    """mllb decision traces written before 2026-12-03 carry `kernel` as the
    release string; it still loads, while a kernel of another type is refused."""
    from aios_lab.errors import TraceError

    with TraceWriter(tmp_path / "old", {"kernel": "7.3.4+deb13-amd64"}) as w:
        w.append("switches", [])
    assert Trace.open(tmp_path / "old").metadata["kernel"] == "7.3.4+deb13-amd64"
    with TraceWriter(tmp_path / "bad", {"kernel": 5}) as w:
        w.append("switches", [])
    with pytest.raises(TraceError, match="field kernel"):
        Trace.open(tmp_path / "bad")
