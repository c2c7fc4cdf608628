"""The MCP server's registry and service tools, as plain functions on this
host (registry, drafts and jobs in a tmp dir): submit a source, search, get,
compare, history, a verification job that ends at the static stage (the
kernel stages need sched_ext: tests/guest/test_mcp_guest.py runs the whole
chain in the VM), and deploy/rollback through a real root service on a Unix
socket with the `open-only` deployer (no sched_ext here)."""
from __future__ import annotations

import grp
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from aios_lab.control import drafts, jobs, mcp_server as m, verification
from aios_lab.control.audit import Actor
from aios_lab.control.platform import Platform
from aios_lab.control.registry import Registry
from aios_lab.control.service import ServiceConfig, serve
from aios_lab.errors import BuildError, InputError, PolicyError, RegistryError, ServiceRefused, SetupError
from aios_lab.sched.policy import get

from tests.helpers import REPO
from tests.helpers.control import mark_verified

FIFO = get("fifo")
SOURCE = FIFO.source_path.read_text()


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("AIOS_LAB_REGISTRY", str(tmp_path / "registry"))
    # Draft objects go into a build tree of the test's own (vmlinux.h from the real one).
    build = tmp_path / "build"
    build.mkdir()
    (build / "vmlinux.h").symlink_to(REPO / "build" / "vmlinux.h")
    monkeypatch.setenv("AIOS_LAB_BUILD", str(build))


def _audit(verdict_prefix: str) -> list:
    with Registry() as reg:
        return [r for r in reg.audit_records() if r.verdict.startswith(verdict_prefix)]


def test_submit_a_variant_search_get_and_history():
    e = m.submit_policy(SOURCE, base="fifo", name="fifo-agent", tunables={"slice_ns": 5_000_000}, agent="claude")
    assert e["created"] and e["name"] == "fifo-agent"
    assert e["author"] == {"kind": "agent", "name": "claude", "uid": os.getuid()}
    assert e["tunables"] == {"slice_ns": 5_000_000, "strict_fifo": False}
    # The same text again is the same draft folder, the same object, the same entry.
    again = m.submit_policy(SOURCE, base="fifo", name="fifo-agent", tunables={"slice_ns": 5_000_000})
    assert not again["created"] and again["hash"] == e["hash"] and again["folder"] == e["folder"]
    # The draft took fifo's header with it, and is private.
    assert sorted(p.name for p in Path(e["folder"]).iterdir()) == ["fifo.bpf.c", "intf.h", "manifest.toml"]
    assert drafts.root().stat().st_mode & 0o077 == 0
    child = m.submit_policy(SOURCE + "\n/* v2 */\n", base="fifo", name="fifo-agent", agent="claude")
    assert child["parent"] == e["hash"]

    assert [x["hash"] for x in m.search_policies(name="fifo-agent")] == [child["hash"], e["hash"]]
    assert [x["hash"] for x in m.search_policies(hash=e["hash"][:10])] == [e["hash"]]
    assert len(m.search_policies(author="agent")) == 2 and m.search_policies(author="person") == []
    assert len(m.search_policies(verdict="unverified")) == 2 and m.search_policies(verdict="pass") == []
    with pytest.raises(InputError, match="not one of"):
        m.search_policies(verdict="great")

    got = m.get_policy("fifo-agent~1")
    assert got["hash"] == e["hash"] and got["source"] == SOURCE and 'name = "fifo-agent"' in got["manifest"]

    chain = m.history("fifo-agent")
    assert [x["hash"] for x in chain] == [child["hash"], e["hash"]]
    assert [(r["action"], r["verdict"], r["agent"]) for r in chain[1]["audit"]] == [
        ("submit", "accepted", "claude"), ("submit", "exists", "mcp")]


