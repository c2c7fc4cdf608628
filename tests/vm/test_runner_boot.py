"""VM tier: boots the pinned sched_ext kernel (pytest -m vm).

A TCG boot costs ~20-25 s here, so the guest tests run as one pytest session
inside one boot; the other tests check how the runner reports a guest's end.
"""
import json
import sys

import pytest

from aios_lab import paths
from aios_lab.errors import GuestHang, GuestPanic
from aios_lab.vm import runner
from aios_lab.vm.topology import Topology

pytestmark = pytest.mark.vm


def test_guest_suite_passes_inside_one_boot(capsys):
    """tests/guest/* in the VM with 4 vCPUs over 2 sockets / 2 NUMA nodes."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "guest", "-p", "no:cacheprovider",
           str(paths.project_root() / "tests" / "guest")]
    with capsys.disabled():
        print("\n[vm] guest test session:", flush=True)
        # Multi-threaded TCG once ran a stale translation of patched kernel
        # code in this suite (vm.console); such a boot is void, not failed.
        res = runner.run(cmd, topology=Topology(cpus=4, numa_nodes=2), timeout_s=1800,
                         env={"AIOS_LAB_REQUIRE_GUEST": "1"}, stream=sys.stdout, emulator_fault_retries=2)
        for fault in res.emulator_faults:
            print(f"[vm] booted again after: {fault}", flush=True)
    assert res.returncode == 0, res.output[-3000:]
    tail = res.output.strip().splitlines()[-1]
    assert "passed" in tail and "skipped" not in tail and "failed" not in tail, tail
    assert res.report.oopses == [] and res.report.panic is None
    # The platform the suite ran on: multi-threaded TCG on the pinned QEMU
    # wherever KVM does not work (the stability cycles in it included).
    if res.accel == "tcg":
        assert res.tcg == "multi" and res.qemu["pinned"], (res.tcg, res.qemu)
    # the kernel logged each ejection the guest tests provoked
    assert any("runnable task stall" in ln for ln in res.report.sched_ext), res.report.sched_ext


def test_exit_code_and_both_streams_come_back():
    res = runner.run("echo out-line; echo err-line >&2; grep -c . /sys/kernel/sched_ext/state; exit 3",
                     topology=Topology(cpus=2), timeout_s=300)
    assert res.returncode == 3
    assert "out-line" in res.output and "err-line" in res.output
    assert res.boot_to_command_s is not None and res.boot_to_command_s > 0
    assert res.kernel["release"]
    d = res.describe()
    assert d["qemu"]["version"] and d["accel"] in ("kvm", "tcg")
    assert (d["tcg"] in ("multi", "single")) == (d["accel"] == "tcg")


def test_single_threaded_tcg_is_an_explicit_option_and_is_recorded():
    from aios_lab.vm.qemu import TcgMode

    res = runner.run('nproc; echo "$AIOS_LAB_VM_PLATFORM"', topology=Topology(cpus=2), timeout_s=300,
                     tcg=TcgMode.SINGLE)
    lines = res.output.strip().splitlines()
    assert res.returncode == 0 and lines[-2] == "2"
    # What results written in the guest record (bench.run._platform).
    platform = json.loads(lines[-1])
    assert platform["accel"] == res.accel and platform["qemu"] == res.qemu["version"]
    if res.accel == "tcg":
        assert res.tcg == "single" and res.describe()["tcg"] == "single" and platform["tcg"] == "single"
    assert not res.report.failed


def test_guest_panic_is_reported_as_a_panic():
    with pytest.raises(GuestPanic, match="panic"):
        runner.run("echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger; sleep 60",
                   topology=Topology(cpus=2), timeout_s=300)


# The console lines of a real emulator fault (a CI guest suite, 2026-12-03):
# the trap's ip follows "66", not the int3 (cc) the CPU executed.
_STALE_INT3 = ["Oops: int3: 0000 [#1] SMP NOPTI",
               "RIP: 0010:sched_balance_update_blocked_averages+0x45/0x90",
               "Code: 03 1c ed e0 b0 3d b1 48 89 df e8 06 b3 ff ff 83 a3 a0 0f 00 00 03 48 89 df 48 89 c5 e8 44 "
               "17 ff ff 48 89 df e8 7c f8 ff ff 66 <90> 48 8d 7b 48 e8 71 12 e0 00 f7 c5 00 02 00 00"]


def test_an_emulator_fault_boots_again(tmp_path):
    """The guest writes a stale-int3 oops to the kernel log on its first boot
    only: the runner must read it from the console, boot again and return the
    second boot's result (an oops of any other kind is never retried:
    tests/vm/test_console.py tells them apart)."""
    marker = tmp_path / "booted-once"
    fake = "; ".join(f"echo '<2>{ln}' > /dev/kmsg" for ln in _STALE_INT3)
    cmd = f"if [ -e {marker} ]; then echo second-boot; else touch {marker}; {fake}; sleep 2; fi"
    res = runner.run(cmd, topology=Topology(cpus=2), timeout_s=300, rwdirs=[tmp_path],
                     emulator_fault_retries=1)
    assert res.returncode == 0 and "second-boot" in res.output
    assert len(res.emulator_faults) == 1 and "sched_balance_update_blocked_averages" in res.emulator_faults[0]
    assert not res.report.failed


def test_guest_that_never_finishes_is_reported_as_a_hang():
    with pytest.raises(GuestHang, match="while the command ran"):
        runner.run("sleep 3600", topology=Topology(cpus=2), timeout_s=90)


def _qemu_pids() -> set[int]:
    import os

    pids = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"qemu-system-x86_64") and any(b"vm-runs/" in a for a in argv):
                pids.add(int(d))
    return pids


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_a_killed_runner_leaves_no_guest_running(sig):
    """SIGTERM is caught (the poll loop's finally stops the guest); SIGKILL
    cannot be, and the runner's reaper stops it within a few seconds."""
    import signal
    import subprocess
    import time

    before = _qemu_pids()
    proc = subprocess.Popen([sys.executable, "-m", "aios_lab.cli", "vm", "run", "--", "sleep", "600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (_qemu_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    mine = _qemu_pids() - before
    assert mine, "QEMU never started"
    proc.send_signal(getattr(signal, sig))
    proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while (_qemu_pids() & mine) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not (_qemu_pids() & mine), f"QEMU {mine} outlived a {sig}ed runner"
