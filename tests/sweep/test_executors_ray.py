"""Sweeps on a real local Ray cluster (ray.init here, once for the module; no
mock): the same results as the local executor, a driver killed mid-run and
resumed through --address, failures retried and reported, impossible
resource requests refused."""
import json
import logging
import os
import signal

import pytest

from aios_lab.sweep.errors import ExecutorError
from aios_lab.sweep.executors import LOCAL_NODE_IP, LocalExecutor, RayExecutor
from aios_lab.sweep.layout import SweepDir
from aios_lab.sweep.runner import plan_sweep, run_sweep
from tests.helpers.sweep import published, spawn, stop_mid_cell, write_spec

ray = pytest.importorskip("ray", reason="the Ray extra is not installed: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def cluster():
    # Ray waits a hard-coded 30 s for its raylet to register; on a heavily
    # loaded host (nice 19 under a load of 20+ on 2 cores) that was seen to
    # expire. Starting again is what an operator would do.
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                     _node_ip_address=LOCAL_NODE_IP)
            break
        except Exception as e:  # Ray raises a bare Exception for the timeout
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _metrics(root) -> dict[str, dict]:
    out = {}
    for p in (root / "cells").rglob("result.json"):
        res = json.loads(p.read_text())
        out[res["cell"]["hash"]] = (str(p.parent.relative_to(root)), res["metrics"])
    return out


def test_ray_runs_the_same_sweep_to_the_same_results_as_the_local_executor(cluster, tmp_path):
    spec = write_spec(tmp_path / "s.toml", window_s=3.0, traces=["bursty-1", "frames-1"])
    on_ray = plan_sweep(spec, tmp_path / "ray")
    local = plan_sweep(spec, tmp_path / "local")
    rep = run_sweep(on_ray.sweep, RayExecutor())
    assert (rep.ran, rep.failed) == (8, [])
    run_sweep(local.sweep, LocalExecutor(jobs=2))
    assert _metrics(tmp_path / "ray") == _metrics(tmp_path / "local")
    assert len(_metrics(tmp_path / "ray")) == 8
    assert ray.is_initialized()  # an executor that did not start Ray leaves it running
    (run,) = [r for r in on_ray.sweep.runs() if r["event"] == "end"]
    assert run["executor"] == "ray" and run["address"] == cluster


def test_a_driver_killed_mid_run_on_ray_resumes_through_address(cluster, tmp_path):
    spec = write_spec(tmp_path / "s.toml", window_s=4.0)
    root = tmp_path / "out"
    plan_sweep(spec, root)
    with spawn("sweep", "run", str(root), "--executor", "ray", "--address", cluster, "--quiet") as driver:
        inflight = stop_mid_cell(driver.pid, root)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=60)
        done_before = published(root)
        assert len(done_before) < 12
        assert all(d.name.split("-")[0] not in done_before for d in inflight)
        rep = run_sweep(SweepDir(root), RayExecutor(address=cluster))
        assert rep.skipped == len(done_before) and rep.ran == 12 - len(done_before) and not rep.failed
        assert rep.cleared_staging >= len(inflight)
        assert len(published(root)) == 12 and not SweepDir(root).staging_dirs()


def test_a_failing_cell_on_ray_is_retried_then_reported(cluster, tmp_path):
    spec = write_spec(tmp_path / "s.toml", governors=["schedutil", f"table:{tmp_path / 'missing.json'}"],
                      traces=["bursty-1"], window_s=2.0, retries=2)
    p = plan_sweep(spec, tmp_path / "out")
    rep = run_sweep(p.sweep, RayExecutor())
    assert rep.ran == 1 and rep.retried == 2 and rep.attempts == 4
    ((cell, err),) = rep.failed
    assert cell.params["governor"].startswith("table:") and "does not exist" in err
    assert p.sweep.failures()[cell.hash]["attempts"] == 3


def test_a_resource_no_node_offers_is_refused_not_queued_forever(cluster, tmp_path):
    spec = write_spec(tmp_path / "s.toml", governors=["schedutil"], traces=["bursty-1"], window_s=2.0,
                      extra="\n[resources]\nsched_ext_host = 1\n")
    p = plan_sweep(spec, tmp_path / "out")
    with pytest.raises(ExecutorError, match="no node of the Ray cluster offers sched_ext_host=1"):
        run_sweep(p.sweep, RayExecutor())
    assert [r["event"] for r in p.sweep.runs()] == ["start", "interrupted"]
