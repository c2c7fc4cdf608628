"""The audit log: an append-only, hash-chained record of who asked the
control plane for what (submit, verify, deploy, rollback, override) and what
it answered.

Each record's hash covers its own fields and the previous record's hash, so
`verify_chain` finds any record that was edited (its hash no longer matches),
deleted (a gap in the sequence, a broken link) or moved (its link names a
record other than the one before it), and says which. What a chain cannot
show by itself is a rewrite of the whole tail by someone who recomputes every
hash, or the last records cut off: for that, keep the head (`head()`,
`aios-lab audit verify --json`) somewhere the writer cannot reach and check
against it later (`anchor=`). Records are appended in the same SQLite
transaction as what they describe, so there is never an entry without its
record or a record of a submit that did not happen.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import AuditChainBroken, RegistryError

GENESIS = "0" * 64
# Registered actions: who asked for what. A new control-plane operation adds
# its name here (an unknown one is refused, so a typo cannot hide a record).
ACTIONS = ("submit", "verify", "benchmark", "deploy", "stop", "rollback", "override")
_DOMAIN = b"aios-lab-audit-v1\n"


@dataclass(frozen=True)
class Actor:
    """Who asked: the real uid (what the kernel says, never what the caller
    claims), its user name, and for an agent the client's name."""
    uid: int
    user: str
    agent: str = ""

    @classmethod
    def current(cls, agent: str = "") -> "Actor":
        return cls(os.getuid(), user_name(os.getuid()), agent)


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


@dataclass(frozen=True)
class Record:
    seq: int
    time_ns: int
    uid: int
    user: str
    agent: str
    action: str
    target: str
    args: str      # canonical JSON, as hashed
    verdict: str
    prev: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["args"] = json.loads(self.args)
        return d


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(seq: int, time_ns: int, uid: int, user: str, agent: str, action: str, target: str,
                args: str, verdict: str, prev: str) -> str:
    body = canonical_json([seq, time_ns, uid, user, agent, action, target, args, verdict, prev])
    return hashlib.sha256(_DOMAIN + body.encode()).hexdigest()


def append(conn: sqlite3.Connection, actor: Actor, action: str, target: str, args: dict[str, Any],
           verdict: str) -> Record:
    """Append one record. Must run inside the caller's transaction (db.transaction):
    the write lock it holds is what makes reading the head and appending after
    it one step."""
    if action not in ACTIONS:
        raise RegistryError(f"unknown audit action {action!r}", hint=f"one of {', '.join(ACTIONS)}")
    if not conn.in_transaction:
        raise RegistryError("audit.append needs the caller's write transaction")
    try:
        args_text = canonical_json(args)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"audit arguments of {action} are not JSON: {e}") from None
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row["seq"] + 1, row["hash"]) if row else (1, GENESIS)
    now = time.time_ns()
    h = record_hash(seq, now, actor.uid, actor.user, actor.agent, action, target, args_text, verdict, prev)
    conn.execute("INSERT INTO audit(seq, time_ns, uid, user, agent, action, target, args, verdict, prev, hash) "
                 "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                 (seq, now, actor.uid, actor.user, actor.agent, action, target, args_text, verdict, prev, h))
    return Record(seq, now, actor.uid, actor.user, actor.agent, action, target, args_text, verdict, prev, h)


def records(conn: sqlite3.Connection, target: str | None = None, limit: int | None = None) -> list[Record]:
    sql, params = "SELECT * FROM audit", []
    if target is not None:
        sql += " WHERE target = ?"
        params.append(target)
    sql += " ORDER BY seq"
    rows = [_record(r) for r in conn.execute(sql, params)]
    return rows[-limit:] if limit else rows


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """(seq, hash) of the last record; (0, GENESIS) for an empty log."""
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (row["seq"], row["hash"]) if row else (0, GENESIS)


def _record(r: sqlite3.Row) -> Record:
    return Record(*(r[k] for k in ("seq", "time_ns", "uid", "user", "agent", "action", "target", "args",
                                   "verdict", "prev", "hash")))


@dataclass
class ChainReport:
    records: int
    head: tuple[int, str]
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "head": {"seq": self.head[0], "hash": self.head[1]},
                "problems": [{"seq": s, "problem": p} for s, p in self.problems]}


