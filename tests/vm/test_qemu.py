"""The pinned QEMU: pin file, version choice, refused downloads, TCG mode."""
import json
import shutil
from pathlib import Path

import pytest

from aios_lab.debfetch import DebPackage
from aios_lab.errors import QemuFetchError, VmError
from aios_lab.vm import qemu as q
from aios_lab.vm.qemu import Qemu, QemuPin, TcgMode, choose, parse_version, select_tcg


def _pkg(version):
    return DebPackage("qemu-system-x86", version, f"pool/q/qemu_{version}.deb", "0" * 64, 1)


def test_the_pin_is_complete_and_at_least_qemu_10():
    pin = QemuPin.load()
    assert pin.min_version >= (10, 0)
    assert q._debian_upstream(pin.version) >= pin.min_version
    assert set(pin.packages) == set(pin.sha256)
    assert all(len(h) == 64 for h in pin.sha256.values())


def test_an_unreadable_pin_is_one_line(tmp_path):
    bad = tmp_path / "qemu.json"
    bad.write_text('{"suite": "x"}')
    with pytest.raises(QemuFetchError, match="unreadable QEMU pin"):
        QemuPin.load(bad)


def test_versions_parse_from_debian_and_qemu_text():
    assert parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)") == (10, 0, 2)
    assert q._debian_upstream("1:10.0.2+ds-2+deb13u1~bpo12+1") == (10, 0, 2)
    assert q._debian_upstream("1:7.2+dfsg-7+deb12u18") == (7, 2)


def test_pinned_version_is_taken_when_the_suite_has_it():
    pin = QemuPin.load()
    logs = []
    pkg, pinned = choose(pin, _pkg(pin.version), None, logs.append)
    assert pinned and pkg.version == pin.version and not logs


def test_gone_pin_falls_back_loudly_to_a_new_enough_candidate():
    pin = QemuPin.load()
    logs = []
    pkg, pinned = choose(pin, None, _pkg("1:10.1.0+ds-1~bpo12+1"), logs.append)
    assert not pinned and pkg.version == "1:10.1.0+ds-1~bpo12+1"
    assert len(logs) == 1 and "WARNING" in logs[0] and "no longer" in logs[0] and "vm/qemu.json" in logs[0]


def test_gone_pin_with_an_old_candidate_is_refused():
    pin = QemuPin.load()
    with pytest.raises(QemuFetchError, match="older than 10.0"):
        choose(pin, None, _pkg("1:7.2+dfsg-7+deb12u18"), print)
    with pytest.raises(QemuFetchError, match="candidate \\(none\\)"):
        choose(pin, None, None, print)


def test_tcg_is_multi_threaded_on_qemu_10_and_single_is_explicit(monkeypatch):
    monkeypatch.delenv("AIOS_LAB_TCG", raising=False)
    q10 = Qemu(Path("/x"), (10, 0, 2), "pinned")
    assert select_tcg(q10)[0] is TcgMode.MULTI
    assert select_tcg(q10, TcgMode.SINGLE)[0] is TcgMode.SINGLE
    monkeypatch.setenv("AIOS_LAB_TCG", "single")
    mode, why = select_tcg(q10)
    assert mode is TcgMode.SINGLE and "AIOS_LAB_TCG" in why
    monkeypatch.setenv("AIOS_LAB_TCG", "both")
    with pytest.raises(VmError, match="AIOS_LAB_TCG='both'"):
        select_tcg(q10)
    assert TcgMode.MULTI.qemu_opt() == "-accel tcg,thread=multi"


def test_old_qemu_runs_single_threaded_and_refuses_multi(monkeypatch):
    monkeypatch.delenv("AIOS_LAB_TCG", raising=False)
    q72 = Qemu(Path("/usr/bin/qemu-system-x86_64"), (7, 2), "system")
    mode, why = select_tcg(q72)
    assert mode is TcgMode.SINGLE and "cannot change a makespan" in why
    with pytest.raises(VmError, match="oopses the guest"):
        select_tcg(q72, TcgMode.MULTI)


def test_unpacked_qemu_gets_its_own_data_and_module_dirs(tmp_path):
    qm = Qemu(tmp_path / q.BINARY, (10, 0, 2), "pinned", root=tmp_path, debian_version="1:10.0.2")
    assert qm.data_opts()[0] == f"-L {tmp_path / q.DATA_DIR}"
    assert qm.env() == {"QEMU_MODULE_DIR": str(tmp_path / q.MODULE_DIR)}
    d = qm.describe()
    assert d["version"] == "10.0.2" and d["pinned"] and d["source"] == "pinned"
    host = Qemu(Path("/usr/bin/qemu-system-x86_64"), (7, 2), "system")
    assert host.data_opts() == [] and host.env() == {}


def test_a_refused_download_is_one_clear_line(tmp_path, monkeypatch):
    """The archive refuses (a closed loopback port): with nothing cached,
    ensure_qemu fails in one line naming what to do; resolve_qemu falls back
    to the host's QEMU and says, loudly, that it cannot judge placement."""
    if not shutil.which("apt-get"):
        pytest.skip("needs apt")
    monkeypatch.setenv("AIOS_LAB_CACHE", str(tmp_path))
    monkeypatch.setenv("AIOS_LAB_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    with pytest.raises(QemuFetchError) as exc:
        q.ensure_qemu(log=lambda m: None)
    line = exc.value.one_line()
    assert "\n" not in line and "could be fetched" in line and "vm/qemu.json" in line
    assert not list((tmp_path / "qemu").glob("*")) if (tmp_path / "qemu").exists() else True
    host = q.system_qemu()
    if host is None:
        pytest.skip("no host QEMU to fall back to")
    logs = []
    got = q.resolve_qemu(log=logs.append)
    assert got.source == "system" and len(logs) == 1 and "Falling back" in logs[0]
    if not got.mttcg_safe:
        assert "single-threaded" in logs[0]


def test_a_cached_qemu_serves_when_the_archive_refuses(tmp_path, monkeypatch):
    """A QEMU unpacked earlier (not the pinned version) is used, loudly, when
    the pinned one cannot be fetched; a damaged cache entry is ignored."""
    if not shutil.which("apt-get"):
        pytest.skip("needs apt")
    monkeypatch.setenv("AIOS_LAB_CACHE", str(tmp_path))
    monkeypatch.setenv("AIOS_LAB_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    old = tmp_path / "qemu" / "1_10.0.0+ds-1"
    old.mkdir(parents=True)
    (old / "complete.json").write_text(json.dumps({"debian_version": "1:10.0.0+ds-1", "version": [10, 0, 0]}))
    broken = tmp_path / "qemu" / "broken"
    broken.mkdir()
    (broken / "complete.json").write_text("{not json")
    logs = []
    got = q.ensure_qemu(log=logs.append)
    assert got.source == "cached-fallback" and got.version == (10, 0, 0) and got.root == old
    assert len(logs) == 1 and "using cached QEMU 10.0.0" in logs[0]