def test_submit_with_manifest_text():
    manifest = (FIFO.folder / "manifest.toml").read_text().replace('name = "fifo"', 'name = "fifo-m"')
    # fifo.bpf.c includes its intf.h: a draft from a manifest alone has no header beside it.
    with pytest.raises(BuildError, match="intf.h"):
        m.submit_policy(SOURCE, manifest=manifest)
    header = (FIFO.folder / "intf.h").read_text()
    src = SOURCE.replace('#include "intf.h"', header)
    e = m.submit_policy(src, manifest=manifest, tunables={"strict_fifo": True})
    assert e["name"] == "fifo-m" and e["tunables"]["strict_fifo"] is True


@pytest.mark.parametrize("kwargs, error, match", [
    ({"source": "x" * (drafts.MAX_SOURCE + 1), "base": "fifo", "name": "big"}, InputError, "more than"),
    ({"source": SOURCE, "base": "fifo"}, InputError, "needs a name of its own"),
    ({"source": SOURCE, "base": "fifo", "name": 'x"\n[tunables.y]'}, InputError, "not a plain policy name"),
    ({"source": SOURCE, "base": "fifo", "name": "mllb"}, PolicyError, "installed policy"),
    ({"source": SOURCE, "base": "nope", "name": "x"}, PolicyError, "no installed policy named 'nope'"),
    ({"source": SOURCE, "base": "fifo", "manifest": "name = 'x'", "name": "x"}, InputError, "not both"),
    ({"source": SOURCE, "base": "fifo", "name": "fifo-w"}, BuildError, r"error: \"draft\" \[-Werror"),
    ({"source": SOURCE, "base": "fifo", "name": "fifo-t", "tunables": {"slice_ns": 5}}, PolicyError, "outside"),
    ({"source": SOURCE, "manifest": "not toml [", "name": "x"}, PolicyError, "not valid TOML"),
])
def test_submit_refusals_are_one_line_audited_and_store_nothing(kwargs, error, match):
    if kwargs.get("name") == "fifo-w":
        kwargs = {**kwargs, "source": SOURCE + '\n#warning "draft"\n'}   # -Werror makes it an error
    with pytest.raises(error, match=match):
        m.submit_policy(**kwargs)
    with Registry() as reg:
        assert reg.entries() == []
    assert len(_audit("refused:")) == 1


