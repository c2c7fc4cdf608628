"""The root service deploys a registry entry for real, inside the VM
(pytest -m guest): the entry's own stored object is attached through
sched_ext with the entry's tunables, detached on request, and each step is
audited."""
import threading

import pytest

from aios_lab.sched import status
from aios_lab.control.audit import Actor
from aios_lab.control.platform import Platform
from aios_lab.control.registry import Registry
from aios_lab.control.service import ServiceConfig, request, serve

from .conftest import ROOT, scx_state, wait_for

pytestmark = pytest.mark.guest


def test_service_deploys_a_verified_entry_with_sched_ext(tmp_path):
    cfg = ServiceConfig(socket=tmp_path / "control.sock", group="root", registry=tmp_path / "registry",
                        run_dir=tmp_path / "entries", deployer="sched_ext", max_duration_s=120)
    with Registry(cfg.registry) as reg:
        entry = reg.submit_folder(ROOT / "policies" / "fifo", Actor.current(), sets={"slice_ns": "5000000"},
                                  build=False).entry
        # Stands in for the staged verifier (another part of issue 18): the
        # service only reads that the latest verification passed.
        reg.record_run(entry.hash, "verify", "pass", [], Platform.current(), Actor.current())
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=serve, args=(cfg, stop), kwargs={"ready": ready}, daemon=True)
    t.start()
    try:
        assert ready.wait(30)
        answer = request(cfg.socket, {"op": "deploy", "entry": entry.hash, "duration": 60, "agent": "guest-test"})
        assert answer["ok"] and answer["loaded"], answer
        assert scx_state() == ("enabled", "fifo")
        # The entry's tunables are what was set into the object's rodata.
        assert status.read_record().tunables == {"slice_ns": 5_000_000, "strict_fifo": False}
        assert request(cfg.socket, {"op": "status"})["active"]["entry"] == entry.hash
        assert request(cfg.socket, {"op": "stop"})["ok"]
        wait_for(lambda: scx_state()[0] == "disabled", 20, "fifo detached on stop")
        # Detaching when the time is up is the service's logic, not the
        # deployer's: tests/control/test_service.py checks it on the host.
    finally:
        stop.set()
        t.join(30)
    with Registry(cfg.registry) as reg:
        acts = [(r.action, r.verdict) for r in reg.audit_records() if r.action in ("deploy", "stop")]
        assert acts == [("deploy", "accepted"), ("stop", "accepted")]
        assert reg.verify_chain().ok
