"""Issue 21: one test per class of bad input, with the issue's own example.

Each asserts what the issue asks: one line, the documented exit code, and
nothing changed on disk. Fast (no BPF, no VM): traces are written with the
TraceWriter, a few KiB each."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from aios_lab import exit_codes
from aios_lab.cli import main
from aios_lab.dvfs.table import load_table
from aios_lab.errors import ModelError, PolicyError
from aios_lab.mllb import model as m
from aios_lab.mllb.model import load_model, save_model
from aios_lab.sched.policy import load_manifest
from aios_lab.telemetry.writer import TraceWriter
from aios_lab.workloads import WorkloadError, load as load_workload

from tests.helpers import REPO
from tests.helpers.mllb import decisions, small_tree, write_decisions
from tests.helpers.traces import TOPOLOGY, garble_pages, metrics_trace


def snapshot(*paths: Path) -> dict:
    """Every file under `paths`: name -> (type, sha256); what 'nothing
    changed on disk' is checked against."""
    out = {}
    for root in paths:
        items = [root] + (sorted(root.rglob("*")) if root.is_dir() else [])
        for p in items:
            st = os.lstat(p)
            digest = (hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None)
            out[str(p)] = (stat.S_IFMT(st.st_mode), digest)
    return out


def fails(args: list[str], code: int, *, env: dict | None = None) -> str:
    """Run the CLI; assert exit `code`, no traceback, one line; return it."""
    res = CliRunner().invoke(main, args, env=env)
    assert res.exit_code == code, (args, res.exit_code, res.output, res.exc_info)
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exc_info
    assert "Traceback" not in res.output
    assert res.output.count("\n") == 1 and res.output.startswith("Error: "), res.output
    return res.output


def edit_metadata(trace: Path, **fields) -> Path:
    md = json.loads((trace / "metadata.json").read_text())
    md.update(fields)
    (trace / "metadata.json").write_text(json.dumps(md))
    return trace


# -- 1. writers destroy what they should not ----------------------------------------------------

def test_1_outputs_inside_an_input_are_refused(tmp_path):
    t = metrics_trace(tmp_path / "t")
    d = tmp_path / "d"
    write_decisions(d, decisions(200))
    before = snapshot(t, d)
    for args in (["analyze", str(t), "--report", str(t / "metadata.json")],
                 ["compare", str(t), str(metrics_trace(tmp_path / "u")), "--report", str(t / "r.html")],
                 ["export", "perfetto", str(t), "-o", str(t / "switches.parquet")],
                 ["train", "lb", "--trace", str(d), "--out", str(d / "metadata.json")],
                 ["train", "freq", "--trace", str(t), "--out", str(t / "x.json"), "--episodes", "1"]):
        assert "is inside the input" in fails(args, exit_codes.BAD_INPUT)
    assert snapshot(t, d) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_1_a_character_device_or_fifo_as_output_is_never_replaced(tmp_path):
    t = metrics_trace(tmp_path / "t")
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers, in tmp
    os.mkfifo(tmp_path / "fifo")
    before = snapshot(tmp_path)
    for out in (dev, tmp_path / "fifo"):
        fails(["analyze", str(t), "--report", str(out)], exit_codes.BAD_INPUT)
        fails(["export", "perfetto", str(t), "-o", str(out)], exit_codes.BAD_INPUT)
    assert snapshot(tmp_path) == before


# -- 2. JSON parser errors ----------------------------------------------------------------------

def test_2_huge_integers_and_deep_nesting_are_one_line(tmp_path):
    t = metrics_trace(tmp_path / "t")
    raw = (t / "metadata.json").read_text()
    for bad in ('{"x": ' + "9" * 5000 + ", " + raw[1:], '{"x": ' + "[" * 200_000 + "]" * 200_000 + ", " + raw[1:]):
        (t / "metadata.json").write_text(bad)
        fails(["analyze", str(t)], exit_codes.BAD_INPUT)
    model = tmp_path / "m.json"
    table = tmp_path / "t.json"
    for bad in ('{"format": ' + "9" * 5000 + "}", "[" * 200_000 + "]" * 200_000):
        model.write_text(bad)
        table.write_text(bad)
        with pytest.raises(ModelError):
            load_model(model)
        fails(["freq", "run", "--model", str(table), "--root", str(tmp_path)], exit_codes.BAD_INPUT)