def _wait(job: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = m.verify_status(job)
        if st["state"] != "running":
            return st
        time.sleep(0.2)
    raise AssertionError(f"job {job} still running after {timeout} s: {st}")


def test_verify_job_reports_a_static_failure_and_records_it():
    """A draft whose manifest requires a kfunc no kernel has fails the static
    stage; the kernel stages are skipped (no VM boot), the run is recorded
    with its samples and report, and the service would refuse to deploy it."""
    manifest = (FIFO.folder / "manifest.toml").read_text().replace('name = "fifo"', 'name = "fifo-k"').replace(
        '"scx_bpf_select_cpu_dfl"]', '"scx_bpf_select_cpu_dfl", "scx_bpf_no_such_kfunc"]')
    src = SOURCE.replace('#include "intf.h"', (FIFO.folder / "intf.h").read_text())
    e = m.submit_policy(src, manifest=manifest, agent="claude")
    job = m.verify_policy(e["hash"][:12], agent="claude")
    assert job["entry"] == e["hash"] and job["state"] == "running"
    st = _wait(job["job"])
    assert st["state"] == "done" and st["verdict"] == "fail" and not st["passed"], st
    assert [(s["stage"], s["passed"]) for s in st["stages"]] == [
        ("static", False), ("verifier", False), ("liveness", False), ("performance", False)]
    assert "scx_bpf_no_such_kfunc" in st["stages"][0]["reason"] and st["failed_stage"] == "static"
    assert all(s["skipped"] == "static failed" for s in st["stages"][1:])
    with Registry() as reg:
        entry = reg.by_hash(e["hash"])
        (run,) = reg.runs(e["hash"])
        assert run.kind == "verify" and run.verdict == "fail" and run.author.name == "claude"
        assert run.reports[verification.REPORT] == st["report_digest"]
        metrics = {(s.stage, s.metric) for s in reg.samples(run.id)}
        assert ("static", "seconds") in metrics
        report = verification.latest_report(reg, entry)
        assert report["failed_check"] == "kernel_features" and report["artifacts"]["object"] == entry.object
    assert m.search_policies(verdict="fail")[0]["hash"] == e["hash"]


def test_verify_refuses_an_entry_without_source_here_and_bad_job_ids(tmp_path):
    # An entry submitted from a folder that is gone: nothing to verify it from.
    folder = tmp_path / "gone" / "fifo-gone"
    shutil.copytree(FIFO.folder, folder)
    (folder / "manifest.toml").write_text((folder / "manifest.toml").read_text().replace(
        'name = "fifo"', 'name = "fifo-gone"'))
    with Registry() as reg:
        reg.submit_folder(folder, Actor.current())
    shutil.rmtree(folder)
    with pytest.raises(RegistryError, match="no source to verify"):
        m.verify_policy("fifo-gone")
    with pytest.raises(InputError, match="not a job id"):
        m.verify_status("../../etc")
    with pytest.raises(InputError, match="no verification job"):
        m.verify_status("0" * 16)


def test_compare_puts_the_recorded_samples_side_by_side():
    from aios_lab.control.entry import Sample

    a = m.submit_policy(SOURCE, base="fifo", name="fifo-c", tunables={"slice_ns": 5_000_000})
    b = m.submit_policy(SOURCE, base="fifo", name="fifo-c", tunables={"slice_ns": 3_000_000})
    plat = Platform("7.3.4-test", "b" * 64, {})
    with Registry() as reg:
        for e, base in ((a, 100.0), (b, 90.0)):
            reg.record_run(e["hash"], "benchmark", "no-worse",
                           [Sample("performance", "p99_wait", i, base + i, "us") for i in range(5)], plat,
                           Actor.current())
        reg.record_run(a["hash"], "verify", "pass", [Sample("static", "seconds", 0, 1.5, "s")], plat, Actor.current())
    c = m.compare_policies(a["hash"], "fifo-c")
    assert c["diff"]["tunables"] == {"slice_ns": [5_000_000, 3_000_000]}
    rows = {(r["kind"], r["metric"]): r for r in c["samples"]}
    p99 = rows[("benchmark", "p99_wait")]
    assert (p99["a"]["median"], p99["b"]["median"], p99["a"]["n"]) == (102.0, 92.0, 5)
    assert rows[("verify", "seconds")]["b"] is None
    assert c["runs"]["a"]["verify"]["verdict"] == "pass" and "verify" not in c["runs"]["b"]


@pytest.fixture
def service(tmp_path, monkeypatch):
    # The socket's folder must be reachable by another uid (pytest's tmp_path is root's alone).
    sockdir = Path(tempfile.mkdtemp(prefix="aios-mcp-"))
    cfg = ServiceConfig(socket=sockdir / "control.sock", group=grp.getgrgid(os.getgid()).gr_name,
                        registry=Path(os.environ["AIOS_LAB_REGISTRY"]), run_dir=tmp_path / "entries",
                        deployer="open-only", burst=6, max_duration_s=120.0)
    monkeypatch.setenv("AIOS_LAB_SERVICE_SOCKET", str(cfg.socket))
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=serve, args=(cfg, stop), kwargs={"ready": ready}, daemon=True)
    t.start()
    assert ready.wait(10)
    yield cfg
    stop.set()
    t.join(10)
    shutil.rmtree(sockdir, ignore_errors=True)


