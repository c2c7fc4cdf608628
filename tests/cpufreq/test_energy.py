"""RAPL through powercap: zones, joules since start, wrap-around, root-only counters, absence."""
import pytest

from aios_lab.cpufreq.energy import EnergyMeter, delta_uj, find_zones, zones_status
from aios_lab.errors import EnergyError, EnergyUnavailable, PrivilegeError

from tests.helpers.cpufreq_trees import RAPL_MAX_RANGE_UJ, make_unreadable, rapl_tree, set_energy


@pytest.fixture
def rapl(tmp_path):
    rapl_tree(tmp_path, {"package-0": 10_000_000, "core": 4_000_000, "uncore": 500, "dram": 2_000_000})
    return tmp_path


def test_zones_are_found_with_unique_labels(rapl):
    zones = find_zones(rapl)
    assert [z.zone for z in zones] == ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:0:2"]
    assert [z.label for z in zones] == ["package-0", "package-0/core", "package-0/uncore", "package-0/dram"]
    assert all(z.max_energy_range_uj == RAPL_MAX_RANGE_UJ for z in zones)
    assert zones[0].read_energy_uj() == 10_000_000


def test_meter_reports_joules_since_start_per_zone(rapl):
    m = EnergyMeter(rapl).start()
    assert m.sample() == {"package-0": 0.0, "package-0/core": 0.0, "package-0/uncore": 0.0, "package-0/dram": 0.0}
    set_energy(rapl, "intel-rapl:0", 12_500_000)
    set_energy(rapl, "intel-rapl:0:0", 5_000_000)
    set_energy(rapl, "intel-rapl:0:2", 2_250_000)
    j = m.sample()
    assert j["package-0"] == pytest.approx(2.5) and j["package-0/core"] == pytest.approx(1.0)
    assert j["package-0/dram"] == pytest.approx(0.25) and j["package-0/uncore"] == 0.0
    set_energy(rapl, "intel-rapl:0", 13_000_000)
    assert m.sample()["package-0"] == pytest.approx(3.0)
    assert m.joules()["package-0"] == pytest.approx(3.0)  # no new reading


def test_wrap_around_is_folded_in(rapl):
    set_energy(rapl, "intel-rapl:0", RAPL_MAX_RANGE_UJ - 1_000_000)
    m = EnergyMeter(rapl).start()
    set_energy(rapl, "intel-rapl:0", 500_000)  # wrapped: 1 J to the top, then 0.5 J
    assert m.sample()["package-0"] == pytest.approx(1.5)
    assert m.wraps["package-0"] == 1 and m.wraps["package-0/core"] == 0
    set_energy(rapl, "intel-rapl:0", 2_500_000)
    assert m.sample()["package-0"] == pytest.approx(3.5)
    assert m.wraps["package-0"] == 1


def test_delta_across_a_wrap():
    assert delta_uj(100, 350, 1000) == 250
    assert delta_uj(900, 50, 1000) == 150
    assert delta_uj(7, 7, 1000) == 0
    with pytest.raises(EnergyError, match="went backwards"):
        delta_uj(900, 50, 0)


def test_root_only_counter_raises_privilege_error(rapl):
    make_unreadable(rapl / "sys/class/powercap/intel-rapl:0:0/energy_uj")
    zones = find_zones(rapl)  # max_energy_range_uj stays world-readable: discovery works
    with pytest.raises(PrivilegeError) as ei:
        EnergyMeter(rapl, zones).start()
    line = ei.value.one_line()
    assert "reading RAPL energy counters" in line and "intel-rapl:0:0/energy_uj" in line
    assert "needs root" in line and "CVE-2020-8694" in line and "sudo" in line and "\n" not in line
    st = zones_status(rapl)
    assert st["available"] is True
    rows = {z["label"]: z for z in st["zones"]}
    assert rows["package-0"]["energy_uj"] == 10_000_000
    assert rows["package-0/core"]["energy_uj"] is None and "needs root" in rows["package-0/core"]["error"]


@pytest.mark.parametrize("layout", ["absent", "no-rapl"])
def test_no_rapl_is_its_own_clear_error(tmp_path, layout):
    if layout == "no-rapl":  # powercap with another control type only (dtpm on an ARM board)
        (tmp_path / "sys/class/powercap/dtpm").mkdir(parents=True)
    with pytest.raises(EnergyUnavailable) as ei:
        find_zones(tmp_path)
    line = ei.value.one_line()
    assert line.startswith("no energy counters on this machine:") and "AMD" in line
    assert zones_status(tmp_path) == {"available": False, "error": line, "zones": []}


def test_mmio_zones_only_when_there_are_no_msr_zones(tmp_path):
    for zone, name in [("intel-rapl-mmio:0", "package-0")]:
        d = tmp_path / "sys/class/powercap" / zone
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text("42\n")
        (d / "max_energy_range_uj").write_text("1000\n")
    assert [z.zone for z in find_zones(tmp_path)] == ["intel-rapl-mmio:0"]
    rapl_tree(tmp_path)  # with MSR zones present the MMIO copy of the package is ignored
    assert "intel-rapl-mmio:0" not in [z.zone for z in find_zones(tmp_path)]


def test_garbage_counter_is_named(rapl):
    set_energy(rapl, "intel-rapl:0:2", "n/a")
    with pytest.raises(EnergyError, match=r"intel-rapl:0:2/energy_uj holds 'n/a', not an integer"):
        EnergyMeter(rapl).start()


def test_sample_before_start_is_refused(rapl):
    with pytest.raises(EnergyError, match="before start"):
        EnergyMeter(rapl).sample()


def test_the_real_host_is_read_or_reported_unavailable():
    st = zones_status("/")
    assert st["available"] is bool(st["zones"])
    if not st["available"]:
        assert st["error"].startswith("no energy counters on this machine")
