"""The root service (aios_lab.control.service) over a real Unix socket: the
caller is who SO_PEERCRED says, only verified full hashes are deployed, the
tunables must be the entry's, requests are rate-limited, and every deploy or
stop request is audited with the caller's uid.

The deployer here is `open-only` (libbpf opens the stored object and sets its
tunables, nothing is loaded): this host has no sched_ext. The sched_ext
deployer is the controller's Deployment, tested in the VM elsewhere."""
from __future__ import annotations

import grp
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from aios_lab.control.audit import Actor
from aios_lab.control.peer import Peer, RateLimiter, member, peer_of
from aios_lab.control.platform import Platform
from aios_lab.control.registry import Registry
from aios_lab.control.service import ControlService, ServiceConfig, request, serve
from aios_lab.errors import SetupError

from tests.helpers import REPO

from tests.helpers.control import fifo_parts, mark_verified

PLATFORM = Platform("7.3.4-test", "b" * 64, {})


@pytest.fixture
def setup(tmp_path):
    # The socket's folder must be reachable by another uid (pytest's tmp_path is root's alone).
    sockdir = Path(tempfile.mkdtemp(prefix="aios-ctl-"))
    sockdir.chmod(0o755)
    cfg = ServiceConfig(socket=sockdir / "control.sock", group=grp.getgrgid(os.getgid()).gr_name,
                        registry=tmp_path / "registry", run_dir=tmp_path / "entries", deployer="open-only",
                        burst=6, per_s=60.0, max_duration_s=120.0)
    with Registry(cfg.registry) as reg:
        verified = reg.submit(fifo_parts(), Actor.current()).entry
        mark_verified(reg, verified.hash)
        failed = reg.submit(fifo_parts(5_000_000), Actor.current()).entry
        reg.record_run(failed.hash, "verify", "fail", [], PLATFORM, Actor.current())
        unverified = reg.submit(fifo_parts(6_000_000), Actor.current()).entry
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=serve, args=(cfg, stop), kwargs={"ready": ready}, daemon=True)
    t.start()
    assert ready.wait(10)
    yield cfg, verified, failed, unverified
    stop.set()
    t.join(10)
    shutil.rmtree(sockdir, ignore_errors=True)


def ask(cfg, **payload):
    return request(cfg.socket, payload)


def test_peer_credentials_come_from_the_kernel():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_of(a) == Peer(os.getpid(), os.getuid(), os.getgid())


def test_group_membership():
    me = Peer(1, os.getuid(), os.getgid())
    assert member(me, os.getgid())
    assert member(Peer(1, 0, 12345), 4242)  # root always
    assert not member(Peer(1, 4_000_000, 4_000_000), 4242)  # no account, other group


def test_rate_limiter_refills():
    now = [0.0]
    rl = RateLimiter(2, 10.0, clock=lambda: now[0])
    assert rl.take(1) == 0 and rl.take(1) == 0
    assert rl.take(1) == pytest.approx(5.0)
    assert rl.take(2) == 0  # per uid
    now[0] = 5.0
    assert rl.take(1) == 0 and rl.take(1) > 0


def test_deploys_only_a_verified_full_hash(setup):
    cfg, verified, failed, unverified = setup
    assert ask(cfg, op="ping")["ok"]
    for entry, why in ((verified.hash[:12], "full registry hash"), ("fifo", "full registry hash"),
                       (failed.hash, "no passing verification (latest: fail)"),
                       (unverified.hash, "no passing verification (latest: never verified)"),
                       ("f" * 64, "no registry entry")):
        answer = ask(cfg, op="deploy", entry=entry)
        assert not answer["ok"] and why in answer["error"], answer
    assert ask(cfg, op="status")["active"] is None


