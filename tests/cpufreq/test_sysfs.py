"""cpufreq sysfs backend: both driver shapes, every write, every failure, and `freq status`."""
import errno
import json
import os

import pytest
from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.cpufreq import sysfs
from aios_lab.cpufreq.sysfs import Cpufreq, parse_cpu_list
from aios_lab.errors import CpufreqError, CpufreqPermissionError, CpufreqUnavailable, PrivilegeError

from tests.helpers.cpufreq_trees import (EPP_AVAILABLE, acpi_cpufreq_tree, attr, empty_cpufreq_tree, intel_pstate_tree,
                           make_read_only, rapl_tree, set_attr)


@pytest.fixture
def acpi(tmp_path):
    acpi_cpufreq_tree(tmp_path, ncpu=2)
    return tmp_path


@pytest.fixture
def pstate(tmp_path):
    intel_pstate_tree(tmp_path, ncpu=2)
    return tmp_path


# --------------------------------------------------------------------------- reading

def test_reads_acpi_cpufreq_with_its_frequency_table(acpi):
    pols = Cpufreq(acpi).policies()
    assert [p.name for p in pols] == ["policy0", "policy1"]
    p = pols[1]
    assert p.cpus == (1,) and p.related_cpus == (1,)
    assert p.driver == "acpi-cpufreq" and p.governor == "schedutil" and p.has_userspace
    assert p.available_khz == (1400000, 2100000, 2800000, 3500000, 3501000)  # sorted, turbo entry kept
    assert p.frequencies() == [1400000, 2100000, 2800000, 3500000, 3501000]
    assert (p.cpuinfo_min_khz, p.cpuinfo_max_khz, p.min_khz, p.max_khz, p.cur_khz) == \
        (1400000, 3501000, 1400000, 3501000, 2100000)
    assert p.setspeed_khz is None  # "<unsupported>" outside the userspace governor
    assert p.epp is None and p.epp_available is None


def test_reads_intel_pstate_without_a_table_and_derives_a_range(pstate):
    p = Cpufreq(pstate).policy("policy0")
    assert p.driver == "intel_pstate" and p.available_governors == ("performance", "powersave")
    assert not p.has_userspace and p.available_khz is None
    freqs = p.frequencies()
    assert freqs[0] == 800000 and freqs[-1] == 4700000 and len(freqs) == 40
    assert all(b - a == 100000 for a, b in zip(freqs, freqs[1:]))
    assert p.epp == "balance_performance" and p.epp_available == tuple(EPP_AVAILABLE.split())
    assert p.to_dict()["has_table"] is False


def test_policy_order_is_numeric_not_lexical(tmp_path):
    acpi_cpufreq_tree(tmp_path, ncpu=11)
    assert Cpufreq(tmp_path).policy_names()[-3:] == ["policy8", "policy9", "policy10"]


@pytest.mark.parametrize("layout", ["absent", "empty"])
def test_no_cpufreq_is_its_own_clear_error(tmp_path, layout):
    if layout == "empty":
        empty_cpufreq_tree(tmp_path)  # CONFIG_CPU_FREQ=y, no driver: what this CI host shows
    cf = Cpufreq(tmp_path)
    assert not cf.available()
    with pytest.raises(CpufreqUnavailable) as ei:
        cf.policies()
    line = ei.value.one_line()
    assert line.startswith("no cpufreq driver on this machine (as in every QEMU guest)")
    assert "\n" not in line and "real host" in line


def test_the_real_host_is_read_or_reported_unavailable():
    cf = Cpufreq("/")
    try:
        pols = cf.policies()
    except CpufreqUnavailable:
        assert not cf.available()
    else:
        assert pols and all(p.cpuinfo_max_khz >= p.cpuinfo_min_khz > 0 for p in pols)


def test_parse_cpu_list_takes_both_kernel_formats():
    assert parse_cpu_list("0 1 2 3") == (0, 1, 2, 3)
    assert parse_cpu_list("0-2,8,10-11") == (0, 1, 2, 8, 10, 11)
    assert parse_cpu_list("") == ()


# --------------------------------------------------------------------------- writing

def test_governor_and_speed_writes_land_in_the_files(acpi):
    cf = Cpufreq(acpi)
    cf.set_governor("policy0", "userspace")
    cf.set_speed("policy0", 2800000)
    assert attr(acpi, "policy0", "scaling_governor") == "userspace"
    assert attr(acpi, "policy0", "scaling_setspeed") == "2800000"
    assert attr(acpi, "policy1", "scaling_governor") == "schedutil"  # the other policy untouched
    assert cf.policy("policy0").setspeed_khz == 2800000


