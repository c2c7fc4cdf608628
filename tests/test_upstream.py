"""Upstream baselines by name (the build itself, and running them, are
tested in the VM: tests/guest/test_upstream_guest.py)."""
from __future__ import annotations

import json

import pytest

from aios_lab import upstream
from aios_lab.errors import AiosError
from aios_lab.bench.spec import Baseline, SchedSpec, UpstreamScheduler


def test_upstream_names_parse_beside_eevdf_and_policies():
    assert SchedSpec.parse("scx_simple") == UpstreamScheduler("scx_simple")
    assert isinstance(SchedSpec.parse("eevdf"), Baseline) and SchedSpec.parse("fifo").policy == "fifo"
    assert upstream.SCHEDULERS["scx_central"] == "central"


def test_an_unbuilt_baseline_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_LAB_CACHE", str(tmp_path))
    assert upstream.built("7.3.4-1~bpo13+1") == {}
    with pytest.raises(AiosError, match="scx_simple is not built") as err:
        SchedSpec.parse("scx_simple").start(None)
    assert "aios-lab build --upstream" in err.value.one_line()


def test_built_lists_only_binaries_that_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_LAB_CACHE", str(tmp_path))
    root = tmp_path / "upstream" / "v1"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "scx_simple").write_text("")
    (root / "complete.json").write_text(json.dumps({"built": ["scx_simple", "scx_central"]}))
    assert upstream.built("v1") == {"scx_simple": root / "bin" / "scx_simple"}
