"""`aios-lab freq bound` on a recorded trace (simulated)."""
from __future__ import annotations

import json

from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.dvfs.experiment import traces_dir


def test_bound_prints_schedutil_and_the_clairvoyant_governors_as_simulated():
    res = CliRunner().invoke(main, ["freq", "bound", "--trace", str(traces_dir() / "bursty-1"), "--no-lp", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["simulated"] is True
    rows = {r["what"]: r for r in doc["rows"]}
    assert set(rows) == {"schedutil", "clairvoyant", "queued work + predicted arrivals", "queued work only",
                         "online: estimated work, predicted", "online: per-task estimates, predicted"}
    assert rows["schedutil"]["energy_x"] == 1.0 and rows["schedutil"]["misses"] > 0
    # seeing the future helps: no misses, less energy than schedutil and than seeing only the queue
    cv, queued = rows["clairvoyant"], rows["queued work only"]
    assert cv["misses"] == 0 and cv["energy_x"] < queued["energy_x"] < 1.0
    # estimating the work instead of reading it costs energy
    assert rows["online: estimated work, predicted"]["energy_x"] > rows["queued work + predicted arrivals"]["energy_x"]
    # the per-task rung reads no item's work either: it sits above the rung that reads it, on energy or misses
    task, known = rows["online: per-task estimates, predicted"], rows["queued work + predicted arrivals"]
    assert task["energy_x"] > known["energy_x"] or task["misses"] > known["misses"]


def test_bound_with_a_cap_misses_more_for_less_energy():
    args = ["freq", "bound", "--trace", str(traces_dir() / "frames-3"), "--no-lp", "--json"]
    free = {r["what"]: r for r in json.loads(CliRunner().invoke(main, args).output)["rows"]}
    capped = {r["what"]: r for r in json.loads(CliRunner().invoke(main, args + ["--max-opp", "15"]).output)["rows"]}
    assert capped["clairvoyant"]["misses"] > free["clairvoyant"]["misses"]
    assert capped["clairvoyant"]["energy_j"] < free["clairvoyant"]["energy_j"]


def test_bound_refuses_an_opp_the_cluster_lacks_and_a_missing_trace_in_one_line(tmp_path):
    res = CliRunner().invoke(main, ["freq", "bound", "--max-opp", "17", "--no-lp"])
    assert res.exit_code == 3 and "OPPs 0..16" in res.output
    res = CliRunner().invoke(main, ["freq", "bound", "--trace", str(tmp_path / "nope"), "--no-lp"])
    assert res.exit_code == 3 and len(res.output.strip().splitlines()) == 1 and "nope" in res.output


def test_bound_on_the_activation_unit_and_an_unknown_unit_in_one_line():
    trace = str(traces_dir("activation") / "frames-1")
    res = CliRunner().invoke(main, ["freq", "bound", "--unit", "activation", "--trace", trace, "--no-lp", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["unit"] == "activation"
    rows = {r["what"]: r for r in doc["rows"]}
    # one item per activation: more items than the per-interval demand of the same recording
    per_interval = json.loads(CliRunner().invoke(main, ["freq", "bound", "--trace", trace, "--no-lp",
                                                        "--json"]).output)
    assert rows["schedutil"]["items"] > {r["what"]: r for r in per_interval["rows"]}["schedutil"]["items"]
    assert rows["clairvoyant"]["energy_x"] < 1.0
    res = CliRunner().invoke(main, ["freq", "bound", "--unit", "wakeup", "--no-lp"])
    assert res.exit_code == 3 and len(res.output.strip().splitlines()) == 1 and "unknown demand unit" in res.output
