"""The root service deploys a registry entry for real, inside the VM
(pytest -m guest): the entry's own stored object is attached through
sched_ext with the entry's tunables, detached on request, and each step is
audited."""
import threading

import pytest

from aios_lab.sched import status
from aios_lab.control.audit import Actor
from aios_lab.control.registry import Registry
from aios_lab.control.service import ServiceConfig, request, serve

from tests.helpers.control import mark_verified

from .conftest import ROOT, scx_state, wait_for

pytestmark = pytest.mark.guest


def _verified(reg, slice_ns):
    entry = reg.submit_folder(ROOT / "policies" / "fifo", Actor.current(), sets={"slice_ns": str(slice_ns)},
                              build=False).entry
    # Stands in for the staged verifier (its own guest test runs the
    # stages): the service only reads that the latest verification passed.
    mark_verified(reg, entry.hash)
    return entry


def test_service_deploys_a_verified_entry_and_rolls_back_on_request(tmp_path):
    cfg = ServiceConfig(socket=tmp_path / "control.sock", group="root", registry=tmp_path / "registry",
                        run_dir=tmp_path / "entries", deployer="sched_ext", max_duration_s=120,
                        canary_window_s=1.0, burst=10)
    with Registry(cfg.registry) as reg:
        good, candidate = _verified(reg, 5_000_000), _verified(reg, 10_000_000)
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=serve, args=(cfg, stop), kwargs={"ready": ready}, daemon=True)
    t.start()
    try:
        assert ready.wait(30)
        answer = request(cfg.socket, {"op": "deploy", "entry": good.hash, "duration": 60, "agent": "guest-test"},
                         timeout_s=120)
        assert answer["ok"] and answer["loaded"] and answer["live"] == "candidate", answer
        assert answer["lkg"] is None    # the first entry ever: the kernel's default class is its fallback
        assert scx_state() == ("enabled", "fifo")
        # The entry's tunables are what was set into the object's rodata.
        assert status.read_record().tunables == {"slice_ns": 5_000_000, "strict_fifo": False}
        assert request(cfg.socket, {"op": "status"})["active"]["entry"] == good.hash

        def held():
            with Registry(cfg.registry) as reg:
                return any(r.kind == "deploy" and r.verdict == "pass" for r in reg.runs(good.hash))
        wait_for(held, 60, "the first entry holding its 1 s canary window")
        assert request(cfg.socket, {"op": "stop"})["ok"]
        wait_for(lambda: scx_state()[0] == "disabled", 20, "fifo detached on stop")

        # The second entry runs with the first loaded beside it; a rollback
        # puts the first back in one attach.
        answer = request(cfg.socket, {"op": "deploy", "entry": candidate.hash, "duration": 60}, timeout_s=120)
        assert answer["ok"] and answer["lkg"] == good.hash, answer
        assert status.read_record().tunables["slice_ns"] == 10_000_000
        back = request(cfg.socket, {"op": "rollback", "reason": "guest test"}, timeout_s=120)
        assert back["ok"] and back["live"] == "standby", back
        assert back["rollback"]["to"] == "fifo" and back["rollback"]["state"] == "enabled"
        assert scx_state() == ("enabled", "fifo")
        assert status.read_record().tunables["slice_ns"] == 5_000_000
        assert request(cfg.socket, {"op": "stop"})["ok"]
        wait_for(lambda: scx_state()[0] == "disabled", 20, "the last known good detached on stop")
        # Detaching when the time is up is the service's logic, not the
        # deployer's: tests/control/test_service.py checks it on the host.
    finally:
        stop.set()
        t.join(30)
    with Registry(cfg.registry) as reg:
        acts = [(r.action, r.verdict) for r in reg.audit_records() if r.action in ("deploy", "stop", "rollback")
                and r.verdict == "accepted"]
        assert acts == [("deploy", "accepted"), ("stop", "accepted"), ("deploy", "accepted"),
                        ("rollback", "accepted"), ("stop", "accepted")]
        assert [r.verdict for r in reg.runs(candidate.hash) if r.kind == "deploy"] == ["rolled-back"]
        assert reg.verify_chain().ok
