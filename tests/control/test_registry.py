"""aios_lab.control.registry: content-addressed entries, parents, runs with
raw samples, and the audit record that goes with every change."""
from __future__ import annotations

import hashlib
import shutil
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from aios_lab.control.audit import Actor
from aios_lab.control.entry import KEY_DOMAIN, Parts, Ref, Sample, entry_key, parse_ref, tunables_bytes
from aios_lab.control.platform import Platform
from aios_lab.control.registry import Registry
from aios_lab.errors import AiosError, PolicyError, RegistryError

from tests.helpers.control import FIFO, fifo_parts

ME = Actor(1000, "alice")
AGENT = Actor(1000, "alice", "claude-code")
PLATFORM = Platform("7.3.4-test", "b" * 64, {"online_cpus": [0, 1]})


@pytest.fixture
def reg(tmp_path):
    with Registry(tmp_path / "registry") as r:
        yield r


def test_key_is_stable():
    # Stored keys depend on this text never changing: a new spelling is a new KEY_DOMAIN.
    digests = ("1" * 64, "2" * 64, "3" * 64)
    text = f"aios-lab-policy-v1\nobject {'1' * 64}\nmanifest {'2' * 64}\ntunables {'3' * 64}\nmodel -\n"
    assert KEY_DOMAIN == "aios-lab-policy-v1"
    assert entry_key(*digests, None) == hashlib.sha256(text.encode()).hexdigest()
    # The same key written down: a change to entry_key that keeps the docstring's text is caught too.
    assert entry_key(*digests, None) == "0faf1a953c365551432dc0c5c26f9e44c641c40e7282a4c6aea87394b7f57198"
    assert entry_key(*digests, "4" * 64) != entry_key(*digests, None)
    assert fifo_parts().key() == fifo_parts().key()


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.booleans() | st.integers(-2 ** 64, 2 ** 64)
                       | st.text(max_size=8), max_size=6))
def test_tunables_spelling_ignores_order_and_keeps_types(values):
    assert tunables_bytes(dict(reversed(list(values.items())))) == tunables_bytes(values)
    as_ints = {k: int(v) if isinstance(v, bool) else v for k, v in values.items()}
    if any(isinstance(v, bool) for v in values.values()):
        assert tunables_bytes(as_ints) != tunables_bytes(values)  # true is not 1


@settings(max_examples=60, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True), st.integers(0, 999))
def test_refs_round_trip(base, back):
    assert parse_ref(str(Ref(base, back))) == Ref(base, back)


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=30))
def test_any_text_is_a_ref_or_a_registry_error(text):
    try:
        ref = parse_ref(text)
    except RegistryError:
        return
    assert ref.back >= 0 and ref.base


def test_round_trip(reg):
    parts = fifo_parts(model=None)
    res = reg.submit(parts, ME)
    e = reg.get(res.entry.hash[:8])
    assert res.created and e.hash == parts.key()
    assert reg.blob(e.object) == parts.object and reg.blob(e.manifest) == parts.manifest
    assert reg.blob(e.source) == parts.source and reg.tunables(e) == parts.tunables
    assert e.object_size == len(parts.object) and e.model is None
    assert (e.author.kind, e.author.name, e.author.uid) == ("person", "alice", 1000)


def test_same_content_is_the_same_entry_and_keeps_its_first_parent(reg):
    a = reg.submit(fifo_parts(), ME).entry
    b = reg.submit(fifo_parts(5_000_000), AGENT).entry
    again = reg.submit(fifo_parts(5_000_000), ME, root=True)
    assert not again.created and again.entry == b and b.parent == a.hash
    assert b.author.kind == "agent" and b.author.name == "claude-code"
    assert [r.verdict for r in reg.audit_records()] == ["accepted", "accepted", "exists"]


def test_parent_chains(reg):
    a = reg.submit(fifo_parts(1_000_000), ME).entry
    b = reg.submit(fifo_parts(2_000_000), ME).entry          # default: newest of the same name
    c = reg.submit(fifo_parts(3_000_000), ME, parent=a.hash[:6]).entry
    d = reg.submit(fifo_parts(4_000_000), ME, root=True).entry
    assert (a.parent, b.parent, c.parent, d.parent) == (None, a.hash, a.hash, None)
    assert [e.hash for e in reg.history(c.hash)] == [c.hash, a.hash]
    assert reg.resolve("fifo") == d.hash and reg.resolve(f"{b.hash[:10]}~1") == a.hash
    with pytest.raises(RegistryError, match="has no parent"):
        reg.resolve(f"{a.hash}~1")
    with pytest.raises(RegistryError, match="no registry entry"):
        reg.submit(fifo_parts(5_000_000), ME, parent="ffff0000")
    assert len(reg.entries()) == 4  # the refused one left nothing


