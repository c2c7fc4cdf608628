"""Running sweeps on the local executor: real cells (the DVFS simulator on
recorded traces), idempotent runs, a killed cell retried, a killed driver
resumed, failures with their own exit status, status and duckdb results."""
import json
import os
import shutil
import signal
import subprocess

import pytest
from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.sweep.errors import SweepError
from aios_lab.sweep.executors import LocalExecutor
from aios_lab.sweep.layout import SweepDir
from aios_lab.sweep.runner import plan_sweep, run_sweep
from aios_lab.sweep.status import results_frame, status, summarise, traces
from tests.helpers.sweep import cli, published, spawn, stop_a_running_cell, stop_mid_cell, write_spec


def _simulate_directly(governor: str, trace: str, window_s: float) -> dict:
    from aios_lab.dvfs.demand import from_trace
    from aios_lab.dvfs.experiment import traces_dir
    from aios_lab.dvfs.governors import builtin
    from aios_lab.dvfs.platform import load_cluster
    from aios_lab.dvfs.sim import simulate

    c = load_cluster("gs101:big")
    d = from_trace(traces_dir() / trace)
    return simulate(c, d.window(0.0, window_s).fold(c.nr_cpus), builtin(governor)).as_dict()


def test_a_sweep_runs_every_cell_once_and_a_second_run_skips_them(tmp_path):
    spec = write_spec(tmp_path / "s.toml", governors=["schedutil", "performance"], traces=["bursty-1", "frames-1"],
                      window_s=3.0)
    p = plan_sweep(spec, tmp_path / "out")
    events = []
    rep = run_sweep(p.sweep, LocalExecutor(jobs=2), progress=lambda e, c, n: events.append((e, n.done)))
    assert (rep.total, rep.ran, rep.skipped, rep.failed, rep.attempts) == (4, 4, 0, [], 4)
    assert events[0] == ("begin", 0) and events[-1] == ("done", 4)
    for cell in p.cells:
        res = json.loads((p.sweep.cell_dir(cell) / "result.json").read_text())
        assert res["cell"]["hash"] == cell.hash and res["status"] == "ok"
        assert res["provenance"]["host"]["hostname"] and res["provenance"]["git"]["revision"]
        # the cell's figures are the simulator's own, not something the sweep made up
        direct = _simulate_directly(cell.params["governor"], cell.params["trace"], 3.0)
        assert res["metrics"]["energy_j"] == direct["energy_j"] and res["metrics"]["misses"] == direct["misses"]
    before = {c.hash: (p.sweep.cell_dir(c) / "result.json").stat().st_mtime_ns for c in p.cells}
    again = run_sweep(p.sweep, LocalExecutor(jobs=2))
    assert (again.ran, again.skipped, again.attempts) == (0, 4, 0)
    assert before == {c.hash: (p.sweep.cell_dir(c) / "result.json").stat().st_mtime_ns for c in p.cells}
    assert [r["event"] for r in p.sweep.runs()] == ["start", "end", "start", "end"]
    assert not p.sweep.staging_dirs()


