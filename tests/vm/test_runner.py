"""The runner's host-side knobs, without booting: QEMU's host priority."""
import os
import shutil
import subprocess

import pytest

from aios_lab.errors import VmError
from aios_lab.vm import runner


def test_nice_and_rt_come_from_arguments_or_environment(monkeypatch):
    monkeypatch.delenv("AIOS_LAB_VM_NICE", raising=False)
    monkeypatch.delenv("AIOS_LAB_VM_RT", raising=False)
    assert runner._host_nice(None) is None and runner._host_sched(None, False) is None
    monkeypatch.setenv("AIOS_LAB_VM_NICE", "5")
    assert runner._host_nice(None) == 5
    monkeypatch.setenv("AIOS_LAB_VM_NICE", "fast")
    with pytest.raises(VmError, match="AIOS_LAB_VM_NICE='fast'"):
        runner._host_nice(None)
    with pytest.raises(VmError, match="outside -20..19"):
        runner._host_nice(40)
    assert runner._host_rt(False, 2) is False
    if os.geteuid() == 0:
        monkeypatch.setenv("AIOS_LAB_VM_RT", "1")
        assert runner._host_rt(None, 1) is True


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("chrt"), reason="needs root and chrt")
def test_the_priority_reaches_the_process_qemu_would_be():
    """What a child started with _host_sched runs at, as the kernel reports it."""
    out = subprocess.run(["sh", "-c", "chrt -p $$; cat /proc/$$/stat"], capture_output=True, text=True,
                         preexec_fn=runner._host_sched(3, True), check=True).stdout
    assert "SCHED_RR" in out and "priority: 1" in out
    stat = out.strip().splitlines()[-1]
    nice = int(stat.rsplit(")", 1)[1].split()[16])
    assert nice == 3