# -- 3. metadata of the wrong type or size ------------------------------------------------------

@pytest.mark.parametrize("fields, field", [
    ({"lost": [1, 2]}, "lost"),
    ({"collector": "x"}, "collector"),
    ({"topology": "x"}, "topology"),
    ({"workload": "x"}, "workload"),
    ({"topology": {**TOPOLOGY, "cpus": [{"cpu": 10 ** 9}]}}, "topology.cpus[0]"),
    ({"lost": {"wakeup_ring": -1}}, "lost.wakeup_ring"),
    ({"start": {"monotonic_ns": "soon"}}, "start.monotonic_ns"),
])
def test_3_metadata_fields_are_checked(tmp_path, fields, field):
    t = edit_metadata(metrics_trace(tmp_path / "t"), **fields)
    for args in (["analyze", str(t)], ["freq", "bound", "--trace", str(t), "--no-lp"],
                 ["compare", str(t), str(metrics_trace(tmp_path / f"u{len(os.listdir(tmp_path))}"))]):
        out = fails(args, exit_codes.BAD_INPUT)
        assert f"field {field} " in out and "metadata.json" in out


def test_3_a_last_cpu_beyond_the_topology(tmp_path):
    w = TraceWriter(tmp_path / "t", {"topology": TOPOLOGY, "interval_ms": 1000})
    w.append("task_intervals", [{"interval_start_ns": 0, "interval_end_ns": 10 ** 9, "pid": 5, "tgid": 5,
                                 "comm": "x", "oncpu_ns": 10 ** 8, "last_cpu": 99}])
    t = w.close()
    assert "last_cpu 99" in fails(["freq", "bound", "--trace", str(t), "--no-lp"], exit_codes.BAD_INPUT)


def test_3_a_corrupt_task_intervals_page_is_one_line(tmp_path):
    """A valid footer over garbage pages: the per-task queries (once outside
    the guarded reader) say so in one line, in analyze and in compare."""
    t = metrics_trace(tmp_path / "t")
    garble_pages(t / "task_intervals.parquet")
    for args in (["analyze", str(t)], ["compare", str(t), str(metrics_trace(tmp_path / "u"))]):
        out = fails(args, exit_codes.BAD_INPUT)
        assert "task_intervals" in out or "cannot be read" in out


