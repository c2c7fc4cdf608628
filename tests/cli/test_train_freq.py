"""`aios-lab train freq` end to end on one recorded trace (simulated)."""
from __future__ import annotations


from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.dvfs.experiment import traces_dir
from aios_lab.dvfs.table import load_table


def test_train_freq_rl_writes_a_table_a_curve_and_labels_output_simulated(tmp_path):
    out = tmp_path / "rl.json"
    res = CliRunner().invoke(main, ["train", "freq", "--method", "rl", "--episodes", "2", "--seed", "3",
                                    "--trace", str(traces_dir() / "frames-1"),
                                    "--test-trace", str(traces_dir() / "frames-3"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("SIMULATED")
    table = load_table(out)
    assert table.method == "rl" and table.meta["seed"] == 3 and table.meta["simulated"] is True
    assert table.meta["train_traces"] == [str(traces_dir() / "frames-1")]
    assert (tmp_path / "rl.curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "held-out frames-3" in res.output and "[simulated]" in res.output


def test_train_freq_on_the_activation_unit_records_it(tmp_path):
    out = tmp_path / "rl.json"
    d = traces_dir("activation")
    res = CliRunner().invoke(main, ["train", "freq", "--unit", "activation", "--method", "rl", "--episodes", "2",
                                    "--trace", str(d / "frames-1"), "--test-trace", str(d / "frames-3"),
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "(activation demand)" in res.output
    assert load_table(out).meta["unit"] == "activation"
    # a trace recorded without the switch stream has no activations: one line, nothing written
    res = CliRunner().invoke(main, ["train", "freq", "--unit", "activation", "--trace", str(traces_dir() / "frames-1"),
                                    "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 3 and "no switches rows" in res.output and "--stream-budget 0" in res.output
    assert not (tmp_path / "x.json").exists()


def test_train_freq_on_a_missing_trace_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "t.json"
    res = CliRunner().invoke(main, ["train", "freq", "--trace", str(tmp_path / "nope"), "--out", str(out)])
    assert res.exit_code == 3
    assert len(res.output.strip().splitlines()) == 1 and "nope" in res.output
    assert not out.exists()


def test_train_freq_unknown_cluster(tmp_path):
    res = CliRunner().invoke(main, ["train", "freq", "--cluster", "gs101:huge", "--out", str(tmp_path / "t.json")])
    assert res.exit_code == 3 and "no cluster 'huge'" in res.output