def test_deploy_and_stop_go_through_the_root_service(service):
    e = m.submit_policy(SOURCE, base="fifo", name="fifo-d", tunables={"slice_ns": 5_000_000}, agent="claude")
    with pytest.raises(ServiceRefused, match="refused deploy: entry .* has no passing verification"):
        m.deploy_policy(e["hash"], 30, agent="claude")
    with pytest.raises(ServiceRefused, match="full registry hash"):
        m.deploy_policy(e["hash"][:12], 30)
    with Registry() as reg:
        # Stands in for a passing verification (the guest test runs the real one).
        mark_verified(reg, e["hash"])
    ans = m.deploy_policy(e["hash"], 30, agent="claude")
    assert ans["entry"] == e["hash"] and ans["loaded"] is False and "until" in ans
    assert m.stop_policy(agent="claude")["entry"] == e["hash"]
    with pytest.raises(ServiceRefused, match="refused stop: nothing is deployed"):
        m.stop_policy()
    with Registry() as reg:
        acts = [(r.action, r.agent, r.verdict) for r in reg.audit_records(e["hash"]) if r.action != "submit"]
    assert acts[-2:] == [("deploy", "claude", "accepted"), ("stop", "claude", "accepted")]


class _StandIn:
    """One-answer Unix socket server speaking the service's protocol (one
    JSON line each way): what rollback sends and how an answer comes back,
    independent of what the service does with it."""

    def __init__(self, path: Path, answer: dict) -> None:
        import socket

        self.got: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.answer = answer
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self) -> None:
        import json

        conn, _ = self.sock.accept()
        with conn:
            buf = b""
            while not buf.endswith(b"\n"):
                buf += conn.recv(65536)
            self.got.append(json.loads(buf))
            conn.sendall(json.dumps(self.answer).encode() + b"\n")
        self.sock.close()


@pytest.mark.parametrize("answer", [
    {"ok": True, "entry": "e" * 64, "rolled_back_from": "f" * 64},
    {"ok": False, "error": "request needs \"op\": one of ping, status, deploy, stop"},
])
def test_rollback_sends_the_op_and_passes_the_answer_through(answer, monkeypatch):
    sockdir = Path(tempfile.mkdtemp(prefix="aios-mcp-"))
    try:
        monkeypatch.setenv("AIOS_LAB_SERVICE_SOCKET", str(sockdir / "s.sock"))
        server = _StandIn(sockdir / "s.sock", answer)
        if answer["ok"]:
            assert m.rollback(agent="claude") == {k: v for k, v in answer.items() if k != "ok"}
        else:
            with pytest.raises(ServiceRefused) as exc:
                m.rollback(agent="claude")
            assert exc.value.one_line() == f"the root service refused rollback: {answer['error']}"
        server.t.join(5)
        assert server.got == [{"op": "rollback", "agent": "claude"}]
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_deploy_without_a_service_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("AIOS_LAB_SERVICE_SOCKET", str(tmp_path / "none.sock"))
    with pytest.raises(SetupError, match="cannot reach the aios-lab service at .*none.sock"):
        m.deploy_policy("a" * 64)


def test_job_groups_follow_where_the_kernel_stages_run():
    from aios_lab.control.verify import STAGES

    later = STAGES[STAGES.index("static") + 1:]
    assert "verifier" in later and "liveness" in later
    assert jobs._groups(True, STAGES) == [("static",), *[(s,) for s in later]]   # each reported as it ends
    assert jobs._groups(False, STAGES) == [("static",), later]                    # one VM boot
    assert jobs._groups(False, ("static",)) == [("static",)]


def test_a_verification_job_refuses_unknown_stages_and_one_without_static():
    with pytest.raises(InputError, match="unknown verifier stage"):
        m.verify_policy("fifo", stages=["static", "speed"])
    with pytest.raises(InputError, match="always starts with the static stage"):
        m.verify_policy("fifo", stages=["liveness"])


def test_a_verification_jobs_deployed_arm_is_checked_before_it_starts():
    e = m.submit_policy(SOURCE, base="fifo", name="fifo-arm", tunables={"slice_ns": 5_000_000})
    with pytest.raises(RegistryError):
        m.verify_policy(e["hash"], against="f" * 64)          # no such entry
    with pytest.raises(InputError, match="its own deployed arm"):
        m.verify_policy(e["hash"], against=e["hash"])
    assert not jobs.root().exists() or not any(jobs.root().iterdir())   # nothing started