# -- 4. numbers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["train", "lb", "--trace", "x", "--out", "y", "--migration-cost-us", "nan"],
    ["train", "lb", "--trace", "x", "--out", "y", "--seed", "-1"],
    ["train", "lb", "--trace", "x", "--out", "y", "--test-size", "nan"],
    ["train", "freq", "--out", "y", "--mem-share", "nan"],
    ["train", "freq", "--out", "y", "--seed", "-3"],
    ["freq", "bound", "--lookahead-ms", "inf"],
    ["freq", "bound", "--lateness-ms", "nan"],
    ["freq", "run", "--model", "x", "--duration", "nan"],
    ["freq", "run", "--model", "x", "--period", "inf"],
    ["collect", "--duration", "-5"],
    ["collect", "--duration", "0"],
    ["collect", "--duration", "nan"],
    ["collect", "--interval", "0"],
    ["vm", "run", "--timeout", "nan", "--", "true"],
    ["vm", "run", "--cpus", "0", "--", "true"],
])
def test_4_nan_inf_and_negative_options_are_usage_errors(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    out = fails(args, exit_codes.USAGE)
    assert "Invalid value" in out and "--help" in out
    assert list(tmp_path.iterdir()) == []


# -- 5. collect's command -----------------------------------------------------------------------

def test_5_a_missing_program_or_a_mistyped_option_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "no such program" in fails(["collect", "--no-bpf", "--out", "c", "--", "no-such-prog-x"],
                                      exit_codes.COMMAND_FAILED)
    assert "no such option: --durration" in fails(["collect", "--durration", "1"], exit_codes.USAGE)
    assert list(tmp_path.iterdir()) == []


def test_5_a_failing_workload_is_exit_6_and_its_trace_is_kept(tmp_path):
    res = CliRunner().invoke(main, ["collect", "--no-bpf", "--interval", "0.05", "--out", str(tmp_path / "c"),
                                    "--", "sh", "-c", "exit 3"])
    assert res.exit_code == exit_codes.COMMAND_FAILED, res.output
    assert "exited with status 3" in res.output.splitlines()[-1]
    assert json.loads((tmp_path / "c" / "metadata.json").read_text())["workload_exit_code"] == 3


def test_5_sigkill_of_collect_does_not_orphan_the_workload(tmp_path):
    marker = f"aios-orphan-{os.getpid()}"
    p = subprocess.Popen([sys.executable, "-m", "aios_lab.cli", "collect", "--no-bpf", "--interval", "0.1",
                          "--out", str(tmp_path / "c"), "--", sys.executable, "-c", "import time; time.sleep(60)", marker],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def workload() -> list[int]:
        found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
        return [int(x) for x in found if int(x) != p.pid]
    deadline = time.monotonic() + 60
    while not workload() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workload(), "the workload never started"
    p.kill()
    p.wait()
    deadline = time.monotonic() + 10
    while workload() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not workload(), "the workload outlived a SIGKILLed collect"
    # Its scratch is swept by the next writer of the same output.
    assert [x.name for x in tmp_path.iterdir()] == [f".c.partial-{p.pid}"]
    res = CliRunner().invoke(main, ["collect", "--no-bpf", "--interval", "0.05", "--duration", "0.2",
                                    "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert [x.name for x in tmp_path.iterdir()] == ["c"]


# -- 6. signals and scratch ---------------------------------------------------------------------

def test_6_an_interrupted_export_leaves_no_scratch(tmp_path, monkeypatch):
    from aios_lab.analysis import perfetto

    t = metrics_trace(tmp_path / "t")
    real = perfetto._export

    def interrupted(pb, trace, f, stats, scratch, *a):
        scratch.path()  # the sort's scratch exists, as on a large trace
        f.write(b"half")
        raise KeyboardInterrupt  # what SIGTERM becomes in every command
    monkeypatch.setattr(perfetto, "_export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        perfetto.export_perfetto(t, tmp_path / "o.pftrace")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    # scratch a SIGKILLed export left is swept by the next one
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".o.pftrace.sort-{dead}-abc").mkdir()
    (tmp_path / f".o.pftrace.tmp-{dead}-abc.tmp").write_bytes(b"x")
    monkeypatch.setattr(perfetto, "_export", real)
    perfetto.export_perfetto(t, tmp_path / "o.pftrace")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.pftrace", "t"]


# -- 7. policies, manifests and workloads -------------------------------------------------------

MANIFEST = 'name = "p"\nkind = "sched_ext"\nsource = "p.bpf.c"\nstruct_ops = "p_ops"\n'


@pytest.mark.parametrize("extra, match", [
    ("tunables = 5\n", "tunables = 5 is not a table"),
    ("[tunables.x]\ntype = \"u32\"\n", "missing required key 'tunables.x.default'"),
    ("requires = [1, 2]\n", "requires = \\[1, 2\\] is not a table"),
    ("test_only = \"no\"\n", "test_only = 'no' is not a boolean"),
    ("[tunables.x]\ntype = \"u32\"\ndefault = 50\nmax = 10\n", "default of tunable x=50 is outside"),
    ("[tunables.x]\ntype = \"u32\"\ndefault = 5\nmin = 10\nmax = 1\n", "min 10 > max 1"),
    ("\x00\x01binary", "not valid TOML"),
])
def test_7_malformed_manifests(tmp_path, extra, match):
    (tmp_path / "p.bpf.c").write_text("")
    f = tmp_path / "manifest.toml"
    f.write_text(MANIFEST + extra)
    with pytest.raises(PolicyError, match=match) as e:
        load_manifest(f)
    assert str(f) in str(e.value)
    f.write_text(MANIFEST.replace('name = "p"', "name = 5"))
    with pytest.raises(PolicyError, match="name = 5 is not a string"):
        load_manifest(f)


def test_7_a_valid_policy_outside_the_tree_is_listed(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "p.bpf.c").write_text("")
    (tmp_path / "p" / "manifest.toml").write_text(MANIFEST)
    res = CliRunner().invoke(main, ["policy", "list"], env={"AIOS_LAB_POLICY_PATH": str(tmp_path)})
    assert res.exit_code == 0 and "p " in res.output and "not built" in res.output, res.output
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "manifest.toml").write_text("tunables = 5\n")
    assert "tunables = 5" in fails(["policy", "list"], exit_codes.BAD_INPUT,
                                   env={"AIOS_LAB_POLICY_PATH": str(tmp_path)})


@pytest.mark.parametrize("text, field", [
    ('name = "w"\ncommand = "true"\nrequires = "hackbench"\n', "requires"),
    ('name = "w"\ncommand = 5\n', "command"),
    ('name = "w"\ncommand = "true"\ntimeout_s = -5\n', "timeout_s"),
    ('name = "w"\ncommand = "true"\ntimeout_s = nan\n', "timeout_s"),
    ('command = "true"\n', "name"),
])
def test_7_malformed_workloads(tmp_path, text, field):
    f = tmp_path / "w.toml"
    f.write_text(text)
    with pytest.raises(WorkloadError, match=f"{field} = ") as e:
        load_workload(f)
    assert str(f) in str(e.value) and exit_codes.code_for(e.value) == exit_codes.BAD_INPUT


# -- 8. nonsense accepted as results ------------------------------------------------------------

def test_8_negative_waits_and_timestamps_are_not_results(tmp_path):
    w = TraceWriter(tmp_path / "t", {"topology": TOPOLOGY})
    w.append("switches", [{"ts_ns": 10 + i, "cpu": 0, "prev_pid": 0, "next_pid": 5, "next_wait_ns": -5}
                          for i in range(3)])
    t = w.close()
    assert "switches.next_wait_ns holds -5" in fails(["analyze", str(t)], exit_codes.BAD_INPUT)
    w = TraceWriter(tmp_path / "u", {"topology": TOPOLOGY})
    w.append("switches", [{"ts_ns": ts, "cpu": 0, "prev_pid": 0, "next_pid": 5}
                          for ts in (-1, 2 ** 63 - 1)])
    u = w.close()
    fails(["export", "perfetto", str(u), "-o", str(tmp_path / "o.pftrace")], exit_codes.BAD_INPUT)
    assert not (tmp_path / "o.pftrace").exists()


def test_8_train_lb_refuses_negative_outcomes_and_tiny_splits(tmp_path):
    df = decisions(400)
    df.loc[5, "wait_after_ns"] = -10 ** 15
    write_decisions(tmp_path / "d", df)
    out = fails(["train", "lb", "--trace", str(tmp_path / "d"), "--out", str(tmp_path / "m")], exit_codes.BAD_INPUT)
    assert "wait_after_ns holds -1000000000000000" in out
    write_decisions(tmp_path / "e", decisions(400))
    out = fails(["train", "lb", "--trace", str(tmp_path / "e"), "--out", str(tmp_path / "m"),
                 "--test-size", "1e-9"], exit_codes.BAD_INPUT)
    assert "1 held-out" in out
    assert not (tmp_path / "m").exists()


def test_8_the_same_trace_twice_is_not_two_runs(tmp_path):
    import shutil

    t = edit_metadata(metrics_trace(tmp_path / "t"), host={"hostname": "h"})
    (tmp_path / "link").symlink_to(t)
    shutil.copytree(t, tmp_path / "copy")
    for other in (t, tmp_path / "link", tmp_path / "copy"):
        assert "is the same run as" in fails(["compare", str(t), str(other)], exit_codes.BAD_INPUT)
    u = edit_metadata(metrics_trace(tmp_path / "u"), host={"hostname": "h"},
                      start={"monotonic_ns": 5, "wall": 1.7e9})
    res = CliRunner().invoke(main, ["compare", str(t), str(u)])
    assert res.exit_code == 0, res.output


# -- 9. models ----------------------------------------------------------------------------------

def _resign(path: Path, mutate) -> None:
    doc = json.loads(path.read_text())
    doc.pop("sha256")
    mutate(doc)
    doc["sha256"] = hashlib.sha256(m._canonical(doc)).hexdigest()
    path.write_text(json.dumps(doc))


def test_9_a_quantised_tree_that_contradicts_its_float_tree_is_refused(tmp_path):
    
    path = save_model(tmp_path / "m.json", m.ModelFile(tree=small_tree(), training={}))
    assert load_model(path).tree.nr_nodes == 5

    def flip_leaf(doc):
        doc["quantized"]["leaf"][3] = 0  # the float tree still says P(migrate) = 1

    def move_threshold(doc):
        doc["quantized"]["threshold"][0] = 100  # the float threshold is 5.5
    for mutate, match in ((flip_leaf, "leaf 3 answers 0"), (move_threshold, "node 0 threshold 100")):
        p = tmp_path / f"{mutate.__name__}.json"
        p.write_text(path.read_text())
        _resign(p, mutate)
        with pytest.raises(ModelError, match=match):
            load_model(p)


def test_9_a_fifo_or_device_as_model_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="is a FIFO"):
        load_model(tmp_path / "fifo")
    with pytest.raises(ModelError, match="is a FIFO"):
        load_table(tmp_path / "fifo")
    # the CLI refuses it as an option value, before the library is reached
    assert "is a FIFO" in fails(["freq", "run", "--model", str(tmp_path / "fifo"), "--root", str(tmp_path)],
                                exit_codes.USAGE)
    with pytest.raises(ModelError, match="is a character device"):
        load_model("/dev/zero")  # read-only use of the real device: nothing is read
    assert time.monotonic() - t0 < 10


# -- 10. options spliced into code --------------------------------------------------------------

def test_10_memory_limit_is_a_value_not_sql(tmp_path, monkeypatch):
    t = metrics_trace(tmp_path / "t")
    monkeypatch.chdir(tmp_path)
    inject = "1GB'; COPY (SELECT 1) TO 'x.csv'; SET memory_limit='1GB"
    for bad in (inject, "lots", "0", "-1GB", "1e400GB"):
        assert "--memory-limit" in fails(["analyze", str(t), "--memory-limit", bad], exit_codes.BAD_INPUT)
    assert not (tmp_path / "x.csv").exists()
    res = CliRunner().invoke(main, ["analyze", str(t), "--memory-limit", "256MB", "--json"])
    assert res.exit_code == 0, res.output


def test_10_cluster_is_a_name_not_a_path(tmp_path):
    (tmp_path / "evil.json").write_text("{not json")
    rel = os.path.relpath(tmp_path / "evil", Path(m.__file__).parents[1] / "dvfs" / "data")
    assert "unknown platform" in fails(["freq", "bound", "--cluster", f"{rel}:big", "--no-lp"],
                                       exit_codes.BAD_INPUT)


# -- 11. state files and environment ------------------------------------------------------------

@pytest.mark.parametrize("state", [
    "{truncated",
    json.dumps({"format": "aios-lab.freq-governor-state", "pid": "x", "policies": []}),
    json.dumps({"format": "aios-lab.freq-governor-state", "pid": 1, "policies": [5]}),
    json.dumps({"format": "aios-lab.freq-governor-state", "pid": 1,
                "policies": [{"name": "../../etc", "mode": "setspeed", "governor": "x"}]}),
    "[" * 100_000 + "]" * 100_000,
])
def test_11_corrupt_state_files(tmp_path, state):
    f = tmp_path / "state.json"
    f.write_text(state)
    before = snapshot(tmp_path)
    fails(["freq", "restore", "--state-file", str(f), "--root", str(tmp_path)], exit_codes.BAD_INPUT)
    res = CliRunner().invoke(main, ["freq", "status", "--root", str(tmp_path)],
                             env={"AIOS_LAB_FREQ_STATE": str(f)})
    assert res.exit_code == 0 and "governor state: " in res.output and "Traceback" not in res.output, res.output
    assert snapshot(tmp_path) == before


def test_11_environment_variables(tmp_path):
    env_cases = [({"AIOS_LAB_ROOT": str(tmp_path / "nowhere")}, "AIOS_LAB_ROOT"),
                 ({"AIOS_LAB_POLICY_PATH": str(tmp_path / "nowhere")}, "AIOS_LAB_POLICY_PATH")]
    for env, name in env_cases:
        assert name in fails(["policy", "list"], exit_codes.ENVIRONMENT, env=env)
    from aios_lab.bpf import libbpf
    from aios_lab.errors import SetupError

    for target, match in ((tmp_path, "is a directory"), (tmp_path / "none.so", "does not exist")):
        os.environ["AIOS_LAB_LIBBPF"] = str(target)
        try:
            with pytest.raises(SetupError, match=match):
                libbpf.find_libbpf()
        finally:
            del os.environ["AIOS_LAB_LIBBPF"]


def test_11_a_library_that_is_not_libbpf(tmp_path):
    code = ("import os, sys; from aios_lab.bpf import libbpf; from aios_lab.errors import SetupError\n"
            "try:\n    libbpf.lib()\nexcept SetupError as e:\n    print(e.one_line()); sys.exit(0)\n"
            "sys.exit(1)")
    libc = subprocess.run([sys.executable, "-c", "import ctypes.util; print(ctypes.util.find_library('c'))"],
                          capture_output=True, text=True).stdout.strip()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "AIOS_LAB_LIBBPF": f"/lib/x86_64-linux-gnu/{libc}"})
    assert r.returncode == 0 and "is not libbpf" in r.stdout, r.stdout + r.stderr


