"""The `build` workload: workloads/build/gen.py's tree and run.sh (unit tier, no root)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aios_lab import paths, workloads

BUILD = paths.project_root() / "workloads" / "build"


def _gen_module():
    spec = importlib.util.spec_from_file_location("aios_build_gen", BUILD / "gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _gen_module()


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _weights(d: Path) -> dict[str, float]:
    out = {}
    for p in sorted(d.glob("tu_*.c")):
        m = re.match(r"/\* tu_\d+\.c: weight ([0-9.]+),", p.read_text().splitlines()[0])
        assert m, p
        out[p.name] = float(m.group(1))
    return out


def test_same_arguments_give_the_same_bytes(tmp_path):
    # Through the CLI, as run.sh calls it, twice; plus the function once.
    for name in ("a", "b"):
        subprocess.run([sys.executable, str(BUILD / "gen.py"), "--out", str(tmp_path / name),
                        "--files", "12", "--scale", "0.5", "--seed", "7"], check=True)
    gen.generate(tmp_path / "c", files=12, scale=0.5, seed=7)
    a = _digest(tmp_path / "a")
    assert len(a) == 12 + 4  # units, main.c, common.h, units.h, Makefile
    assert a == _digest(tmp_path / "b") == _digest(tmp_path / "c")


def test_seed_and_scale_change_the_tree_and_files_only_add_units(tmp_path):
    gen.generate(tmp_path / "base", files=8, seed=1)
    gen.generate(tmp_path / "seed", files=8, seed=2)
    gen.generate(tmp_path / "big", files=8, seed=1, scale=2.0)
    gen.generate(tmp_path / "more", files=10, seed=1)
    base = _digest(tmp_path / "base")
    assert base["tu_000.c"] != _digest(tmp_path / "seed")["tu_000.c"]
    assert sum((tmp_path / "big").joinpath(n).stat().st_size for n in base if n.startswith("tu_")) > \
        1.5 * sum((tmp_path / "base").joinpath(n).stat().st_size for n in base if n.startswith("tu_"))
    more = _digest(tmp_path / "more")
    assert all(more[n] == h for n, h in base.items() if n.startswith("tu_"))


def test_files_differ_in_size_like_a_real_tree(tmp_path):
    gen.generate(tmp_path, files=96, seed=1)
    weights = _weights(tmp_path)
    assert len(weights) == 96 and all(1.0 <= w <= 5.0 for w in weights.values())
    assert max(weights.values()) / min(weights.values()) > 3.5
    sizes = sorted(p.stat().st_size for p in tmp_path.glob("tu_*.c"))
    assert sizes[-1] / sizes[0] >= 3, "the heaviest unit should be 3x+ the lightest"
    assert sizes[-10] / sizes[len(sizes) // 2] >= 1.5, "a heavy tail, not uniform sizes"
    lines = sorted(len(p.read_text().splitlines()) for p in tmp_path.glob("tu_*.c"))
    assert 150 <= lines[len(lines) // 2] <= 500  # a few hundred lines each


def test_bad_arguments_are_refused(tmp_path):
    for kw in ({"files": 0}, {"scale": 0.0}, {"scale": -1.0}):
        with pytest.raises(ValueError):
            gen.generate(tmp_path, **kw)
    assert gen.main(["--out", str(tmp_path), "--files", "0"]) == 2


needs_toolchain = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("make")),
                                     reason="the build workload needs gcc and make")


@needs_toolchain
def test_tiny_tree_builds_warning_free_and_runs(tmp_path):
    gen.generate(tmp_path, files=6, scale=0.2, seed=1)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(["make", "-s", "-j2", "CFLAGS=-O2 -Wall -Werror"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert len(list(tmp_path.glob("*.o"))) == 7
    run = subprocess.run([str(tmp_path / gen.PROGRAM)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and re.fullmatch(r"[0-9a-f]{16}\n", run.stdout)


@needs_toolchain
def test_run_sh_generates_once_then_builds_silently(tmp_path):
    work = tmp_path / "tree"
    base = ["sh", str(BUILD / "run.sh")]
    args = ["--files", "6", "--scale", "0.2", "--workdir", str(work)]
    gen_out = subprocess.run(base + ["gen", *args], capture_output=True, text=True, timeout=120)
    assert gen_out.returncode == 0, gen_out.stderr
    assert gen_out.stdout.strip() == str(work)
    stamp = (work / ".aios-build-stamp").read_text()
    tu = (work / "tu_000.c").stat().st_mtime_ns
    proc = subprocess.run(base + ["-j", "2", *args], capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert (work / gen.PROGRAM).exists()
    assert (work / "tu_000.c").stat().st_mtime_ns == tu and (work / ".aios-build-stamp").read_text() == stamp
    # Other arguments: the stale tree is regenerated in place.
    proc = subprocess.run(base + ["-j", "2", "--files", "3", "--scale", "0.2", "--workdir", str(work)],
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert sorted(p.name for p in work.glob("tu_*.c")) == ["tu_000.c", "tu_001.c", "tu_002.c"]


def test_run_sh_refuses_bad_input(tmp_path):
    run_sh = ["sh", str(BUILD / "run.sh")]
    (tmp_path / "precious").write_text("x")
    proc = subprocess.run(run_sh + ["--workdir", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "refusing" in proc.stderr
    assert (tmp_path / "precious").read_text() == "x"
    for bad in (["--files", "x"], ["--scale", "1.2.3"], ["-j", "0"], ["--bogus"]):
        proc = subprocess.run(run_sh + bad + ["--workdir", str(tmp_path / "w")], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.startswith("run.sh: "), bad


def test_workload_definition_is_discovered():
    wl = workloads.get("build")
    assert wl.requires == ["make", "gcc"] and wl.timeout_s >= 300
    assert "workloads/build/run.sh" in wl.command
