"""`aios-lab deploy freq` without a kernel: what is refused, and how, before
anything is loaded; what `status` prints for a live table. The policy
running for real is tests/guest/test_freq_guest.py."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from aios_lab.sched import policy
from aios_lab.cli import main
from aios_lab.sched.deploy_loop import DeployLoop
from aios_lab.dvfs.table import FreqTable, save_table
from aios_lab.errors import ModelError, PolicyError


@pytest.fixture
def table_file(tmp_path):
    return save_table(tmp_path / "t.json", FreqTable.constant(512))


def _one_line_error(res) -> str:
    assert res.exit_code != 0, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    return lines[-1]


def test_freq_is_discovered_as_a_freq_table_policy():
    freq = policy.get("freq")
    assert freq.kind == "sched_ext" and freq.struct_ops == "freq_ops"
    assert freq.model.kind == "freq-table" and freq.model.state_map == "cpu_state"
    assert freq.model.slots_map == "table" and freq.model.ctl_map == "table_ctl"
    assert set(freq.tunables) == {"slice_ns", "window_ns", "running_min_ns"}


@pytest.mark.parametrize("flags", [["--mode", "model"], ["--decisions", "d1"], ["--retrain-every", "5"]])
def test_tree_options_are_a_usage_error_for_freq(flags, table_file):
    res = CliRunner().invoke(main, ["deploy", "freq", "--model", str(table_file), *flags])
    assert res.exit_code == 2
    assert "deploys a frequency table" in res.output and "decision-tree policies (mllb)" in res.output


@pytest.mark.parametrize("args", [["deploy", "freq", "--watch"], ["deploy", "fifo", "--watch"]])
def test_watch_needs_a_table(args):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "--watch needs" in res.output


def test_a_bad_table_file_is_refused_in_one_line_before_any_load(tmp_path, monkeypatch):
    from aios_lab.sched import deployment

    def no_deploy(*a, **k):
        raise AssertionError("nothing may be loaded for a bad table")
    monkeypatch.setattr(deployment.Deployment, "start", no_deploy)
    bad = tmp_path / "bad.json"
    d = FreqTable.constant(512).to_dict()
    d["perf"][0][0] = 5000
    bad.write_text(json.dumps(d))
    res = CliRunner().invoke(main, ["deploy", "freq", "--model", str(bad), "--duration", "1"])
    assert res.exit_code == 3
    line = _one_line_error(res)
    assert line.startswith("Error: frequency table") and "outside the perf range" in line
    res = CliRunner().invoke(main, ["deploy", "freq", "--model", str(tmp_path / "missing.json")])
    assert res.exit_code == 3 and "does not exist" in _one_line_error(res)


def test_deploy_loop_refuses_what_does_not_apply(table_file):
    freq, fifo = policy.get("freq"), policy.get("fifo")
    with pytest.raises(PolicyError, match="retrain_every apply to decision-tree"):
        DeployLoop(freq, {}, model_path=str(table_file), retrain_every_s=5)
    with pytest.raises(PolicyError, match="watching the model file"):
        DeployLoop(freq, {}, watch_model=True)
    with pytest.raises(PolicyError, match="watching the model file"):
        DeployLoop(fifo, {}, watch_model=True)
    with pytest.raises(PolicyError, match="has no model to swap"):
        DeployLoop(fifo, {}).swap(FreqTable.constant(3))
    loop = DeployLoop(freq, {}, model_path=str(table_file), watch_model=True)
    assert loop.model.run.table.version == 1 and loop.model.name == "freq-table"
    with pytest.raises(ModelError, match="not running"):
        loop.swap(FreqTable.constant(3))


def test_status_prints_the_live_table_version(monkeypatch):
    from aios_lab.sched import status

    monkeypatch.setattr(status, "live_status", lambda: {
        "sched_ext": {"state": "enabled", "ops": "freq", "enable_seq": 3, "nr_rejected": 0},
        "policy": {"name": "freq", "pid": 42, "uptime_s": 1.5, "tunables": {}, "stats": {"TICK_SET": 9},
                   "model": {"kind": "freq-table", "version": 7, "swaps": 2}}})
    res = CliRunner().invoke(main, ["status"])
    assert res.exit_code == 0, res.output
    assert "table version 7 (2 swaps)" in res.output and "tick_set" in res.output


def test_model_status_reads_the_version_at_the_recorded_offset(monkeypatch):
    from aios_lab.sched import status

    class FakeMap:
        def __init__(self, raw):
            self.raw = raw

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def lookup(self, key):
            return self.raw

    raw = (1).to_bytes(8, "little") + (9).to_bytes(8, "little") + (4).to_bytes(8, "little")
    monkeypatch.setattr(status.Map, "from_id", classmethod(lambda cls, i: FakeMap(raw)))
    spec = {"kind": "freq-table", "ctl_map_id": 5, "version_offset": 8, "swaps_offset": 16}
    assert status._model_status(spec) == {"kind": "freq-table", "version": 9, "swaps": 4}
    assert status._model_status(None) is None and status._model_status({"ctl_map_id": "x"}) is None
