"""`aios-lab freq run`: a learned table applied through a laid-out cpufreq tree."""
from __future__ import annotations

import json

from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.dvfs.table import FreqTable, save_table

from tests.helpers.cpufreq_trees import ProcStat, acpi_cpufreq_tree, attr


def test_freq_run_applies_table_and_restores(tmp_path, monkeypatch):
    acpi_cpufreq_tree(tmp_path, ncpu=2, governor="schedutil")
    ProcStat(tmp_path, 2)
    monkeypatch.setenv("AIOS_LAB_FREQ_STATE", str(tmp_path / "state.json"))
    model = save_table(tmp_path / "t.json", FreqTable.constant(1024))
    res = CliRunner().invoke(main, ["freq", "run", "--model", str(model), "--duration", "0.05", "--period",
                                    "0.01", "--root", str(tmp_path), "--proc-root", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["restored"] is True and summary["stopped"] == "duration"
    assert summary["writes"] >= 1
    # every write went to the top frequency (the table asks for perf 1024) ...
    assert {pol: set(r) for pol, r in summary["residency"].items()} == {"policy0": {"3501000"},
                                                                        "policy1": {"3501000"}}
    # ... and the previous governor is back
    assert attr(tmp_path, "policy0", "scaling_governor") == "schedutil"
    assert not (tmp_path / "state.json").exists()


def test_freq_run_rejects_bad_table_before_touching_anything(tmp_path, monkeypatch):
    acpi_cpufreq_tree(tmp_path, ncpu=1, governor="ondemand")
    ProcStat(tmp_path, 1)
    monkeypatch.setenv("AIOS_LAB_FREQ_STATE", str(tmp_path / "state.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "aios-lab.freq-table", "format_version": 1, "perf": [[NaN]]}')
    res = CliRunner().invoke(main, ["freq", "run", "--model", str(bad), "--duration", "0.02",
                                    "--root", str(tmp_path), "--proc-root", str(tmp_path)])
    assert res.exit_code == 3
    assert "frequency table" in res.output and len(res.output.strip().splitlines()) == 1
    assert attr(tmp_path, "policy0", "scaling_governor") == "ondemand"
    assert not (tmp_path / "state.json").exists()


def test_deploy_freq_backend_cpufreq_without_a_driver_is_one_clear_line(tmp_path, monkeypatch):
    # This host (and every QEMU guest) has no cpufreq driver: deploy must say so
    # in one line, after validating the table, and change nothing.
    from aios_lab.cpufreq import Cpufreq

    if Cpufreq("/").available():
        import pytest
        pytest.skip("this machine has a cpufreq driver")
    monkeypatch.setenv("AIOS_LAB_FREQ_STATE", str(tmp_path / "state.json"))
    model = save_table(tmp_path / "t.json", FreqTable.constant(512))
    res = CliRunner().invoke(main, ["deploy", "freq", "--backend", "cpufreq", "--model", str(model),
                                    "--duration", "0.05"])
    assert res.exit_code == 4
    out = res.output.strip().splitlines()
    assert len(out) == 1 and "cpufreq" in out[0], res.output
    assert not (tmp_path / "state.json").exists()


def test_deploy_freq_backend_cpufreq_refuses_a_command(tmp_path):
    model = save_table(tmp_path / "t.json", FreqTable.constant(512))
    res = CliRunner().invoke(main, ["deploy", "freq", "--backend", "cpufreq", "--model", str(model), "--", "true"])
    assert res.exit_code == 2 and "no COMMAND" in res.output