def test_setspeed_needs_the_userspace_governor(acpi):
    with pytest.raises(CpufreqError, match="runs the schedutil governor: scaling_setspeed works only under userspace"):
        Cpufreq(acpi).set_speed("policy0", 2800000)
    assert attr(acpi, "policy0", "scaling_setspeed") == "<unsupported>"


def test_a_governor_the_driver_lacks_is_refused_with_what_it_has(pstate):
    with pytest.raises(CpufreqError) as ei:
        Cpufreq(pstate).set_governor("policy0", "userspace")
    line = ei.value.one_line()
    assert "policy0 has no 'userspace' governor (driver intel_pstate; available: performance powersave)" in line
    assert "pin a frequency with min/max" in line
    assert attr(pstate, "policy0", "scaling_governor") == "powersave"


def test_pin_on_intel_pstate_writes_min_and_max(pstate):
    Cpufreq(pstate).pin("policy1", 2400000)
    assert attr(pstate, "policy1", "scaling_min_freq") == "2400000"
    assert attr(pstate, "policy1", "scaling_max_freq") == "2400000"
    assert attr(pstate, "policy0", "scaling_max_freq") == "4700000"


@pytest.mark.parametrize("start,new,order", [
    ((800000, 1000000), (2000000, 2000000), ["scaling_max_freq", "scaling_min_freq"]),  # going up: max first
    ((3000000, 4700000), (1000000, 1000000), ["scaling_min_freq", "scaling_max_freq"]),  # going down: min first
])
def test_limits_are_written_without_min_above_max_on_the_way(pstate, monkeypatch, start, new, order):
    set_attr(pstate, "policy0", "scaling_min_freq", start[0])
    set_attr(pstate, "policy0", "scaling_max_freq", start[1])
    cf = Cpufreq(pstate)
    seen = []
    real = cf.write

    def spy(policy, name, value):
        seen.append(name)
        lo = int(attr(pstate, policy, "scaling_min_freq"))
        hi = int(attr(pstate, policy, "scaling_max_freq"))
        if name == "scaling_min_freq":
            assert int(value) <= hi, "min written above the current max"
        else:
            assert int(value) >= lo, "max written below the current min"
        real(policy, name, value)

    monkeypatch.setattr(cf, "write", spy)
    cf.set_limits("policy0", *new)
    assert seen == order
    assert (attr(pstate, "policy0", "scaling_min_freq"), attr(pstate, "policy0", "scaling_max_freq")) == \
        tuple(str(v) for v in new)


def test_min_above_max_is_refused_before_writing(pstate):
    with pytest.raises(CpufreqError, match="min 3000000 kHz is above max 2000000 kHz"):
        Cpufreq(pstate).set_limits("policy0", 3000000, 2000000)
    assert attr(pstate, "policy0", "scaling_min_freq") == "800000"


def test_epp_is_written_and_checked(pstate, tmp_path):
    cf = Cpufreq(pstate)
    cf.set_epp("policy0", "power")
    assert attr(pstate, "policy0", "energy_performance_preference") == "power"
    cf.set_epp("policy0", "128")  # intel_pstate takes a raw 0..255 too
    assert attr(pstate, "policy0", "energy_performance_preference") == "128"
    with pytest.raises(CpufreqError, match="EPP 'turbo' is not one of"):
        cf.set_epp("policy0", "turbo")
    acpi = tmp_path / "acpi"
    acpi_cpufreq_tree(acpi)
    with pytest.raises(CpufreqError, match="policy0 has no energy_performance_preference .driver acpi-cpufreq"):
        Cpufreq(acpi).set_epp("policy0", "power")


# --------------------------------------------------------------------------- failures

