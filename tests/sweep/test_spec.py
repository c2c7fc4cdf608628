"""Sweep specs, cells, hashes, the recorded order, the folder layout and the
cell kinds' parameter checks (vm-bench included: its spec and layout, not a boot)."""
import json

import pytest
from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.sweep import cells
from aios_lab.sweep.errors import CellError, SweepError
from aios_lab.sweep.layout import SweepDir
from aios_lab.sweep.runner import plan_sweep
from aios_lab.sweep.spec import SweepSpec, cell_hash, expand, order
from tests.helpers.sweep import write_spec


def test_grid_expands_to_every_combination_times_repeat_with_defaults_filled(tmp_path):
    spec = SweepSpec.load(write_spec(tmp_path / "s.toml", governors=["schedutil", "ondemand"],
                                     traces=["bursty-1", "frames-1", "build-1"], repeat=2))
    cs = expand(spec)
    assert len(cs) == 2 * 3 * 2
    assert len({c.hash for c in cs}) == len(cs)
    assert all(c.params["cluster"] == "gs101:big" and c.params["mem_share"] == 0.3 for c in cs)
    assert cs[0].layout == ("governor", "trace")


def test_hash_is_the_content_not_the_order_or_the_spec_file(tmp_path):
    a = expand(SweepSpec.load(write_spec(tmp_path / "a.toml", governors=["schedutil", "ondemand"])))
    b = expand(SweepSpec.load(write_spec(tmp_path / "b.toml", governors=["ondemand", "schedutil"], name="x")))
    assert {c.hash for c in a} == {c.hash for c in b}
    # a fixed parameter is part of a cell's identity even though it is not in its folder name
    c = expand(SweepSpec.load(write_spec(tmp_path / "c.toml", governors=["schedutil", "ondemand"],
                                         extra="mem_share = 0.5\n")))
    assert not {x.hash for x in a} & {x.hash for x in c}
    assert cell_hash("k", {"a": 1, "b": 2}, 0) == cell_hash("k", {"b": 2, "a": 1}, 0)
    assert cell_hash("k", {"a": 1}, 0) != cell_hash("k", {"a": 1}, 1)


def test_order_is_shuffled_reproducibly_by_its_seed(tmp_path):
    cs = expand(SweepSpec.load(write_spec(tmp_path / "s.toml", repeat=3)))
    one, two, other = order(cs, 1), order(cs, 1), order(cs, 2)
    assert [c.hash for c in one] == [c.hash for c in two]
    assert [c.hash for c in one] != [c.hash for c in other]
    assert [c.hash for c in one] != [c.hash for c in cs] and sorted(c.hash for c in one) == sorted(c.hash for c in cs)


def test_exclude_drops_matching_grid_points(tmp_path):
    spec = SweepSpec.load(write_spec(tmp_path / "s.toml", governors=["schedutil", "ondemand"],
                                     traces=["bursty-1", "frames-1"],
                                     extra='\n[[exclude]]\ngovernor = "ondemand"\ntrace = "frames-1"\n'))
    got = {(c.params["governor"], c.params["trace"]) for c in expand(spec)}
    assert got == {("schedutil", "bursty-1"), ("schedutil", "frames-1"), ("ondemand", "bursty-1")}


@pytest.mark.parametrize("text, message", [
    ('[sweep]\nkind = "nope"\n[grid]\na = [1]\n', "unknown cell kind 'nope'"),
    ('[grid]\na = [1]\n', "needs a [sweep] table"),
    ('[sweep]\nkind = "dvfs-sim"\nrepeats = 2\n', "unknown [sweep] key(s) repeats"),
    ('[sweep]\nkind = "dvfs-sim"\n[grid]\ngovernor = []\n', "non-empty list"),
    ('[sweep]\nkind = "dvfs-sim"\n[grid]\ngovernor = ["schedutil", "schedutil"]\n', "lists a value twice"),
    ('[sweep]\nkind = "dvfs-sim"\nrepeat = 0\n', "repeat must be an integer >= 1"),
    ('[sweep]\nkind = "dvfs-sim"\n[grid]\ngovernor = ["schedutil"]\n[fixed]\ngovernor = "x"\n',
     "both in [grid] and [fixed]"),
    ('[sweep]\nkind = "dvfs-sim"\n[grids]\n', "unknown section(s) grids"),
    ('[sweep\n', "not valid TOML"),
])
def test_bad_specs_are_refused_with_what_is_wrong(tmp_path, text, message):
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(SweepError) as e:
        SweepSpec.load(p)
    assert message in e.value.one_line()


@pytest.mark.parametrize("extra, message", [
    ('governor = ["schedutil"]\ntrace = ["no-such-trace"]\n', "no trace no-such-trace"),
    ('governor = ["warp"]\ntrace = ["bursty-1"]\n', "unknown governor 'warp'"),
    ('governor = ["schedutil"]\ntrace = ["bursty-1"]\nmem_share = ["half"]\n', "mem_share='half' must be float"),
    ('governor = ["schedutil"]\ntrace = ["bursty-1"]\nturbo = [1]\n', "unknown parameter(s) turbo"),
    ('trace = ["bursty-1"]\n', "parameter governor is required"),
])
def test_cell_parameters_are_checked_at_plan_time(tmp_path, extra, message):
    p = tmp_path / "s.toml"
    p.write_text('[sweep]\nkind = "dvfs-sim"\n[grid]\n' + extra)
    with pytest.raises(CellError) as e:
        expand(SweepSpec.load(p))
    assert message in e.value.one_line()


