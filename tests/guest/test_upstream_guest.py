"""The kernel's own example schedulers as baselines, for real (pytest -m
guest, in the VM): built by `aios-lab build --upstream` (make build) from the
pinned kernel's source package, run by bench-schedulers beside EEVDF."""
import json
import subprocess
import sys

import pytest

from aios_lab import upstream

from .conftest import ROOT, scx_state

pytestmark = pytest.mark.guest


def test_scx_simple_and_scx_central_run_as_baselines_beside_eevdf(tmp_path):
    built = upstream.built()
    assert {"scx_simple", "scx_central"} <= set(built), f"built: {sorted(built)} (run make build)"
    res = subprocess.run([sys.executable, "-m", "aios_lab.cli", "bench-schedulers", "--workload", "cpu-spin",
                          "--policies", "eevdf,scx_simple,scx_central", "--repeat", "1", "--json", "--no-control",
                          "--trace-dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    runs = {r["scheduler"]: r for r in out["runs"]}
    assert set(runs) == {"eevdf", "scx_simple", "scx_central"}
    # scx_central reads CONFIG_PREEMPT_RCU through a __kconfig extern: it loads only
    # because the guest script puts the kernel's config where libbpf looks.
    for name in ("scx_simple", "scx_central"):
        assert runs[name]["makespan_s"] > 0 and runs[name]["load_s"] is not None, runs[name]
        assert out["summary"][name]["makespan_ratio_vs_eevdf"] > 0
    assert scx_state()[0] == "disabled"
    # Their traces compare by name like any other scheduler's.
    cmp = subprocess.run([sys.executable, "-m", "aios_lab.cli", "compare", "--json",
                          *sorted(str(p) for p in tmp_path.iterdir())],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert cmp.returncode == 0, cmp.stderr
    assert set(json.loads(cmp.stdout)["labels"]) == {"cpu-spin-eevdf", "cpu-spin-scx_simple",
                                                             "cpu-spin-scx_central"}
