"""The registry's SQLite index: one schema, opened the same way by every
process (the CLI, a training loop, the root service).

WAL lets readers run while one writer commits; every write goes through
`transaction`, which takes the write lock up front (BEGIN IMMEDIATE) so two
submitters serialise instead of failing halfway with SQLITE_BUSY, and
synchronous=FULL so that a committed entry and its audit record survive a
power cut, not only a killed process. The log, entries, runs and samples are
append-only: triggers refuse UPDATE and DELETE, so a bug cannot rewrite
history (a person with the file can; the audit chain is what catches that).
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import RegistryError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

_APPEND_ONLY = ("entries", "runs", "samples", "run_reports", "audit")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS entries(
    hash TEXT PRIMARY KEY CHECK (length(hash) = 64),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    parent TEXT REFERENCES entries(hash),
    object TEXT NOT NULL,
    manifest TEXT NOT NULL,
    tunables TEXT NOT NULL,
    model TEXT,
    source TEXT,
    object_size INTEGER NOT NULL,
    author_kind TEXT NOT NULL CHECK (author_kind IN ('person', 'agent')),
    author_name TEXT NOT NULL,
    author_uid INTEGER NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_name ON entries(name, created_ns);

CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY,
    entry TEXT NOT NULL REFERENCES entries(hash),
    kind TEXT NOT NULL,
    verdict TEXT NOT NULL,
    kernel_release TEXT NOT NULL,
    btf_id TEXT NOT NULL,
    topology TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    author_kind TEXT NOT NULL,
    author_name TEXT NOT NULL,
    author_uid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_entry ON runs(entry);

CREATE TABLE IF NOT EXISTS samples(
    run INTEGER NOT NULL REFERENCES runs(id),
    stage TEXT NOT NULL,
    arm TEXT NOT NULL,
    metric TEXT NOT NULL,
    run_index INTEGER NOT NULL CHECK (run_index >= 0),
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    PRIMARY KEY (run, stage, arm, metric, run_index)
);

CREATE TABLE IF NOT EXISTS run_reports(
    run INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    blob TEXT NOT NULL,
    PRIMARY KEY (run, name)
);

CREATE TABLE IF NOT EXISTS audit(
    seq INTEGER PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    user TEXT NOT NULL,
    agent TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    args TEXT NOT NULL,
    verdict TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
""" + "".join(f"""
CREATE TRIGGER IF NOT EXISTS {t}_no_update BEFORE UPDATE ON {t}
    BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;
CREATE TRIGGER IF NOT EXISTS {t}_no_delete BEFORE DELETE ON {t}
    BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;
""" for t in _APPEND_ONLY)


def connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) the index at `path`, schema in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (transaction).
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RegistryError(f"the registry at {path} has schema {version}, newer than this aios-lab's "
                                f"{SCHEMA_VERSION}", hint="upgrade aios-lab")
        if version < SCHEMA_VERSION:
            with transaction(conn):
                for stmt in _statements(SCHEMA):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as e:
        raise RegistryError(f"cannot open the registry index {path}: {e}",
                            hint="it is not an aios-lab registry, or it is damaged") from None
    return conn


def _statements(script: str) -> list[str]:
    """Split the schema into statements (executescript would COMMIT on its
    own, outside our transaction)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic write: all of it commits or none of it does (a killed
    process leaves the WAL's uncommitted frames, which SQLite discards)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
