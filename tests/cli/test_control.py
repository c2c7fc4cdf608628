"""`aios-lab policy submit|list --registry|show|history|diff` and
`aios-lab audit verify|log`, through click's runner, exit codes included."""
from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from aios_lab.cli import main


@pytest.fixture
def run(tmp_path):
    env = {"AIOS_LAB_REGISTRY": str(tmp_path / "registry")}

    def invoke(*args):
        return CliRunner().invoke(main, list(args), env=env)
    invoke.root = tmp_path / "registry"
    return invoke


def _json(res):
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_submit_list_show_history_diff(run):
    a = _json(run("policy", "submit", "fifo", "--no-build", "--json"))
    b = _json(run("policy", "submit", "fifo", "--no-build", "--set", "slice_ns=5000000", "--agent", "claude",
                  "--json"))
    assert a["created"] and b["created"] and b["parent"] == a["hash"]
    assert b["author"]["kind"] == "agent" and b["author"]["name"] == "claude"
    again = run("policy", "submit", "fifo", "--no-build")
    assert again.exit_code == 0 and "already in the registry" in again.output

    listed = _json(run("policy", "list", "--registry", "--json"))
    assert [e["hash"] for e in listed] == [a["hash"], b["hash"]]
    assert "unverified" in run("policy", "list", "--registry").output

    shown = _json(run("policy", "show", "fifo", "--json"))
    assert shown["hash"] == b["hash"] and shown["tunables"]["slice_ns"] == 5000000 and shown["runs"] == []
    text = run("policy", "show", a["hash"][:8]).output
    assert a["hash"] in text and "slice_ns=20000000" in text

    hist = _json(run("policy", "history", "fifo", "--json"))
    assert [h["hash"] for h in hist] == [b["hash"], a["hash"]]
    assert [r["verdict"] for r in hist[0]["audit"]] == ["accepted"]
    assert "submit by" in run("policy", "history", "fifo").output

    d = _json(run("policy", "diff", "fifo~1", "fifo", "--json"))
    assert d["tunables"] == {"slice_ns": [20000000, 5000000]} and d["manifest"] == []
    assert d["object"]["sections"] == []  # same object, other tunables
    assert "tunable slice_ns: 20000000 -> 5000000" in run("policy", "diff", "fifo~1", "fifo").output


def test_diff_of_two_policies_shows_manifest_and_sections(run):
    run("policy", "submit", "fifo", "--no-build")
    run("policy", "submit", "mllb", "--no-build")
    d = _json(run("policy", "diff", "fifo", "mllb", "--json"))
    assert any(line.startswith("+name = \"mllb\"") for line in d["manifest"])
    names = {s["section"] for s in d["object"]["sections"]}
    assert "struct_ops/fifo_enqueue" in names and d["object"]["a"]["size"] != d["object"]["b"]["size"]
    out = run("policy", "diff", "fifo", "mllb").output
    assert "object:" in out and "struct_ops/fifo_enqueue" in out


@pytest.mark.parametrize("args, code, text", [
    (("policy", "show", "nosuch"), 3, "no registry entry matches 'nosuch'"),
    (("policy", "show", "fifo~x"), 3, "is not a registry reference"),
    (("policy", "submit", "fifo", "--no-build", "--set", "slice_ns=1"), 3, "outside"),
    (("policy", "submit", "fifo", "--no-build", "--set", "nosuch=1"), 3, "has no tunable"),
    (("policy", "submit", "fifo", "--set", "noequals"), 2, "is not KEY=VALUE"),
    (("policy", "submit", "fifo", "--root", "--parent", "abcd"), 2, "exclude each other"),
    (("policy", "submit", "nosuchpolicy"), 3, "no policy named"),
    (("audit", "verify", "--anchor", "xyz"), 3, "not SEQ:HASH"),
])
def test_errors_are_one_line_with_their_exit_code(run, args, code, text):
    res = run(*args)
    assert res.exit_code == code, res.output
    assert text in res.output and res.output.count("\n") == 1 and res.output.startswith("Error: ")


def test_audit_verify_and_log(run):
    run("policy", "submit", "fifo", "--no-build")
    run("policy", "submit", "fifo", "--no-build", "--set", "strict_fifo=true")
    run("policy", "submit", "fifo", "--no-build", "--set", "slice_ns=1")  # refused, still audited
    ok = _json(run("audit", "verify", "--json"))
    assert ok["ok"] and ok["records"] == 3
    anchor = f"{ok['head']['seq']}:{ok['head']['hash']}"
    assert "audit log intact: 3 records" in run("audit", "verify", "--anchor", anchor).output
    log = _json(run("audit", "log", "--json"))
    assert [r["verdict"][:8] for r in log] == ["accepted", "accepted", "refused:"]
    assert len(_json(run("audit", "log", "--entry", "fifo", "--json"))) == 1
    assert len(_json(run("audit", "log", "--limit", "2", "--json"))) == 2

    conn = sqlite3.connect(run.root / "registry.sqlite")
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET verdict = 'accepted' WHERE seq = 3")
    conn.commit()
    conn.close()
    bad = run("audit", "verify")
    assert bad.exit_code == 8
    assert "record 3: edited: its contents do not match its hash" in bad.output
    assert "Error: the audit log's hash chain is broken at 1 place(s), first at record 3" in bad.output
    assert _json_exit(run("audit", "verify", "--json"), 8)["problems"] == [
        {"seq": 3, "problem": "edited: its contents do not match its hash"}]


def _json_exit(res, code):
    assert res.exit_code == code, res.output
    return json.loads(res.output[:res.output.rindex("}") + 1])


def test_a_damaged_blob_is_an_integrity_error(run):
    e = _json(run("policy", "submit", "fifo", "--no-build", "--json"))
    digest = e["blobs"]["tunables"]
    path = run.root / "blobs" / digest[:2] / digest[2:]
    path.chmod(0o644)
    path.write_text('{"slice_ns":1}\n')
    res = run("policy", "show", "fifo")
    assert res.exit_code == 8 and "does not match its hash" in res.output


def test_policy_verify_records_the_report_and_deploy_reads_it(run):
    from aios_lab.exit_codes import VERIFY_FAILED

    entry = _json(run("policy", "submit", "fifo", "--no-build", "--json"))
    # Unverified: refused before anything is loaded, and the refusal is audited.
    refused = run("policy", "deploy", entry["hash"], "--run-dir", str(run.root / "run"))
    assert refused.exit_code == VERIFY_FAILED and "never verified" in refused.output, refused.output
    # The static stage runs on this host; the kernel stages would boot the VM.
    got = _json(run("policy", "verify", entry["hash"], "--stages", "static", "--json"))
    assert got["entry"] == entry["hash"] and got["report"]["passed"] and got["run"]["verdict"] == "pass"
    assert [s["stage"] for s in got["report"]["stages"]] == ["static"]
    shown = _json(run("policy", "show", entry["hash"], "--samples", "--json"))
    (verify,) = [r for r in shown["runs"] if r["kind"] == "verify"]
    assert "verify.json" in verify["reports"] and any(s["metric"] == "seconds" for s in verify["samples"])
    bad = run("policy", "verify", entry["hash"], "--stages", "liveness")
    assert bad.exit_code == 3 and "static stage" in bad.output
    log = _json(run("audit", "log", "--json"))
    assert [(r["action"], r["verdict"].split(":")[0]) for r in log if r["action"] in ("deploy", "verify")] == [
        ("deploy", "refused"), ("verify", "pass")]
