"""Deploy as a transaction, for real (pytest -m guest, in the VM): a
candidate that holds its canary window becomes the last known good; one the
kernel ejects is replaced by the last known good policy (kept loaded beside
it, so rollback is one attach), retried with backoff, then quarantined; a CPU
hotplug restarts the candidate instead of rolling it back. Everything lands
in the registry as deploy runs with their evidence, and in the audit chain."""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aios_lab.control.audit import Actor
from aios_lab.control.registry import Registry
from aios_lab.control.rollout import Backoff, Guards, Rollout, is_quarantined, last_known_good
from aios_lab.errors import DeployRefused
from aios_lab.sched import sched_ext

from tests.helpers.control import mark_verified

from .conftest import ROOT, scx_state

pytestmark = pytest.mark.guest

# Short windows: the test is about the transaction, not about the KPI
# (min_timeslices high enough that the wait ratio is never judged here).
FAST = Guards(window_s=2.0, baseline_s=0.3, min_timeslices=10**9)
# A victim spins until the test says stop (argv[1] appears), after marking
# that it runs (argv[2]): with a victim started afresh each time, a Python
# start under TCG (about a second) left gaps longer than a canary window in
# which the stall policy met no victim and held (seen in CI).
SPIN = ("import os, sys\nopen(sys.argv[2], 'w').close()\n"
        "while not os.path.exists(sys.argv[1]): pass")
TIMEOUT_S = 240     # a TCG guest on a loaded 2-core host: attempts take seconds each


def _last_cpu() -> Path | None:
    cpus = sorted(Path("/sys/devices/system/cpu").glob("cpu[1-9]*/online"))
    return cpus[-1] if cpus else None


def _verified(reg: Registry, folder: Path, sets: dict[str, str]):
    entry = reg.submit_folder(folder, Actor.current(), sets=sets, build=False).entry
    # Stands in for `aios-lab verify` (its own guest test runs the stages):
    # the rollout only reads that the latest verification passed.
    mark_verified(reg, entry.hash)
    return entry


def _victims(stop: threading.Event, folder: Path) -> threading.Thread:
    """Keep starting tasks the stall policy (mode 1) errors on when enqueued
    (a task's comm is the name it was executed by: a link named aios-stallme).
    They spin, so their slice expires and they are enqueued: a task that only
    wakes onto an idle CPU is dispatched by the default select_cpu directly,
    without ops.enqueue."""
    exe = folder / "aios-stallme"
    exe.symlink_to(sys.executable)
    done, running = folder / "victims-stop", folder / "victim-runs"

    def loop():
        while not stop.is_set():
            subprocess.run([str(exe), "-c", SPIN, str(done), str(running)], check=False)
            stop.wait(0.05)

    def stopper():
        stop.wait()
        done.touch()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    threading.Thread(target=stopper, daemon=True).start()
    deadline = time.monotonic() + 60
    while not running.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return t


def test_rollout_rolls_back_to_the_last_known_good_then_quarantines(tmp_path):
    logs: list[str] = []
    with Registry(tmp_path / "registry") as reg:
        fifo = _verified(reg, ROOT / "policies" / "fifo", {})
        # 1. fifo holds its window, through a CPU hotplug: restarted, not rolled back.
        cpu, seen = _last_cpu(), {}

        def hotplug_once():
            if cpu is not None and not seen and scx_state() == ("enabled", "fifo"):
                seen["off"] = True
                cpu.write_text("0")
                cpu.write_text("1")
            return False
        out = Rollout(reg, fifo.hash, Actor.current(), run_dir=tmp_path / "run", guards=FAST, duration_s=4.0,
                      stopped=hotplug_once, log=logs.append).run()
        assert out.state == "held", (out.to_dict(), logs)
        assert len(out.attempts) == 1 and out.attempts[0].verdict == "held"
        if cpu is not None:
            assert [r["reason"] for r in out.attempts[0].restarts] == ["CPU hotplug"], out.attempts[0].restarts
        assert last_known_good(reg).hash == fifo.hash
        assert scx_state()[0] == "disabled"     # the rollout's end detached it

        # 2. the stall policy errors as soon as a victim runs: every attempt is
        # ejected and fifo (prepared beforehand) runs again at once.
        stall = _verified(reg, ROOT / "tests" / "data" / "policies" / "stall", {"mode": "1"})
        stop = threading.Event()
        t = _victims(stop, tmp_path)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            # no duration: it ends when the entry is quarantined (or the test's deadline)
            out = Rollout(reg, stall.hash, Actor.current(), run_dir=tmp_path / "run", guards=FAST,
                          backoff=Backoff(first_s=0.5, quarantine_after=2),
                          stopped=lambda: is_quarantined(reg, stall) or time.monotonic() > deadline,
                          log=logs.append).run()
        finally:
            stop.set()
            t.join(30)
        assert out.lkg == fifo.hash
        assert out.state == "quarantined", (out.to_dict(), logs)
        assert [a.verdict for a in out.attempts] == ["ejected", "ejected"], logs
        for a in out.attempts:
            assert a.exit["kind"] == 1025 and "deliberate error" in a.exit["msg"], a.exit
            assert a.rollback["to"] == "fifo" and a.rollback["state"] == "enabled" and a.rollback["ops"] == "fifo"
            # measured from the kernel's own exit record (ops.exit's timestamp)
            assert a.rollback["reattach_ms"] is not None and a.rollback["reattach_ms"] > 0
        print("rollback ms from the kernel's exit record:", [a.rollback["reattach_ms"] for a in out.attempts])
        assert scx_state()[0] == "disabled"

        # 3. the evidence is in the registry, as runs of the entry.
        runs = [r for r in reg.runs(stall.hash) if r.kind == "deploy"]
        assert [r.verdict for r in runs] == ["ejected", "ejected", "quarantined"]
        ev = json.loads(reg.blob(runs[0].reports["deploy.json"]))
        assert ev["attempt"]["exit"]["reason"] and ev["kernel_log"], ev.keys()
        assert "sched_ext" in "\n".join(ev["kernel_log"])
        metrics = {s.metric for s in reg.samples(runs[0].id)}
        assert {"reattach_ms", "detect_ms", "attach_ms", "restarts"} <= metrics
        assert is_quarantined(reg, stall)

        # 4. quarantined: refused, and the refusal is audited; an override is loud and audited.
        with pytest.raises(DeployRefused, match="quarantined"):
            Rollout(reg, stall.hash, Actor.current(), run_dir=tmp_path / "run").run()
        acts = [(r.action, r.verdict.split(":")[0]) for r in reg.audit_records(stall.hash)]
        assert ("deploy", "refused") in acts
        assert reg.verify_chain().ok
    assert sched_ext.read_state().state == "disabled"