def verify_chain(conn: sqlite3.Connection, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Walk the log in sequence order and report every record that does not
    check out (see the module docstring); `anchor` is a (seq, hash) head
    saved earlier, which must still be there unchanged."""
    rows = conn.execute("SELECT * FROM audit ORDER BY seq").fetchall()
    seq_of = {r["hash"]: r["seq"] for r in rows}
    written = _written_positions(rows)
    problems: list[tuple[int, str]] = []
    expected, prev, prev_moved = 1, GENESIS, False
    for raw in rows:
        seq, moved = raw["seq"], False
        if seq != expected:
            problems.append((expected, f"records {expected}..{seq - 1} are missing (deleted)"
                             if seq > expected + 1 else f"record {expected} is missing (deleted)"))
        if not _intact(raw, seq):
            at = written.get(raw["hash"])
            moved = at is not None and at != seq and _intact(raw, at)
            problems.append((seq, f"out of order: it was written as record {at} and now sits at {seq}" if moved
                             else "edited: its contents do not match its hash"))
        elif raw["prev"] != prev and seq == expected and not prev_moved:  # after a moved one: said already
            if raw["prev"] in seq_of:
                problems.append((seq, f"out of order: it was written after the record now at {seq_of[raw['prev']]}, "
                                      f"not after record {seq - 1}"))
            else:
                problems.append((seq, f"its link names no record here, not record {seq - 1}: record {seq - 1} "
                                      "was rewritten with a new hash, or this record was moved here"))
        prev, expected, prev_moved = raw["hash"], seq + 1, moved
    last = (rows[-1]["seq"], rows[-1]["hash"]) if rows else (0, GENESIS)
    if anchor is not None and anchor[0] > 0:
        aseq, ahash = anchor
        at_row = next((r for r in rows if r["seq"] == aseq), None)
        if at_row is None:
            problems.append((aseq, f"the anchor's record {aseq} is gone: the log ends at record {last[0]} "
                                   "(cut off, or rewritten shorter)"))
        elif at_row["hash"] != ahash:
            problems.append((aseq, f"record {aseq} is not the one the anchor saved: the log was rewritten"))
    return ChainReport(len(rows), last, sorted(set(problems)))


def _intact(raw: sqlite3.Row, seq: int) -> bool:
    """Does the stored hash cover this record's fields, at position `seq`?"""
    try:
        return raw["hash"] == record_hash(seq, raw["time_ns"], raw["uid"], raw["user"], raw["agent"],
                                          raw["action"], raw["target"], raw["args"], raw["verdict"], raw["prev"])
    except (TypeError, ValueError):  # a field of a type we never write: edited by hand
        return False


def _written_positions(rows: list) -> dict[str, int]:
    """Where each record was written, by following the links from the
    start: the record linking to the genesis was first, the one linking to
    it second, and so on (as far as the links hold)."""
    after = {r["prev"]: r["hash"] for r in rows}
    out: dict[str, int] = {}
    cur, n = GENESIS, 1
    while cur in after and after[cur] not in out:
        cur = after[cur]
        out[cur] = n
        n += 1
    return out


def check_chain(conn: sqlite3.Connection, anchor: tuple[int, str] | None = None) -> ChainReport:
    """verify_chain, raising AuditChainBroken when anything is wrong."""
    report = verify_chain(conn, anchor)
    if not report.ok:
        first = report.problems[0]
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise AuditChainBroken(f"audit log: record {first[0]}: {first[1]}{more}", report.problems,
                               hint="restore the registry from a backup and find out who changed it")
    return report


def parse_anchor(text: str) -> tuple[int, str]:
    """'SEQ:HASH' (as `audit verify --json` prints it) -> (seq, hash)."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise RegistryError(f"anchor {text!r} is not SEQ:HASH", hint="e.g. 42:<64 hex digits>, from `aios-lab audit verify --json`")
    return int(seq), digest