def test_results_are_read_through_the_layout_with_duckdb(tmp_path):
    import duckdb

    spec = write_spec(tmp_path / "s.toml", governors=["schedutil", "performance"], traces=["bursty-1", "frames-1"],
                      window_s=2.0, repeat=2)
    p = plan_sweep(spec, tmp_path / "out")
    run_sweep(p.sweep, LocalExecutor(jobs=2))
    df = results_frame(p.sweep)
    assert len(df) == 8 and set(df["governor"]) == {"schedutil", "performance"} and set(df["rep"]) == {0, 1}
    g = summarise(df, ["governor"], ["energy_j"])
    # performance runs the top OPP all the time: it costs more energy than schedutil on the same work
    assert g.loc["performance", ("energy_j", "mean")] > g.loc["schedutil", ("energy_j", "mean")]
    assert g.loc["performance", ("energy_j", "count")] == 4
    # and a researcher's own SQL over the same layout, as docs/sweep.md shows it
    n = duckdb.connect().execute(f"SELECT count(*) FROM read_json_auto('{p.sweep.results_glob()}', hive_partitioning = true) "
                   "WHERE governor = 'schedutil' AND trace = 'frames-1'").fetchone()[0]
    assert n == 2
    res = CliRunner().invoke(main, ["sweep", "results", str(p.sweep.root), "--by", "governor",
                                    "--metric", "energy_j", "--csv", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    assert "performance" in res.output and "energy_j" in res.output
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 9
    res = CliRunner().invoke(main, ["sweep", "results", str(p.sweep.root), "--by", "policy"])
    assert res.exit_code == 3 and "no column policy" in res.output


def test_a_cell_whose_process_is_killed_is_retried(tmp_path):
    spec = write_spec(tmp_path / "s.toml", retries=2, window_s=4.0)
    plan_sweep(spec, tmp_path / "out")
    root = tmp_path / "out"
    with spawn("sweep", "run", str(root), "--jobs", "2", "--quiet") as driver:
        pid, staging = stop_a_running_cell(root)
        victim = staging.name.split("-")[0]  # staging folders are named HASH-RANDOM
        os.kill(pid, signal.SIGKILL)
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
        assert "12 cells run" in out and "1 retried" in out
        res = [json.loads(p.read_text()) for p in (root / "cells").rglob("result.json")]
        assert len(res) == 12
        assert [r["attempt"] for r in res if r["cell"]["hash"] == victim] == [2]


def test_a_killed_driver_leaves_no_half_cell_and_the_sweep_resumes(tmp_path):
    spec = write_spec(tmp_path / "s.toml", window_s=4.0)
    plan_sweep(spec, tmp_path / "out")
    root = tmp_path / "out"
    with spawn("sweep", "run", str(root), "--jobs", "2", "--quiet") as driver:
        inflight = stop_mid_cell(driver.pid, root)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its worker processes
        driver.communicate(timeout=60)
        done_before = published(root)
        assert len(done_before) < 12
        assert inflight and all(d.name.split("-")[0] not in done_before for d in inflight)
        sd = SweepDir(root)
        st = status(sd)
        assert st.done == len(done_before) and not st.driver_running and st.running == []
        # resume: only the unfinished cells run; the dead driver's staging folders are discarded
        rep = run_sweep(sd, LocalExecutor(jobs=2))
        assert rep.skipped == len(done_before) and rep.ran == 12 - len(done_before)
        assert rep.cleared_staging >= len(inflight) and not rep.failed
        assert len(published(root)) == 12 and not sd.staging_dirs()


def test_a_cell_that_keeps_failing_is_reported_with_exit_status_3_then_rerun(tmp_path):
    table = tmp_path / "table.json"
    spec = write_spec(tmp_path / "s.toml", governors=["schedutil", f"table:{table}"], traces=["bursty-1"],
                      window_s=2.0, retries=1)
    plan_sweep(spec, tmp_path / "out")
    root = tmp_path / "out"
    r = subprocess.run(cli("sweep", "run", str(root), "--quiet"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 7, r.stderr
    assert "1 cells run" in r.stdout and "1 failed" in r.stdout and "1 retried" in r.stdout
    assert "failed:" in r.stderr and "does not exist" in r.stderr
    st = status(SweepDir(root))
    assert (st.done, len(st.failed), st.pending) == (1, 1, 0)
    (failure,) = st.failed.values()
    assert failure["attempts"] == 2 and "ModelError" in failure["error"] and "Traceback" in failure["traceback"]
    out = CliRunner().invoke(main, ["sweep", "status", str(root)])
    assert out.exit_code == 0 and "1 done, 1 failed, 0 pending" in out.output and "does not exist" in out.output
    # the cause fixed, the next run gives the failed cell fresh attempts
    from aios_lab.dvfs.table import FreqTable, save_table

    save_table(table, FreqTable.constant(512))
    r = subprocess.run(cli("sweep", "run", str(root), "--quiet"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 cells run, 1 already done, 0 failed" in r.stdout
    assert status(SweepDir(root)).failed == {}


def test_max_cells_stops_early_and_status_counts_the_rest(tmp_path):
    spec = write_spec(tmp_path / "s.toml", window_s=2.0)
    p = plan_sweep(spec, tmp_path / "out")
    rep = run_sweep(p.sweep, LocalExecutor(jobs=2), max_cells=5)
    assert rep.ran == 5 and rep.stopped_early
    # the first cells of the recorded order ran, not the first of the grid
    assert published(p.sweep.root) == {c.hash for c in p.cells[:5]}
    res = CliRunner().invoke(main, ["sweep", "status", str(p.sweep.root), "--json"])
    st = json.loads(res.output)
    assert (st["done"], st["pending"], st["failed"]) == (5, 7, 0)


def test_two_drivers_cannot_run_one_sweep(tmp_path):
    p = plan_sweep(write_spec(tmp_path / "s.toml", window_s=2.0), tmp_path / "out")
    other = SweepDir(p.sweep.root)
    other.lock()
    try:
        with pytest.raises(SweepError, match="another `sweep run` is running"):
            run_sweep(p.sweep, LocalExecutor(jobs=1))
        assert status(p.sweep).driver_running
    finally:
        other.unlock()


def test_a_folder_holding_another_cell_is_refused(tmp_path):
    p = plan_sweep(write_spec(tmp_path / "s.toml", governors=["schedutil"], traces=["bursty-1"], window_s=2.0),
                   tmp_path / "out")
    run_sweep(p.sweep, LocalExecutor(jobs=1))
    (cell,) = p.cells
    path = p.sweep.cell_dir(cell) / "result.json"
    res = json.loads(path.read_text())
    res["cell"]["hash"] = "0" * 16
    path.write_text(json.dumps(res))
    with pytest.raises(SweepError, match="holds another cell"):
        run_sweep(p.sweep, LocalExecutor(jobs=1))


def test_sweep_compare_groups_the_cells_traces_by_a_parameter(tmp_path):
    """The layout side of `sweep compare`: cells with a trace/ (as vm-bench
    writes) are found and labelled by their parameters. The traces here are
    recorded telemetry traces copied into a planned sweep's cell folders."""
    from aios_lab.dvfs.experiment import traces_dir
    from aios_lab.sweep.worker import execute

    p = plan_sweep(write_spec(tmp_path / "s.toml", governors=["schedutil", "performance"],
                              traces=["bursty-1", "bursty-2"], window_s=1.0), tmp_path / "out")
    # A distinct recording per cell: compare refuses one run counted twice.
    recordings = iter(sorted(p.name for p in traces_dir().iterdir() if (p / "metadata.json").is_file()))
    for cell in p.cells:
        staging = p.sweep.new_staging(cell)
        assert execute(cell, staging)
        shutil.copytree(traces_dir() / next(recordings), staging / "trace")
        p.sweep.publish(cell, staging)
    found = traces(p.sweep, ["governor"], {"trace": "bursty-1"})
    assert sorted(lab for lab, _ in found) == ["performance", "schedutil"]
    assert all(t.name == "trace" and (t / "metadata.json").is_file() for _, t in found)
    res = CliRunner().invoke(main, ["sweep", "compare", str(p.sweep.root), "--by", "governor",
                                    "--baseline", "schedutil"])
    assert res.exit_code == 0, res.output
    assert "baseline: schedutil   runs: schedutil x2, performance x2" in res.output
    res = CliRunner().invoke(main, ["sweep", "compare", str(p.sweep.root), "--by", "governor",
                                    "--where", "trace=nope"])
    assert res.exit_code == 3 and "compare needs two" in res.output


def test_a_dvfs_train_cell_trains_saves_and_evaluates_a_table(tmp_path):
    """One RL episode (the cell's code path, not a useful table): the table is
    saved in the cell's folder and judged against schedutil on held-out runs."""
    from aios_lab.dvfs.table import load_table
    from aios_lab.sweep import cells

    kind = cells.get("dvfs-train")
    params = kind.validate({"method": "rl", "episodes": 1, "test_run": 2})
    m = kind().run(params, 0, tmp_path)
    assert m["test"] == ["bursty-2", "frames-2", "build-2"]
    assert load_table(tmp_path / m["table"]).perf.shape == (16, 4)
    assert m["energy_x"] == pytest.approx(m["energy_j"] / m["schedutil_energy_j"])
    assert m["schedutil_energy_j"] > 0 and m["simulated"] is True
    json.dumps(m)


def _signal_then_sleep(event, seconds: float) -> None:
    import time

    event.set()
    time.sleep(seconds)


def test_a_forked_cell_process_does_not_keep_the_sweep_locked(tmp_path):
    """flock belongs to the open file, which fork shares: without care a cell
    process outliving its driver (for a moment, or stopped) would block the
    resumed run."""
    import multiprocessing

    sd = SweepDir(tmp_path)
    sd.lock()
    ctx = multiprocessing.get_context("fork")
    running = ctx.Event()
    child = ctx.Process(target=_signal_then_sleep, args=(running, 30))
    child.start()
    # The at-fork hook runs in the child before its target: once the target
    # has run, the child's copy of the lock is closed (waiting for that, not
    # racing it, on a loaded host).
    assert running.wait(60)
    try:
        sd.unlock()  # the driver is gone; its forked child lives on
        again = SweepDir(tmp_path)
        again.lock()
        again.unlock()
    finally:
        child.kill()
        child.join()


def test_sigterm_stops_the_run_cleanly_with_exit_status_130(tmp_path):
    p = plan_sweep(write_spec(tmp_path / "s.toml", window_s=4.0), tmp_path / "out")
    root = p.sweep.root
    with spawn("sweep", "run", str(root), "--jobs", "2", "--quiet") as driver:
        stop_mid_cell(driver.pid, root)
        os.kill(driver.pid, signal.SIGTERM)
        os.kill(driver.pid, signal.SIGCONT)
        out, err = driver.communicate(timeout=120)
        assert driver.returncode == 130, err
        assert "interrupted: finished cells are kept" in err
        assert p.sweep.runs()[-1]["event"] == "interrupted"
        assert not status(p.sweep).driver_running
