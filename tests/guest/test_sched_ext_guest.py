"""sched_ext control, for real, inside the VM (pytest -m guest)."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aios_lab.sched import status as deploy_status
from aios_lab.bpf import Map
from aios_lab.errors import BpfMapError

from .conftest import ROOT, aios, scx_state, wait_for

pytestmark = pytest.mark.guest

TEST_POLICIES = {"AIOS_LAB_POLICY_PATH": str(ROOT / "tests" / "data" / "policies")}
# Start-up of a Python CLI under TCG emulation takes seconds; be generous.
START_S = 90


def _enabled_with(name):
    return lambda: scx_state() == ("enabled", name)


def _spinners(n: int, count: int) -> subprocess.Popen:
    loop = f"i=0; while [ $i -lt {count} ]; do i=$((i+1)); done"
    return subprocess.Popen(["sh", "-c", " ".join([f"sh -c '{loop}' &"] * n) + " wait"])


def _victim(seconds: float = 120) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("victim.py")), "aios-stallme",
                             str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_deploy_fifo_runs_a_workload_and_ctrl_c_detaches():
    dep = aios("deploy", "fifo", "--json", "--interval", "0.5")
    try:
        wait_for(_enabled_with("fifo"), START_S, "fifo enabled")
        work = _spinners(8, 30000)  # 2x oversubscribed on 4 vCPUs
        assert work.wait(timeout=300) == 0
        assert scx_state() == ("enabled", "fifo"), "fifo must still be attached after the workload"
        st = subprocess.run([sys.executable, "-m", "aios_lab.cli", "status", "--json"], capture_output=True,
                            text=True, cwd=ROOT, check=True)
        status = json.loads(st.stdout)
        assert status["sched_ext"]["ops"] == "fifo"
        assert status["policy"]["name"] == "fifo"
        stats = status["policy"]["stats"]
        assert stats["DISPATCHED"] + stats["DIRECT"] > 0, stats
        dep.send_signal(signal.SIGINT)
        out, _ = dep.communicate(timeout=60)
    finally:
        if dep.poll() is None:
            dep.kill()
    assert dep.returncode == 0, out
    assert scx_state()[0] == "disabled"
    last = json.loads(out.strip().splitlines()[-1])
    assert last["event"] == "detached"
    assert last["exit"]["kind"] == 64, last  # SCX_EXIT_UNREG: detached from user space
    assert last["stats"]["QUEUED"] > 0


def test_sigkill_of_the_controller_leaves_nothing_attached():
    dep = aios("deploy", "fifo", "--interval", "0.5")
    wait_for(_enabled_with("fifo"), START_S, "fifo enabled")
    rec = wait_for(deploy_status.read_record, 10, "deploy record")
    assert rec.pid == dep.pid and rec.stats_map_id
    dep.kill()  # SIGKILL: no handler runs, only the kernel can clean up
    dep.wait(timeout=10)
    wait_for(lambda: scx_state()[0] == "disabled", 10, "sched_ext disabled after SIGKILL")
    # The maps went with the process: their ids no longer open.
    wait_for(lambda: _map_gone(rec.stats_map_id), 10, "stats map freed")
    bpffs = Path("/sys/fs/bpf")
    assert not [p for p in bpffs.rglob("*") if "aios" in p.name], "stale pins in bpffs"
    st = subprocess.run([sys.executable, "-m", "aios_lab.cli", "status", "--json"], capture_output=True,
                        text=True, cwd=ROOT, check=True)
    status = json.loads(st.stdout)
    assert status["policy"] is None and status.get("stale_record_removed") is True
    assert deploy_status.read_record() is None


def _map_gone(map_id: int) -> bool:
    try:
        Map.from_id(map_id).close()
        return False
    except BpfMapError:
        return True


def test_watchdog_ejects_a_stalling_policy_and_it_is_reported():
    victim = _victim()
    try:
        dep = aios("deploy", "stall", "--interval", "0.5", env=TEST_POLICIES)
        out, _ = dep.communicate(timeout=START_S + 60)
        assert dep.returncode == 5, out
        assert "ejected" in out and "runnable task stall" in out, out
        assert "aios-stallme" in out, out  # the kernel's message names the starved task
        assert scx_state()[0] == "disabled"
        # The guest keeps running: the starved task is back on the fair class.
        assert victim.poll() is None
        assert subprocess.run(["true"]).returncode == 0
    finally:
        victim.kill()
        victim.wait()


def test_scx_bpf_error_ejects_with_the_policy_message():
    victim = _victim()
    try:
        dep = aios("deploy", "stall", "--set", "mode=1", "--json", env=TEST_POLICIES)
        out, _ = dep.communicate(timeout=START_S + 60)
        assert dep.returncode == 5, out
        last = json.loads(out.strip().splitlines()[-1])
        assert last["event"] == "ejected"
        assert last["exit"]["kind"] == 1025, last  # SCX_EXIT_ERROR_BPF
        assert "deliberate error on aios-stallme" in last["exit"]["msg"], last
    finally:
        victim.kill()
        victim.wait()


def test_a_second_scheduler_is_refused_clearly():
    dep = aios("deploy", "fifo", "--interval", "0.5")
    try:
        wait_for(_enabled_with("fifo"), START_S, "fifo enabled")
        second = subprocess.run([sys.executable, "-m", "aios_lab.cli", "deploy", "fifo", "--duration", "1"],
                                capture_output=True, text=True, cwd=ROOT, timeout=START_S)
        assert second.returncode == 4
        lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "is enabled with fifo attached" in lines[0], second.stderr
        assert "scxctl" in lines[0] and "systemctl stop scx" in lines[0]  # the tools people use
        assert scx_state() == ("enabled", "fifo"), "the refused deploy must not disturb the running one"
    finally:
        dep.send_signal(signal.SIGINT)
        dep.communicate(timeout=60)


def test_bad_tunable_is_refused_before_anything_loads():
    res = subprocess.run([sys.executable, "-m", "aios_lab.cli", "deploy", "fifo", "--set", "slice_ns=5"],
                         capture_output=True, text=True, cwd=ROOT, timeout=START_S)
    assert res.returncode == 3
    assert "slice_ns=5 is outside" in res.stderr
    assert scx_state()[0] == "disabled"