def test_deploy_status_stop_and_the_audit(setup, tmp_path):
    cfg, verified, *_ = setup
    answer = ask(cfg, op="deploy", entry=verified.hash, duration=30, agent="claude",
                 tunables={"slice_ns": 20_000_000})
    assert answer["ok"] and answer["entry"] == verified.hash and answer["loaded"] is False, answer
    assert (cfg.run_dir / verified.hash / f"{verified.hash}.bpf.o").read_bytes()[:4] == b"\x7fELF"
    status = ask(cfg, op="status")["active"]
    assert status["entry"] == verified.hash and status["uid"] == os.getuid()
    busy = ask(cfg, op="deploy", entry=verified.hash)
    assert not busy["ok"] and "stop it first" in busy["error"]
    assert ask(cfg, op="stop")["ok"] and ask(cfg, op="status")["active"] is None
    with Registry(cfg.registry) as reg:
        recs = [r for r in reg.audit_records() if r.action in ("deploy", "stop")]
        assert [(r.action, r.verdict[:8]) for r in recs] == [("deploy", "accepted"), ("deploy", "refused:"),
                                                             ("stop", "accepted")]
        assert recs[0].uid == os.getuid() and recs[0].agent == "claude" and recs[0].target == verified.hash
        assert reg.verify_chain().ok


def test_a_deployment_is_detached_when_its_time_is_up(setup):
    cfg, verified, *_ = setup
    assert ask(cfg, op="deploy", entry=verified.hash, duration=0.3)["ok"]
    deadline = time.monotonic() + 10
    while ask(cfg, op="status")["active"] is not None:  # the service's tick detaches it
        assert time.monotonic() < deadline, "still deployed 10 s after a 0.3 s deployment"
        time.sleep(0.05)
    assert ask(cfg, op="deploy", entry=verified.hash, duration=5)["ok"]  # free again


@pytest.mark.parametrize("extra, why", [
    (dict(tunables={"slice_ns": 5_000_000}), "differs from the verified entry's 20000000"),
    (dict(tunables={"slice_ns": 1}), "outside"),
    (dict(tunables={"nosuch": 1}), "has no tunable"),
    (dict(tunables=[1]), "tunables must be an object"),
    (dict(duration=0), "duration 0"),
    (dict(duration=121), "duration 121"),
    (dict(duration="30"), "duration '30'"),
])
def test_arguments_are_checked_against_the_manifest(setup, extra, why):
    cfg, verified, *_ = setup
    answer = ask(cfg, op="deploy", entry=verified.hash, **extra)
    assert not answer["ok"] and why in answer["error"], answer
    assert ask(cfg, op="status")["active"] is None


def test_requests_are_rate_limited_and_audited(setup):
    cfg, verified, failed, _ = setup
    answers = [ask(cfg, op="deploy", entry=failed.hash) for _ in range(7)]
    assert ["rate limit" in a["error"] for a in answers] == [False] * 6 + [True]
    with Registry(cfg.registry) as reg:
        assert [r.verdict for r in reg.audit_records() if r.action == "deploy"][-1] == "refused: rate limit"


@pytest.mark.parametrize("raw", [b"not json\n", b"[1]\n", b'{"op": "format-disk"}\n', b"\n"])
def test_malformed_requests_get_an_answer(setup, raw):
    cfg, *_ = setup
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(cfg.socket))
        s.sendall(raw)
        assert b'"ok": false' in s.makefile("rb").readline()