def test_ambiguous_and_unknown_references(reg):
    hashes = [reg.submit(fifo_parts(1_000_000 + i), ME).entry.hash for i in range(40)]
    prefixes = {}
    for h in hashes:
        prefixes.setdefault(h[:4], []).append(h)
    shared = next((p for p, hs in prefixes.items() if len(hs) > 1), None)
    if shared:  # 40 hashes over 65536 prefixes: a shared 4-digit prefix is likely, not certain
        with pytest.raises(RegistryError, match="several"):
            reg.resolve(shared)
    with pytest.raises(RegistryError, match="not a registry reference"):
        reg.resolve("fifo~x")
    with pytest.raises(RegistryError, match="no registry entry"):
        reg.resolve("nosuchpolicy")


def test_a_name_that_looks_like_a_hash_prefix_is_ambiguous(reg):
    e = reg.submit(fifo_parts(), ME).entry
    odd = Parts(e.hash[:6], "sched_ext", fifo_parts().object, b"name = 'x'\n", {})
    reg.submit(odd, ME)
    with pytest.raises(RegistryError, match="both a policy name and the start of a hash"):
        reg.resolve(e.hash[:6])
    assert reg.resolve(e.hash[:8]) == e.hash


def test_runs_keep_every_raw_sample_and_their_platform(reg):
    e = reg.submit(fifo_parts(), ME).entry
    samples = [Sample("performance", "p99_wait", i, 100.0 + i, "us", arm) for arm in ("candidate", "eevdf")
               for i in range(5)] + [Sample("kernel-verifier", "insns_processed", 0, 1234, "insn")]
    run = reg.record_run(e.hash, "benchmark", "no-worse", samples, PLATFORM, AGENT,
                         {"report.json": b'{"verdict": "no-worse"}', "compare.html": b"<html></html>"})
    assert run.verdict == "no-worse" and run.platform == PLATFORM.to_dict()
    assert sorted(reg.samples(run.id), key=lambda s: (s.stage, s.arm, s.run_index)) == \
        sorted(samples, key=lambda s: (s.stage, s.arm, s.run_index))
    assert reg.blob(run.reports["report.json"]) == b'{"verdict": "no-worse"}'
    last = reg.audit_records(e.hash)[-1]
    assert (last.action, last.verdict, last.agent) == ("benchmark", "no-worse", "claude-code")


@pytest.mark.parametrize("kind, verdict, samples, match", [
    ("verify", "maybe", [], "unknown verdict"),
    ("profile", "pass", [], "unknown run kind"),
    ("verify", "pass", [Sample("s", "m", 0, 1.0, "u")] * 2, "two samples"),
])
def test_a_bad_run_records_nothing(reg, kind, verdict, samples, match):
    e = reg.submit(fifo_parts(), ME).entry
    with pytest.raises(RegistryError, match=match):
        reg.record_run(e.hash, kind, verdict, samples, PLATFORM, ME)
    assert reg.runs(e.hash) == [] and len(reg.audit_records()) == 1


@pytest.mark.parametrize("kw", [dict(value=float("nan")), dict(value=float("inf")), dict(run_index=-1),
                                dict(unit=""), dict(stage="x" * 200), dict(value=True)])
def test_samples_are_checked(kw):
    args = dict(stage="s", metric="m", run_index=0, value=1.0, unit="u") | kw
    with pytest.raises(RegistryError):
        Sample(**args)


def test_history_tables_are_append_only(reg):
    reg.submit(fifo_parts(), ME)
    for sql in ("UPDATE entries SET name = 'x'", "DELETE FROM entries", "UPDATE audit SET verdict = 'x'",
                "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            reg.conn.execute(sql)


def test_check_finds_a_damaged_blob(reg):
    e = reg.submit(fifo_parts(), ME).entry
    assert reg.check()["damaged"] == []
    path = reg.blobs.path(e.manifest)
    path.chmod(0o644)
    path.write_bytes(b"name = 'evil'\n")
    assert reg.check()["damaged"] == [e.manifest]


def test_submit_a_policy_folder_builds_it_and_a_refusal_is_audited(reg, tmp_path):
    folder = tmp_path / "fifo2"
    shutil.copytree(FIFO.folder, folder)
    res = reg.submit_folder(folder, ME, sets={"strict_fifo": "true"})
    assert reg.tunables(res.entry)["strict_fifo"] is True
    assert reg.blob(res.entry.object)[:4] == b"\x7fELF"
    with pytest.raises(PolicyError, match="outside"):
        reg.submit_folder(folder, ME, sets={"slice_ns": "1"})
    with pytest.raises(PolicyError, match="takes no model"):
        reg.submit_folder(folder, ME, model=folder / "manifest.toml")
    (folder / "fifo.bpf.c").write_text("this is not C\n")
    with pytest.raises(AiosError, match="clang failed"):
        reg.submit_folder(folder, ME)
    verdicts = [r.verdict for r in reg.audit_records()]
    assert verdicts[0] == "accepted" and all(v.startswith("refused: ") for v in verdicts[1:]) and len(verdicts) == 4
    assert len(reg.entries()) == 1


def test_a_non_bpf_object_is_refused(reg, tmp_path):
    from aios_lab.control.elf import check_bpf_object

    with pytest.raises(RegistryError, match="not a 64-bit"):
        check_bpf_object(b"#!/bin/sh\n" * 10)
    with pytest.raises(RegistryError, match="not BPF"):
        check_bpf_object(open("/bin/true", "rb").read())