def test_read_only_attribute_is_a_clear_error_even_for_root(acpi, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    make_read_only(acpi / sysfs.CPUFREQ_REL / "policy0/scaling_governor")
    with pytest.raises(CpufreqError) as ei:
        Cpufreq(acpi).set_governor("policy0", "userspace")
    assert not isinstance(ei.value, CpufreqPermissionError)
    line = ei.value.one_line()
    assert line.startswith("policy0/scaling_governor is read-only: the kernel refuses writes to it even from root")
    assert "\n" not in line


def test_permission_denied_for_a_user_asks_for_root(acpi, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    make_read_only(acpi / sysfs.CPUFREQ_REL / "policy0/scaling_governor")
    with pytest.raises(CpufreqPermissionError) as ei:
        Cpufreq(acpi).set_governor("policy0", "userspace")
    assert isinstance(ei.value, PrivilegeError)
    assert "writing policy0/scaling_governor needs root" in ei.value.one_line()
    assert "sudo" in ei.value.one_line()


def test_missing_attribute_is_a_clear_error(acpi):
    (acpi / sysfs.CPUFREQ_REL / "policy0/scaling_setspeed").unlink()
    cf = Cpufreq(acpi)
    cf.set_governor("policy0", "userspace")
    with pytest.raises(CpufreqError, match=r"policy0/scaling_setspeed does not exist"):
        cf.set_speed("policy0", 2100000)
    assert cf.policy("policy0").setspeed_khz is None  # optional when reading


def test_missing_required_attribute_when_reading(acpi):
    (acpi / sysfs.CPUFREQ_REL / "policy1/scaling_driver").unlink()
    with pytest.raises(CpufreqError, match=r"policy1/scaling_driver does not exist"):
        Cpufreq(acpi).policies()


def test_garbage_frequency_is_named(acpi):
    set_attr(acpi, "policy0", "scaling_max_freq", "fast")
    with pytest.raises(CpufreqError, match="policy0/scaling_max_freq holds 'fast', not a frequency in kHz"):
        Cpufreq(acpi).policy("policy0")


@pytest.mark.parametrize("code,expect", [
    (errno.EINVAL, "the kernel rejected '1234' for policy0/scaling_setspeed (EINVAL)"),
    (errno.EBUSY, "the kernel refused '1234' for policy0/scaling_setspeed for now (EBUSY)"),
    (errno.EROFS, "cannot write policy0/scaling_setspeed: sysfs is mounted read-only"),
    (errno.EIO, "writing policy0/scaling_setspeed failed: Input/output error (errno 5)"),
])
def test_kernel_rejections_become_one_line(acpi, monkeypatch, code, expect):
    # A tmp file accepts any value; the kernel's answers are injected at the syscall.
    def refuse(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(sysfs.os, "write", refuse)
    with pytest.raises(CpufreqError) as ei:
        Cpufreq(acpi).write("policy0", "scaling_setspeed", 1234)
    assert expect in ei.value.one_line() and "\n" not in ei.value.one_line()


def test_inactive_policy_is_skipped(acpi, monkeypatch):
    # All CPUs of a policy offline: the kernel answers EBUSY to every read of it.
    cf = Cpufreq(acpi)
    real = sysfs.Path.read_text

    def read_text(self, *a, **k):
        if "policy1" in str(self):
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real(self, *a, **k)

    monkeypatch.setattr(sysfs.Path, "read_text", read_text)
    assert [p.name for p in cf.policies()] == ["policy0"]
    with pytest.raises(CpufreqError, match="policy1 is inactive: all its CPUs are offline"):
        cf.policy("policy1")


# --------------------------------------------------------------------------- freq status

@pytest.fixture(autouse=True)
def _private_state_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_LAB_FREQ_STATE", str(tmp_path / "no-governor.json"))


def test_freq_status_on_acpi_cpufreq(acpi):
    res = CliRunner().invoke(main, ["freq", "status", "--root", str(acpi)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "policy0: cpus 0  driver acpi-cpufreq  governor schedutil" in out
    assert "governors: conservative ondemand userspace powersave performance schedutil" in out
    assert "frequencies: 1400000 2100000 2800000 3500000 3501000 kHz" in out
    assert "hardware 1400000..3501000 kHz  min 1400000  max 3501000  cur 2100000  setspeed -" in out
    assert "epp" not in out
    assert "energy: no energy counters on this machine" in out


def test_freq_status_on_intel_pstate_with_rapl(pstate):
    rapl_tree(pstate, {"package-0": 5_000_000})
    res = CliRunner().invoke(main, ["freq", "status", "--root", str(pstate)])
    assert res.exit_code == 0, res.output
    assert "frequencies: no table (intel_pstate): 800000..4700000 kHz" in res.output
    assert f"epp: balance_performance (available: {EPP_AVAILABLE})" in res.output
    assert "energy (RAPL via powercap):" in res.output
    assert "package-0/dram" in res.output and "5.000000 J" in res.output


def test_freq_status_json(pstate):
    res = CliRunner().invoke(main, ["freq", "status", "--root", str(pstate), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["cpufreq"]["available"] is True
    pol = d["cpufreq"]["policies"][1]
    assert pol["name"] == "policy1" and pol["driver"] == "intel_pstate" and pol["max_khz"] == 4700000
    assert pol["available_khz"] is None and pol["epp"] == "balance_performance"
    assert d["energy"]["available"] is False and d["governor"] is None


@pytest.mark.parametrize("layout", ["absent", "empty"])
def test_freq_status_without_cpufreq_says_so_plainly(tmp_path, layout):
    if layout == "empty":
        empty_cpufreq_tree(tmp_path)
    res = CliRunner().invoke(main, ["freq", "status", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("no cpufreq driver on this machine (as in every QEMU guest): ")
    assert lines[1].startswith("energy: no energy counters on this machine")
    d = json.loads(CliRunner().invoke(main, ["freq", "status", "--root", str(tmp_path), "--json"]).output)
    assert d["cpufreq"]["available"] is False and d["cpufreq"]["policies"] == []
