"""`aios-lab build`'s targets: a policy folder outside the tree, and a host
kernel's own BTF (this host's /sys/kernel/btf/vmlinux; its kernel has no
sched_ext, so the telemetry object stands in for the policies)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from aios_lab import build, paths
from aios_lab.cli import main

from tests.helpers import REPO

needs_toolchain = pytest.mark.skipif(
    not (shutil.which("clang-14") or shutil.which("clang")) or not shutil.which("bpftool")
    and not Path("/usr/sbin/bpftool").exists(), reason="needs clang and bpftool")


def _external_policy(tmp_path: Path) -> Path:
    """fifo copied out of the tree under another name."""
    ext = tmp_path / "mine" / "myfifo"
    shutil.copytree(REPO / "policies" / "fifo", ext)
    (ext / "fifo.bpf.c").rename(ext / "myfifo.bpf.c")
    manifest = (ext / "manifest.toml").read_text()
    manifest = manifest.replace('name = "fifo"', 'name = "myfifo"').replace(
        'source = "fifo.bpf.c"', 'source = "myfifo.bpf.c"')
    (ext / "manifest.toml").write_text(manifest)
    return ext


def test_an_external_policy_has_its_own_object_path(tmp_path, monkeypatch):
    ext = _external_policy(tmp_path)
    monkeypatch.setenv("AIOS_LAB_POLICY_PATH", str(ext.parent))
    obj = build.object_path(ext / "myfifo.bpf.c")
    assert obj.parent.parent == paths.build_dir() / "external" and obj.name == "myfifo.bpf.o"
    assert obj.parent.name.startswith("myfifo-")  # the folder, then a digest of its path
    assert (ext / "myfifo.bpf.c").resolve() in build.sources()
    res = CliRunner().invoke(main, ["policy", "list"])
    assert res.exit_code == 0 and "myfifo" in res.output, res.output


@needs_toolchain
def test_an_external_policy_builds(tmp_path, monkeypatch):
    if not (REPO / "build" / "vmlinux.h").exists():
        pytest.skip("no build/vmlinux.h: run `make build` first")
    ext = _external_policy(tmp_path)
    out = tmp_path / "build"
    out.mkdir()
    shutil.copy(REPO / "build" / "vmlinux.h", out / "vmlinux.h")
    monkeypatch.setenv("AIOS_LAB_BUILD", str(out))
    monkeypatch.setenv("AIOS_LAB_POLICY_PATH", str(ext.parent))
    obj = build.compile_bpf(ext / "myfifo.bpf.c", build.object_path(ext / "myfifo.bpf.c"))
    assert obj.is_file() and obj.is_relative_to(out / "external")
    res = CliRunner().invoke(main, ["policy", "list", "--json"])
    assert '"built": true' in res.output.split('"myfifo"')[1].split("}")[0], res.output


@needs_toolchain
def test_builds_against_a_host_kernels_own_btf(tmp_path, monkeypatch):
    if not build.HOST_BTF.is_file():
        pytest.skip("this kernel exposes no BTF")
    out = tmp_path / "build"
    monkeypatch.setenv("AIOS_LAB_BUILD", str(out))
    header = build.generate_vmlinux_h(build.HOST_BTF, out / "vmlinux.h", "host")
    assert "struct task_struct {" in header.read_text()
    src = REPO / "bpf" / "telemetry.bpf.c"
    obj = build.compile_bpf(src, build.object_path(src))
    assert obj.read_bytes()[:4] == b"\x7fELF"


def test_host_kernel_is_the_target_only_with_sched_ext(tmp_path, monkeypatch):
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"\x9f\xeb\x01\x00")
    monkeypatch.setattr(build, "HOST_BTF", btf)
    monkeypatch.setattr(build, "HOST_SCHED_EXT", tmp_path / "no-sched_ext")
    assert build.host_kernel() is None
    (tmp_path / "sched_ext").mkdir()
    monkeypatch.setattr(build, "HOST_SCHED_EXT", tmp_path / "sched_ext")
    assert build.host_kernel() is not None


def test_system_libbpf_version_from_its_header(tmp_path):
    h = tmp_path / "libbpf_version.h"
    h.write_text("#define LIBBPF_MAJOR_VERSION 1\n#define LIBBPF_MINOR_VERSION 4\n")
    assert build.system_libbpf_version(h) == (1, 4) >= build.MIN_LIBBPF
    assert build.system_libbpf_version(tmp_path / "missing.h") is None
