"""Telemetry inside the sched_ext VM: the same collector, plus the policy's stats."""
import signal
import subprocess
import sys

import pytest

from aios_lab.telemetry.trace import Trace

from .conftest import ROOT, aios, scx_state, wait_for

pytestmark = pytest.mark.guest


def test_collect_under_fifo_records_the_policy_and_its_stats(tmp_path):
    dep = aios("deploy", "fifo", "--interval", "1")
    try:
        wait_for(lambda: scx_state() == ("enabled", "fifo"), 90, "fifo enabled")
        loop = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"
        res = subprocess.run([sys.executable, "-m", "aios_lab.cli", "collect", "--interval", "0.25", "--out",
                              str(tmp_path / "t"), "--", "sh", "-c", " ".join([f"sh -c '{loop}' &"] * 8) + " wait"],
                             capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert res.returncode == 0, res.stderr
    finally:
        dep.send_signal(signal.SIGINT)
        dep.communicate(timeout=60)
    tr = Trace.open(tmp_path / "t")
    md = tr.metadata
    assert md["status"] == "complete" and md["sources"] == ["bpf", "procfs"]
    assert md["kernel"]["config"]["sched_ext"] is True and md["host"]["aios_lab_vm"] is True
    assert md["sched_ext_at_start"]["ops"] == "fifo" and md["policy"] == "fifo"
    assert md["topology"]  # LLC / NUMA layout of the 2-node guest
    stats = tr.table("policy_stats")
    assert set(stats.policy) == {"fifo"} and stats[stats.stat == "QUEUED"].value.sum() > 0
    assert len(tr.table("migrations")) > 0  # 8 spinners on 4 vCPUs under one shared queue
    assert all(v == 0 for v in md["lost"].values()), md["lost"]  # the guest shows no unpaired switches either
    assert "trace written" in res.stdout