def test_a_caller_outside_the_group_is_refused_and_audited(setup):
    cfg, verified, *_ = setup
    if os.getuid() != 0:
        pytest.skip("needs root to become another uid")  # the group check itself: test_group_membership
    os.chmod(cfg.socket, 0o777)  # the socket's mode is systemd's gate; here we test the service's own
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # never return into pytest from here
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            answer = request(cfg.socket, {"op": "deploy", "entry": verified.hash})
            os.write(w, answer.get("error", "").encode())
        except BaseException as e:
            os.write(w, f"child failed: {e!r}".encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    error = os.read(r, 4096).decode()
    assert "uid 65534 may not use this service" in error
    with Registry(cfg.registry) as reg:
        last = reg.audit_records()[-1]
        assert (last.uid, last.action, last.verdict[:8]) == (65534, "deploy", "refused:")


def test_config(tmp_path):
    p = tmp_path / "service.toml"
    p.write_text('[service]\ngroup = "wheel"\nburst = 2\nper_s = 10\nsocket = "/tmp/x.sock"\n')
    cfg = ServiceConfig.load(p)
    assert (cfg.group, cfg.burst, cfg.per_s, cfg.socket) == ("wheel", 2, 10.0, Path("/tmp/x.sock"))
    shipped = ServiceConfig.load(REPO / "packaging" / "systemd" / "service.toml")
    assert shipped == ServiceConfig()  # the file documents the defaults
    for text, why in (('[service]\ngroupp = "x"\n', "no key groupp"), ('[service]\nburst = "3"\n', "not a int"),
                      ('[service]\ndeployer = "yolo"\n', "unknown"), ('[service]\nburst = 0\n', "burst >= 1")):
        p.write_text(text)
        with pytest.raises(SetupError, match=why):
            ServiceConfig.load(p)


def test_the_service_commands(setup, tmp_path):
    from click.testing import CliRunner

    from aios_lab.cli import main

    cfg, verified, failed, _ = setup
    sock = ["--socket", str(cfg.socket)]
    run = CliRunner().invoke
    ok = run(main, ["service", "deploy", verified.hash, "--duration", "30", *sock])
    assert ok.exit_code == 0 and f"deployed {verified.hash}" in ok.output and "open-only" in ok.output, ok.output
    status = run(main, ["service", "status", "--json", *sock])
    assert status.exit_code == 0 and '"entry": "' + verified.hash in status.output
    assert run(main, ["service", "stop", *sock]).exit_code == 0
    refused = run(main, ["service", "deploy", failed.hash, *sock])
    assert refused.exit_code == 1 and refused.output.startswith("Error: entry ") and refused.output.count("\n") == 1
    gone = run(main, ["service", "status", "--socket", str(tmp_path / "nothing.sock")])
    assert gone.exit_code == 4 and "cannot reach the aios-lab service" in gone.output


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
    st.sampled_from(["op", "entry", "duration", "tunables", "agent"]),
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), max_size=5)))
def test_any_request_gets_an_answer_not_an_exception(raw):
    import tempfile as _tf

    with _tf.TemporaryDirectory() as d:
        cfg = ServiceConfig(socket=Path(d) / "s", group=grp.getgrgid(os.getgid()).gr_name, registry=Path(d) / "r",
                            run_dir=Path(d) / "e", deployer="open-only", burst=1000)
        answer = ControlService(cfg).handle(Peer(os.getpid(), os.getuid(), os.getgid()), raw)
    assert isinstance(answer, dict) and isinstance(answer["ok"], bool)
    assert answer["ok"] == (raw.strip() != b"" and _op(raw) in ("ping", "status"))


def _op(raw: bytes):
    try:
        d = json.loads(raw)
    except ValueError:
        return None
    return d.get("op") if isinstance(d, dict) and isinstance(d.get("tunables", {}), dict) else None


def test_rollback_needs_a_deployment_and_a_deployer_that_keeps_a_fallback(setup):
    cfg, verified, *_ = setup
    nothing = ask(cfg, op="rollback", reason="alarm")
    assert not nothing["ok"] and "nothing is deployed" in nothing["error"]
    assert ask(cfg, op="deploy", entry=verified.hash, duration=30)["ok"]
    # open-only loads nothing, so there is no last known good policy to put back
    refused = ask(cfg, op="rollback", reason="alarm")
    assert not refused["ok"] and "keeps no last known good" in refused["error"], refused
    assert not ask(cfg, op="rollback", reason="x" * 501)["ok"]
    assert ask(cfg, op="stop")["ok"]
    with Registry(cfg.registry) as reg:
        recs = [(r.action, r.verdict.split(":")[0]) for r in reg.audit_records() if r.action == "rollback"]
        assert recs == [("rollback", "refused")] * 3
        assert reg.verify_chain().ok
