"""CPU hotplug under a deployed policy, and its scx_stats socket, for real
(pytest -m guest, in the VM).

The kernel disables a scheduler without ops.cpu_online/cpu_offline when a CPU
goes offline or online, with exit code SCX_ECODE_ACT_RESTART |
SCX_ECODE_RSN_HOTPLUG; `deploy` must attach it again (as scx schedulers do)
instead of exiting, and say so.
"""
import json
import signal
from pathlib import Path

import pytest

from aios_lab import sched_ext
from aios_lab.scx_stats import DEFAULT_PATH, request

from .conftest import aios, scx_state, wait_for

pytestmark = pytest.mark.guest

START_S = 90
CPU = Path("/sys/devices/system/cpu/cpu3/online")


def _enable_seq() -> int:
    return sched_ext.read_state().enable_seq or 0


def _reattached_after(seq: int):
    return lambda: _enable_seq() > seq and scx_state() == ("enabled", "fifo")


@pytest.mark.skipif(not CPU.exists(), reason="needs a hotpluggable cpu3 (4 vCPUs)")
def test_deploy_attaches_again_after_a_cpu_goes_offline_and_online():
    dep = aios("deploy", "fifo", "--json", "--interval", "0.5")
    try:
        wait_for(lambda: scx_state() == ("enabled", "fifo"), START_S, "fifo enabled")
        wait_for(DEFAULT_PATH.exists, 30, "the scx_stats socket")
        meta = request(DEFAULT_PATH, "stats_meta")["args"]["resp"]
        assert "queued" in meta["fifo_stats"]["fields"], meta
        seq = _enable_seq()
        CPU.write_text("0")
        wait_for(_reattached_after(seq), 60, "fifo attached again after cpu3 went offline")
        seq = _enable_seq()
        CPU.write_text("1")
        wait_for(_reattached_after(seq), 60, "fifo attached again after cpu3 came back")
        # The same socket serves the re-attached scheduler's counters.
        stats = wait_for(lambda: request(DEFAULT_PATH, "stats"), 10, "scx_stats answer")
        assert stats["errno"] == 0 and stats["args"]["resp"]["queued"] >= 0, stats
        dep.send_signal(signal.SIGINT)
        out, _ = dep.communicate(timeout=60)
    finally:
        if CPU.read_text().strip() != "1":
            CPU.write_text("1")
        if dep.poll() is None:
            dep.kill()
    assert dep.returncode == 0, out
    events = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    restarts = [e for e in events if e["event"] == "restarting"]
    assert len(restarts) >= 2, out
    for r in restarts:
        assert r["reason"] == "CPU hotplug" and r["exit"]["kind"] == 66 and r["exit"]["restart"], r
    assert [e["event"] for e in events].count("restarted") == len(restarts)
    assert events[-1]["event"] == "detached" and events[-1]["exit"]["kind"] == 64
    assert scx_state()[0] == "disabled"
    assert not DEFAULT_PATH.exists()  # the socket goes with the scheduler
