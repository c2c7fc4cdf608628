"""The built wheel works outside the checkout: installed into a fresh virtual
environment, run from another directory, it lists its policies, analyses a
trace and exports it to Perfetto (unit tier) and collects one with its own
BPF objects, compiled ahead of time and carried in the wheel (bpf tier).

The fresh environment gets the wheel itself through pip (entry point, data,
objects), with `--no-deps`: its dependencies come from this checkout's
environment through a .pth file, because installing numpy, pyarrow, scipy
and the rest from the registry takes over a minute (that full install is
measured in benchmarks/RESULTS.md, issue 19). The extras (vm, learn,
report) are blocked there: collect, analyze, export and policy list must
not need them.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

EXTRAS = ("sklearn", "gymnasium", "matplotlib", "virtme_ng", "virtme")


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    if not list((REPO / "build" / "bpf").glob("*.bpf.o")):
        pytest.skip("no BPF objects in build/: run `make build` first")
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(dist)], check=True, cwd=base)
    whl = next(dist.glob("aios_lab-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "-q", str(whl)], check=True)
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # Dependencies from this environment, but not the checkout (an editable
    # install's finder) and not the extras.
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    (purelib / "zz_block_extras.pth").write_text(
        "import sys; sys.modules.update(dict.fromkeys(%r)); "
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]\n"
        % (EXTRAS,))
    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_LAB_", "PYTHON"))}
    return whl, venv, work, env


def run(wheel_env, *args, check=True):
    _, venv, work, env = wheel_env
    proc = subprocess.run([str(venv / "bin" / "aios-lab"), *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_the_wheel_carries_objects_policies_workloads_and_the_kernel_pin(wheel_env):
    whl = wheel_env[0]
    names = set(zipfile.ZipFile(whl).namelist())
    data = "aios_lab/_data/"
    for policy in ("fifo", "mllb", "freq"):
        assert f"{data}policies/{policy}/manifest.toml" in names
        assert f"{data}policies/{policy}/{policy}.bpf.c" in names
        assert f"{data}build/policies/{policy}/{policy}.bpf.o" in names
    assert f"{data}build/bpf/telemetry.bpf.o" in names and f"{data}bpf/include/aios/scx.bpf.h" in names
    assert f"{data}vm/kernel.json" in names and f"{data}workloads/hackbench.toml" in names
    assert not any(n.startswith(f"{data}build/tests/") for n in names)


def test_policy_list_analyze_and_export_outside_the_checkout(wheel_env, tmp_path):
    _, venv, work, _ = wheel_env
    where = run(wheel_env, "policy", "list", "--json")
    assert '"fifo"' in where.stdout and '"built": true' in where.stdout
    from tests.helpers.traces import schedule_trace

    trace = schedule_trace(tmp_path / "t")
    out = run(wheel_env, "analyze", str(trace))
    assert "context switches: 12" in out.stdout
    run(wheel_env, "export", "perfetto", str(trace), "-o", str(tmp_path / "t.pftrace"))
    assert (tmp_path / "t.pftrace").stat().st_size > 0
    # Which tree it used: the wheel's own copy, not this checkout.
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "from aios_lab import paths; print(paths.project_root())"],
                           cwd=work, env=wheel_env[3], capture_output=True, text=True, check=True)
    assert probe.stdout.strip().endswith("aios_lab/_data") and str(REPO) not in probe.stdout
    # Model limits come from the wheel's stripped object, whose BTF survives the strip.
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "from aios_lab.mllb import limits as l; print(l.object_path(), l.limits().max_nodes)"],
                           cwd=work, env=wheel_env[3], capture_output=True, text=True, check=True)
    assert "aios_lab/_data/build/policies/mllb/mllb.bpf.o 511" in probe.stdout
    # A report needs matplotlib (the `report` extra): one line that names it.
    res = run(wheel_env, "analyze", str(trace), "--report", str(tmp_path / "r.html"), check=False)
    assert res.returncode != 0 and "pip install 'aios-lab[report]'" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


@pytest.mark.bpf
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_collect_from_the_wheel(wheel_env):
    run(wheel_env, "collect", "--interval", "0.1", "--out", "t", "--", "sleep", "0.5")
    work = wheel_env[2]
    assert (work / "t" / "metadata.json").exists()
    out = run(wheel_env, "analyze", "t")
    assert "context switches" in out.stdout
