"""CPU clusters shipped as data (dvfs/data/gs101.json) and their power model."""
from __future__ import annotations

import numpy as np
import pytest

from aios_lab.dvfs import platform
from aios_lab.dvfs.platform import PlatformError, load_cluster
from aios_lab.errors import AiosError

# cpucl0/1/2 in arch/arm64/boot/dts/exynos/google/gs101.dtsi
EXPECT = {
    "little": dict(core="cortex-a55", cpus=4, opps=11, lo=300000, hi=1803000, coeff=70),
    "mid": dict(core="cortex-a76", cpus=2, opps=14, lo=400000, hi=2253000, coeff=284),
    "big": dict(core="cortex-x1", cpus=2, opps=17, lo=500000, hi=2802000, coeff=650),
}


def test_gs101_is_a_known_platform():
    assert "gs101" in platform.platforms()


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_clusters_load_with_ascending_opps(name):
    c = load_cluster(f"gs101:{name}")
    e = EXPECT[name]
    assert (c.platform, c.name, c.core, c.nr_cpus, c.nr_opps) == ("gs101", name, e["core"], e["cpus"], e["opps"])
    assert (c.freqs_khz[0], c.max_khz, c.dyn_coeff) == (e["lo"], e["hi"], e["coeff"])
    f, v = np.array(c.freqs_khz), np.array(c.volts_uv)
    assert len(f) == len(v) == c.nr_opps
    assert np.all(np.diff(f) > 0), "frequencies ascending"
    assert np.all(np.diff(v) > 0), "a higher OPP needs a higher voltage"
    assert np.all((v >= 400_000) & (v <= 1_200_000))
    assert c.transition_latency_s == pytest.approx(500e-6)
    assert 0 < c.idle_min_residency_s < 0.01
    assert "gs101.dtsi" in c.source
    # perf scale: share of the top frequency on 0..1024, ascending, top exactly 1024
    assert c.perf[-1] == 1024 and np.all(np.diff(c.perf) > 0) and c.perf[0] > 0


def test_default_cluster_is_the_big_one():
    assert load_cluster().name == "big"


def test_dynamic_power_is_the_kernel_em_formula_by_hand():
    big = load_cluster("gs101:big")
    # top OPP: 650 x 1056.25 mV^2 x 2802 MHz / 1e6 = 2031958.957 uW
    assert (big.freqs_khz[-1], big.volts_uv[-1]) == (2802000, 1056250)
    assert big.dyn_w[-1] == pytest.approx(2031958.95703125e-6, rel=1e-12)
    little = load_cluster("gs101:little")
    # lowest OPP: 70 x 537.5^2 x 300 / 1e6 = 6067.03125 uW
    assert (little.freqs_khz[0], little.volts_uv[0]) == (300000, 537500)
    assert little.dyn_w[0] == pytest.approx(6067.03125e-6, rel=1e-12)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_dynamic_power_formula_every_opp(name):
    c = load_cluster(f"gs101:{name}")
    for i, (khz, uv) in enumerate(zip(c.freqs_khz, c.volts_uv)):
        uw = c.dyn_coeff * (uv / 1000) ** 2 * (khz / 1000) / 1e6
        assert c.dyn_w[i] == pytest.approx(uw / 1e6, rel=1e-12)
    # energy per unit of work (P / f ~ V^2) rises with the OPP
    assert np.all(np.diff(c.dyn_w / np.array(c.freqs_khz)) > 0)


def test_static_and_sleep_power():
    c = load_cluster("gs101:big")
    assert c.leak_share == 0.15
    assert c.static_w[-1] == pytest.approx(0.15 * c.dyn_w[-1])
    v = np.array(c.volts_uv, dtype=float)
    assert c.static_w[0] == pytest.approx(0.15 * c.dyn_w[-1] * (v[0] / v[-1]) ** 3)
    assert np.allclose(c.busy_w, c.dyn_w + c.static_w)
    assert np.allclose(c.sleep_w, 0.02 * c.static_w)
    assert np.all(c.sleep_w < c.static_w) and np.all(c.static_w < c.busy_w)
    assert c.describe()["busy_w_top"] == pytest.approx(round(1.15 * c.dyn_w[-1], 4))


def test_leak_share_zero_leaves_only_dynamic_power():
    c = load_cluster("gs101:big", leak_share=0.0)
    assert np.all(c.static_w == 0) and np.all(c.sleep_w == 0)
    assert np.array_equal(c.busy_w, c.dyn_w)


def test_nr_cpus_override():
    assert load_cluster("gs101:little", nr_cpus=2).nr_cpus == 2
    assert load_cluster("gs101:little").nr_cpus == 4


@pytest.mark.parametrize("spec,words", [
    ("nosuch:big", "unknown platform 'nosuch'"),
    ("gs101:huge", "no cluster 'huge'"),
    ("gs101", "no cluster ''"),
    (":big", "unknown platform ''"),
])
def test_unknown_platform_or_cluster(spec, words):
    with pytest.raises(PlatformError) as ei:
        load_cluster(spec)
    assert words in str(ei.value)
    assert isinstance(ei.value, AiosError)
    assert ei.value.hint.startswith("known: ")
    assert ("gs101" in ei.value.hint) or ("big" in ei.value.hint)


def test_opp_for_perf_is_lowest_at_or_above():
    c = load_cluster("gs101:big")
    perf = c.perf
    assert c.opp_for_perf(0) == 0
    assert c.opp_for_perf(-50) == 0
    assert c.opp_for_perf(1024) == c.nr_opps - 1
    assert c.opp_for_perf(5000) == c.nr_opps - 1
    for i in range(c.nr_opps):
        assert c.opp_for_perf(perf[i]) == i, i                 # exactly an OPP's perf: that OPP
        if i + 1 < c.nr_opps:
            assert c.opp_for_perf(perf[i] + 1e-3) == i + 1, i  # a hair above: the next
        if i:
            assert c.opp_for_perf(perf[i] - 1e-3) == i, i       # a hair below: still this one
    # against the definition, on a grid
    for p in np.linspace(0, 1024, 777):
        want = min(int(np.argmax(perf >= p - 1e-9)) if np.any(perf >= p - 1e-9) else c.nr_opps - 1,
                   c.nr_opps - 1)
        assert c.opp_for_perf(p) == want


def test_opp_for_perf_by_hand():
    c = load_cluster("gs101:big")
    # 375/1024 x 2802 MHz = 1026.1 MHz -> 1106 MHz is the lowest at or above, index 3
    assert c.freqs_khz[3] == 1106000 and c.opp_for_perf(375) == 3


def test_opp_for_khz_is_lowest_at_or_above():
    c = load_cluster("gs101:big")
    for i, f in enumerate(c.freqs_khz):
        assert c.opp_for_khz(f) == i
        assert c.opp_for_khz(f - 1) == i
        assert c.opp_for_khz(f + 1) == min(i + 1, c.nr_opps - 1)
    assert c.opp_for_khz(0) == 0
    assert c.opp_for_khz(1651000) == 7  # 1582 < 1651 <= 1745 MHz
    assert c.freqs_khz[7] == 1745000
    assert c.opp_for_khz(10_000_000) == c.nr_opps - 1


def test_describe():
    d = load_cluster("gs101:mid").describe()
    assert d["platform"] == "gs101" and d["cluster"] == "mid" and d["cpus"] == 2 and d["opps"] == 14
    assert (d["min_khz"], d["max_khz"], d["transition_latency_us"]) == (400000, 2253000, 500)