# -- 12. deploy checks its options first --------------------------------------------------------

@pytest.mark.parametrize("args, code", [
    (["--interval", "0"], exit_codes.USAGE),
    (["--interval", "-5"], exit_codes.USAGE),
    (["--interval", "nan"], exit_codes.USAGE),
    (["--duration", "inf"], exit_codes.USAGE),
    (["--retrain-every", "nan"], exit_codes.USAGE),
    (["--", "no-such-prog-x"], exit_codes.COMMAND_FAILED),
    (["--durration", "1"], exit_codes.USAGE),
])
def test_12_deploy_options_before_the_sched_ext_check(args, code):
    out = fails(["deploy", "fifo", *args], code)
    assert "sched_ext" not in out


# -- the contract -------------------------------------------------------------------------------

def test_the_exit_code_table_is_the_readme_table():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(line.split("|")[1]) for line in section.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert rows == set(exit_codes.TABLE)
    assert len(set(exit_codes.TABLE)) == len(exit_codes.TABLE)


def test_every_typed_error_has_its_code():
    from aios_lab import errors as E

    assert exit_codes.code_for(E.TraceError("x")) == 3
    assert exit_codes.code_for(E.CpufreqUnavailable("x")) == 4
    assert exit_codes.code_for(E.CpufreqPermissionError("x")) == 4
    assert exit_codes.code_for(E.SchedulerEjected("x")) == 5
    assert exit_codes.code_for(E.CommandFailed("x")) == 6
    assert exit_codes.code_for(KeyboardInterrupt()) == 130
    assert exit_codes.code_for(E.BpfLoadError("x")) == 1
    for cls in vars(E).values():
        if isinstance(cls, type) and issubclass(cls, E.AiosError):
            assert exit_codes.code_for(cls.__new__(cls)) in exit_codes.TABLE
