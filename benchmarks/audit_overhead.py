#!/usr/bin/env python3
"""What the hash-chained audit log costs per record (issue 18).

One SQLite file opened as the registry opens it (WAL, synchronous=FULL),
two arms interleaved in one process, each record in its own transaction as
the registry writes it:
- `audit`: aios_lab.control.audit.append (read the head, canonical JSON,
  sha256 over the record and the previous hash, insert);
- `plain`: the same columns inserted into a table with no chain (no head
  read, no hashing): the baseline a log without tamper evidence would cost.
Then the same two arms with synchronous=OFF, which takes the fsync out and
leaves the CPU cost of the chain itself. Prints the median per-record time,
its 10th-90th percentile spread and the ratio, and what `verify_chain`
costs per record over the whole log.

Usage: .venv/bin/python benchmarks/audit_overhead.py [--records 2000] [--dir DIR]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from aios_lab.control import audit, db
from aios_lab.control.audit import Actor, canonical_json

PLAIN = """CREATE TABLE IF NOT EXISTS plain(seq INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, uid INTEGER NOT NULL,
 user TEXT NOT NULL, agent TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, args TEXT NOT NULL,
 verdict TEXT NOT NULL)"""


def _args(i: int) -> dict:
    # What a submit records: name, parent, tunables, model.
    return {"name": "fifo", "parent": f"{i:064x}", "tunables": {"slice_ns": 20_000_000 + i, "strict_fifo": False},
            "model": None}


def _audit(conn, actor, i):
    with db.transaction(conn):
        audit.append(conn, actor, "submit", f"{i:064x}", _args(i), "accepted")


def _plain(conn, actor, i):
    with db.transaction(conn):
        conn.execute("INSERT INTO plain(time_ns, uid, user, agent, action, target, args, verdict) "
                     "VALUES (?,?,?,?,?,?,?,?)", (time.time_ns(), actor.uid, actor.user, actor.agent, "submit",
                                                 f"{i:064x}", canonical_json(_args(i)), "accepted"))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(folder: Path, records: int, synchronous: str) -> dict:
    conn = db.connect(folder / f"bench-{synchronous}.sqlite")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(PLAIN)
    actor = Actor.current("bench")
    times = {"audit": [], "plain": []}
    arms = [("audit", _audit), ("plain", _plain)]
    for i in range(records):
        for name, fn in (arms if i % 2 == 0 else arms[::-1]):  # alternate which goes first
            t = time.perf_counter_ns()
            fn(conn, actor, i)
            times[name].append((time.perf_counter_ns() - t) / 1000)
    t = time.perf_counter_ns()
    report = audit.verify_chain(conn)
    verify_us = (time.perf_counter_ns() - t) / 1000 / report.records
    assert report.ok
    conn.close()
    return {"times": times, "verify_us": verify_us}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=None, help="where the SQLite files go (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"records per arm: {args.records}; files in {tmp}")
        for sync in ("FULL", "OFF"):
            res = measure(Path(tmp), args.records, sync)
            med = {k: statistics.median(v) for k, v in res["times"].items()}
            for k, v in res["times"].items():
                print(f"synchronous={sync:4} {k:5} median {med[k]:8.1f} us/record  "
                      f"p10-p90 [{_pct(v, 0.1):.1f}, {_pct(v, 0.9):.1f}] us")
            print(f"synchronous={sync:4} audit/plain {med['audit'] / med['plain']:.2f}x, "
                  f"+{med['audit'] - med['plain']:.1f} us/record; verify_chain {res['verify_us']:.2f} us/record")


if __name__ == "__main__":
    main()
