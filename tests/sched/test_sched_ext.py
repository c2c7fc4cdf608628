"""sched_ext sysfs reading and feature checks (host kernel; no sched_ext here)."""
from pathlib import Path

import pytest

from aios_lab.sched import sched_ext
from aios_lab.errors import KernelFeatureMissing, SchedulerBusy


def _sysfs(tmp_path: Path, state: str, ops: str | None = None) -> Path:
    root = tmp_path / "sched_ext"
    root.mkdir()
    for name, val in (("state", state), ("enable_seq", "3"), ("nr_rejected", "0"), ("switch_all", "1"),
                      ("hotplug_seq", "0")):
        (root / name).write_text(val + "\n")
    if ops:
        (root / "root").mkdir()
        (root / "root" / "ops").write_text(ops + "\n")
    return root


def test_read_state_from_a_sysfs_tree(tmp_path):
    st = sched_ext.read_state(_sysfs(tmp_path, "enabled", "fifo"))
    assert (st.state, st.ops, st.enable_seq, st.nr_rejected) == ("enabled", "fifo", 3, 0)


def test_another_scheduler_makes_us_refuse(tmp_path):
    with pytest.raises(SchedulerBusy, match="enabled with simple attached"):
        sched_ext.require_free(_sysfs(tmp_path, "enabled", "simple"))
    (tmp_path / "free").mkdir()
    sched_ext.require_free(_sysfs(tmp_path / "free", "disabled"))  # no exception


def test_missing_sched_ext_says_what_to_do(tmp_path):
    with pytest.raises(KernelFeatureMissing) as exc:
        sched_ext.require(tmp_path / "absent")
    assert "aios-lab vm run" in exc.value.one_line()


def test_exit_info_naming():
    info = sched_ext.ExitInfo(kind=1026, exit_cpu=1, exit_code=0, flags=0, reason="runnable task stall",
                              msg="x[1] failed to run for 2s")
    assert info.is_error and info.kind_name == "runnable task stall"
    assert info.one_line() == "runnable task stall (kind 1026): x[1] failed to run for 2s"


@pytest.mark.skipif(not sched_ext.VMLINUX_BTF.exists(), reason="kernel without BTF")
def test_kfunc_probe_reads_the_running_kernels_btf():
    sched_ext.require_kfuncs(["bpf_task_acquire"])  # present since 6.2
    if sched_ext.available():
        sched_ext.require_kfuncs(["scx_bpf_create_dsq"])
    else:
        with pytest.raises(KernelFeatureMissing, match="lacks kfunc.*scx_bpf_create_dsq"):
            sched_ext.require_kfuncs(["scx_bpf_create_dsq", "bpf_task_acquire"])
