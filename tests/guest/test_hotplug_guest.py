"""CPU hotplug under a deployed policy, and its scx_stats socket, for real
(pytest -m guest, in the VM).

The kernel disables a scheduler without ops.cpu_online/cpu_offline when a CPU
goes offline or online, with exit code SCX_ECODE_ACT_RESTART |
SCX_ECODE_RSN_HOTPLUG; `deploy` must attach it again (as scx schedulers do)
instead of exiting, and say so.
"""
import json
import signal
import threading
from pathlib import Path

import pytest

from aios_lab.scx_stats import DEFAULT_PATH, request

from .conftest import aios, scx_state, wait_for

pytestmark = pytest.mark.guest

START_S = 90
CPU = Path("/sys/devices/system/cpu/cpu3/online")


class _Events:
    """The deploy's --json event lines, read as they come."""

    def __init__(self, proc) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append(line)

    def events(self) -> list[dict]:
        return [json.loads(ln) for ln in list(self.lines) if ln.startswith("{")]

    def count(self, name: str) -> int:
        return sum(e["event"] == name for e in self.events())


@pytest.mark.skipif(not CPU.exists(), reason="needs a hotpluggable cpu3 (4 vCPUs)")
def test_deploy_attaches_again_after_a_cpu_goes_offline_and_online():
    dep = aios("deploy", "fifo", "--json", "--interval", "0.5")
    ev = _Events(dep)
    try:
        wait_for(lambda: ev.count("stats_socket"), START_S, "fifo attached and its scx_stats socket")
        assert scx_state() == ("enabled", "fifo")
        meta = request(DEFAULT_PATH, "stats_meta")["args"]["resp"]
        assert "queued" in meta["fifo_stats"]["fields"], meta
        CPU.write_text("0")
        wait_for(lambda: ev.count("restarted") == 1, 60, f"a restart after cpu3 went offline: {ev.lines}")
        CPU.write_text("1")
        wait_for(lambda: ev.count("restarted") == 2, 60, f"a restart after cpu3 came back: {ev.lines}")
        assert scx_state() == ("enabled", "fifo")
        # The same socket serves the re-attached scheduler's counters.
        stats = request(DEFAULT_PATH, "stats")
        assert stats["errno"] == 0 and stats["args"]["resp"]["queued"] >= 0, stats
        dep.send_signal(signal.SIGINT)
        dep.wait(timeout=60)
        ev.thread.join(10)
    finally:
        if CPU.read_text().strip() != "1":
            CPU.write_text("1")
        if dep.poll() is None:
            dep.kill()
            dep.wait()
    out = "".join(ev.lines)
    assert dep.returncode == 0, out
    events = ev.events()
    restarts = [e for e in events if e["event"] == "restarting"]
    assert len(restarts) == 2, out
    for r in restarts:
        assert r["reason"] == "CPU hotplug" and r["exit"]["kind"] == 66 and r["exit"]["restart"], r
    assert events[-1]["event"] == "detached" and events[-1]["exit"]["kind"] == 64, out
    assert scx_state()[0] == "disabled"
    assert not DEFAULT_PATH.exists()  # the socket goes with the scheduler
