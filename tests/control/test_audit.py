"""aios_lab.control.audit: the hash chain finds every edited, deleted or moved
record and names it; an anchor saved elsewhere finds a cut-off or rewritten
log."""
from __future__ import annotations

import pytest

from aios_lab.control import audit, db
from aios_lab.control.audit import Actor, check_chain, parse_anchor, record_hash, verify_chain
from aios_lab.errors import AuditChainBroken, RegistryError

N = 6


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "registry.sqlite")
    for i in range(N):
        with db.transaction(c):
            audit.append(c, Actor(1000 + i, f"user{i}", "agent" if i % 2 else ""), "submit", f"{i:064x}",
                         {"i": i}, "accepted")
    yield c
    c.close()


def _unlock(conn):
    """What a person with write access to the file does first."""
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")


def _problems(conn, anchor=None):
    return verify_chain(conn, anchor).problems


def _rehash(conn, seq):
    r = conn.execute("SELECT * FROM audit WHERE seq = ?", (seq,)).fetchone()
    h = record_hash(seq, r["time_ns"], r["uid"], r["user"], r["agent"], r["action"], r["target"], r["args"],
                    r["verdict"], r["prev"])
    conn.execute("UPDATE audit SET hash = ? WHERE seq = ?", (h, seq))
    return h


def test_an_intact_log_verifies(conn):
    report = check_chain(conn)
    assert report.ok and report.records == N and report.head == audit.head(conn)
    assert [r.seq for r in audit.records(conn)] == list(range(1, N + 1))
    assert audit.records(conn)[0].prev == audit.GENESIS


@pytest.mark.parametrize("column, value", [("verdict", "refused"), ("uid", 0), ("user", "root"), ("agent", "someone"),
                                           ("args", '{"i":99}'), ("time_ns", 1), ("action", "deploy")])
def test_an_edited_record_is_named(conn, column, value):
    _unlock(conn)
    conn.execute(f"UPDATE audit SET {column} = ? WHERE seq = 3", (value,))
    assert _problems(conn) == [(3, "edited: its contents do not match its hash")]
    with pytest.raises(AuditChainBroken, match="record 3: edited") as err:
        check_chain(conn)
    assert err.value.problems == [(3, "edited: its contents do not match its hash")]


def test_deleted_records_are_named(conn):
    _unlock(conn)
    conn.execute("DELETE FROM audit WHERE seq = 2")
    assert _problems(conn) == [(2, "record 2 is missing (deleted)")]
    conn.execute("DELETE FROM audit WHERE seq IN (4, 5)")
    assert _problems(conn) == [(2, "record 2 is missing (deleted)"), (4, "records 4..5 are missing (deleted)")]


def test_reordered_records_are_named(conn):
    _unlock(conn)
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = 3")
    conn.execute("UPDATE audit SET seq = 3 WHERE seq = 4")
    conn.execute("UPDATE audit SET seq = 4 WHERE seq = -1")
    assert _problems(conn) == [(3, "out of order: it was written as record 4 and now sits at 3"),
                               (4, "out of order: it was written as record 3 and now sits at 4")]


def test_a_record_rewritten_with_a_fresh_hash_is_named(conn):
    _unlock(conn)
    conn.execute("UPDATE audit SET verdict = 'refused' WHERE seq = 3")
    _rehash(conn, 3)
    assert _problems(conn) == [(4, "its link names no record here, not record 3: record 3 was rewritten with a "
                                   "new hash, or this record was moved here")]


def test_moved_with_fresh_hashes_is_out_of_order(conn):
    # Records 3 and 4 swapped and each re-hashed at its new place (links left as written).
    _unlock(conn)
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = 3")
    conn.execute("UPDATE audit SET seq = 3 WHERE seq = 4")
    conn.execute("UPDATE audit SET seq = 4 WHERE seq = -1")
    _rehash(conn, 3)
    _rehash(conn, 4)
    problems = _problems(conn)
    assert problems and all(seq in (3, 4, 5) for seq, _ in problems), problems
    assert any("out of order" in p for _, p in problems)


def test_a_cut_off_or_rewritten_log_needs_the_anchor(conn):
    anchor = audit.head(conn)
    _unlock(conn)
    conn.execute(f"DELETE FROM audit WHERE seq = {N}")
    assert _problems(conn) == []  # a shorter chain is still a chain ...
    assert _problems(conn, anchor) == [(N, f"the anchor's record {N} is gone: the log ends at record {N - 1} "
                                           "(cut off, or rewritten shorter)")]
    # ... and a chain rebuilt from an edit onwards is one too, except against the anchor.
    conn.execute("UPDATE audit SET verdict = 'refused' WHERE seq = 2")
    prev = _rehash(conn, 2)
    for seq in range(3, N):
        conn.execute("UPDATE audit SET prev = ? WHERE seq = ?", (prev, seq))
        prev = _rehash(conn, seq)
    assert _problems(conn) == []
    mid = (N - 1, audit.records(conn)[N - 2].hash)
    assert _problems(conn, (3, "0" * 64)) == [(3, "record 3 is not the one the anchor saved: the log was rewritten")]
    assert _problems(conn, mid) == []


def test_append_is_refused_outside_a_transaction_or_for_an_unknown_action(conn):
    with pytest.raises(RegistryError, match="transaction"):
        audit.append(conn, Actor(0, "root"), "submit", "", {}, "accepted")
    with db.transaction(conn), pytest.raises(RegistryError, match="unknown audit action"):
        audit.append(conn, Actor(0, "root"), "submti", "", {}, "accepted")
    with db.transaction(conn), pytest.raises(RegistryError, match="not JSON"):
        audit.append(conn, Actor(0, "root"), "deploy", "", {"x": float("nan")}, "accepted")
    assert check_chain(conn).records == N


@pytest.mark.parametrize("text", ["", "3", "x:" + "a" * 64, "3:" + "a" * 63, "3:" + "A" * 64, "-1:" + "a" * 64])
def test_bad_anchors_are_refused(text):
    with pytest.raises(RegistryError, match="not SEQ:HASH"):
        parse_anchor(text)


def test_anchor_round_trip():
    assert parse_anchor(" 42:" + "ab" * 32 + "\n") == (42, "ab" * 32)