def test_vm_bench_cell_keys_its_folder_by_policy_workload_and_the_pinned_kernel(tmp_path):
    from aios_lab.sweep.cells.vm_bench import pinned_release

    p = tmp_path / "s.toml"
    p.write_text('[sweep]\nkind = "vm-bench"\nrepeat = 2\n[grid]\npolicy = ["eevdf", "fifo"]\n'
                 'workload = ["cpu-spin"]\n[fixed]\ncpus = 2\nnuma = 1\n')
    cs = expand(SweepSpec.load(p))
    assert len(cs) == 4 and cs[0].layout == ("policy", "workload", "kernel")
    release = pinned_release()
    assert {c.params["kernel"] for c in cs} == {release}
    d = SweepDir(tmp_path / "out").cell_dir(cs[0])
    assert d.relative_to(tmp_path / "out").parts == (
        "cells", "policy=eevdf", "workload=cpu-spin", f"kernel={release}", "rep=0")
    kind = cells.get("vm-bench")
    assert kind.resources(cs[0].params) == {"num_cpus": 1, "memory": 2048 * 2 ** 20}


@pytest.mark.parametrize("params, message", [
    ({"policy": "fifo", "workload": "cpu-spin", "kernel": "6.1.0-99"}, "is not the pinned one"),
    ({"policy": "fifo", "workload": "no-such-workload"}, "no-such-workload"),
    ({"policy": "no-such-policy", "workload": "cpu-spin"}, "no-such-policy"),
    ({"policy": "fifo", "workload": "cpu-spin", "cpus": 3, "numa": 2}, "cannot be split evenly"),
])
def test_vm_bench_parameters_are_checked_without_booting(params, message):
    from aios_lab.errors import AiosError

    with pytest.raises(AiosError) as e:
        cells.get("vm-bench").validate(params)
    assert message in e.value.one_line()


def test_plan_records_the_order_and_is_idempotent_and_refuses_another_plan(tmp_path):
    spec = write_spec(tmp_path / "s.toml", seed=11)
    p1 = plan_sweep(spec, tmp_path / "out")
    plan = json.loads((tmp_path / "out" / "_sweep" / "plan.json").read_text())
    assert p1.created and plan["seed"] == 11 and [c["hash"] for c in plan["cells"]] == [c.hash for c in p1.cells]
    assert (tmp_path / "out" / "_sweep" / "spec.toml").read_text() == spec.read_text()
    p2 = plan_sweep(spec, tmp_path / "out", seed=99)  # same cells: the recorded plan stands
    assert not p2.created and [c.hash for c in p2.cells] == [c.hash for c in p1.cells]
    other = write_spec(tmp_path / "o.toml", governors=["schedutil"])
    with pytest.raises(SweepError, match="already holds another sweep"):
        plan_sweep(other, tmp_path / "out")


def test_a_hand_edited_plan_is_detected(tmp_path):
    plan_sweep(write_spec(tmp_path / "s.toml"), tmp_path / "out")
    path = tmp_path / "out" / "_sweep" / "plan.json"
    plan = json.loads(path.read_text())
    plan["cells"][0]["params"]["mem_share"] = 0.9
    path.write_text(json.dumps(plan))
    with pytest.raises(SweepError, match="edited by hand"):
        SweepDir(tmp_path / "out").cells()


def test_cli_plan_prints_the_cells_and_a_bad_spec_is_one_line(tmp_path):
    spec = write_spec(tmp_path / "s.toml")
    res = CliRunner().invoke(main, ["sweep", "plan", str(spec), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "planned: 12 cells" in res.output and "run it: aios-lab sweep run" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\nkind = "dvfs-sim"\n[grid]\ngovernor = ["warp"]\ntrace = ["bursty-1"]\n')
    res = CliRunner().invoke(main, ["sweep", "plan", str(bad), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 3 and res.output.startswith("Error: dvfs-sim: unknown governor 'warp'")
    assert res.output.strip().count("\n") == 0 and not (tmp_path / "o2").exists()
    res = CliRunner().invoke(main, ["sweep", "run", str(tmp_path / "nowhere")])
    assert res.exit_code == 3 and "is not a planned sweep" in res.output


@pytest.mark.parametrize("name, cells", [("dvfs-governors", 225), ("dvfs-train", 20), ("sched-vm", 45)])
def test_the_example_specs_in_sweeps_plan(tmp_path, name, cells):
    from aios_lab import paths

    p = plan_sweep(paths.project_root() / "sweeps" / f"{name}.toml", tmp_path / name)
    assert len(p.cells) == cells
