
import pytest

from aios_lab.errors import KernelFeatureMissing
from aios_lab.vm.kernel import KernelPin, _version_key, check_config, parse_config

CONFIG = """CONFIG_SCHED_CLASS_EXT=y
CONFIG_DEBUG_INFO_BTF=y
# CONFIG_CPU_FREQ is not set
CONFIG_9P_FS=m
"""


def test_parse_config():
    cfg = parse_config(CONFIG)
    assert cfg["CONFIG_SCHED_CLASS_EXT"] == "y" and cfg["CONFIG_9P_FS"] == "m" and cfg["CONFIG_CPU_FREQ"] == "n"


def test_kernel_without_sched_ext_is_refused_clearly():
    cfg = parse_config(CONFIG.replace("CONFIG_SCHED_CLASS_EXT=y", "# CONFIG_SCHED_CLASS_EXT is not set"))
    with pytest.raises(KernelFeatureMissing, match="CONFIG_SCHED_CLASS_EXT=n"):
        check_config(cfg, {"CONFIG_SCHED_CLASS_EXT": ["y"]}, "6.12.117+deb13-amd64")
    check_config(parse_config(CONFIG), {"CONFIG_SCHED_CLASS_EXT": ["y"], "CONFIG_9P_FS": ["y", "m"]}, "x")


def test_versions_sort_numerically():
    rels = ["7.2.9+deb13-amd64", "7.3.4+deb13-amd64", "7.2.12+deb13-amd64", "7.10.1+deb13-amd64"]
    assert sorted(rels, key=_version_key, reverse=True)[:2] == ["7.10.1+deb13-amd64", "7.3.4+deb13-amd64"]


def test_the_pin_is_complete_and_requires_sched_ext():
    pin = KernelPin.load()
    assert pin.release.startswith(pin.version.split("-")[0])
    assert pin.required_config["CONFIG_SCHED_CLASS_EXT"] == ["y"]
    for pkg in ("linux-base", "linux-binary", "linux-modules"):
        assert len(pin.sha256[f"{pkg}-{pin.release}"]) == 64
