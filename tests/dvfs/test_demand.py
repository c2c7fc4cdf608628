"""Demand replayed from the recorded traces in workloads/dvfs/traces
(dvfs.demand.from_trace): what the simulator is trained and evaluated on.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from aios_lab.dvfs.demand import from_trace, kind_of_trace
from aios_lab.errors import TraceError
from aios_lab.telemetry.trace import Trace

from tests.helpers import REPO

TRACES = REPO / "workloads" / "dvfs" / "traces"
FRAMES1 = TRACES / "frames-1"
ALL = sorted(p.name for p in TRACES.iterdir() if (p / "metadata.json").is_file())
KIND = {"bursty": "interactive", "frames": "periodic", "build": "throughput"}


def _tasks(path: Path):
    return Trace.open(path).arrow("task_intervals").to_pandas()


def _intervals(path: Path) -> np.ndarray:
    """(start, end) ns of each collection interval in which some task other than the
    collector ran, in time order (intervals where only the collector ran bring no work)."""
    t = _tasks(path)
    pid = json.loads((path / "metadata.json").read_text())["collector"]["pid"]
    t = t[(t["tgid"] != pid) & (t["comm"] != "aios-lab") & (t["last_cpu"] >= 0)]
    return (t[["interval_start_ns", "interval_end_ns"]].drop_duplicates()
            .sort_values("interval_start_ns").to_numpy())


def test_the_recorded_traces_are_there():
    assert {f"{k}-{i}" for k in KIND for i in (1, 2, 3)} <= set(ALL)


def test_frames_1_is_a_periodic_two_cpu_demand():
    d = from_trace(FRAMES1)
    meta = json.loads((FRAMES1 / "metadata.json").read_text())
    assert d.kind == "periodic"
    assert d.nr_cpus == 2 == len(meta["topology"]["cpus"])
    assert d.name == "frames-1" and d.source == str(FRAMES1)
    assert d.meta["collector_pid"] == meta["collector"]["pid"]
    assert d.meta["interval_ms"] == 10


def test_frames_1_intervals_and_deadlines():
    d = from_trace(FRAMES1)
    b = _intervals(FRAMES1)
    lengths = (b[:, 1] - b[:, 0]) / 1e9
    assert len(d.starts_s) == len(b) > 1000
    assert d.starts_s[0] == 0 and np.all(np.diff(d.starts_s) > 0)
    assert np.allclose(d.starts_s, (b[:, 0] - b[0, 0]) / 1e9)
    assert d.duration_s == pytest.approx((b[-1, 1] - b[0, 0]) / 1e9)
    assert 19 < d.duration_s < 22          # a 20 s workload
    # an interval's work is due no earlier than the interval's end
    assert np.all(d.deadline_s >= lengths - 1e-12)


@pytest.mark.parametrize("name", ALL)
def test_per_interval_work_never_exceeds_the_interval(name):
    d = from_trace(TRACES / name)
    b = _intervals(TRACES / name)
    lengths = (b[:, 1] - b[:, 0]) / 1e9
    assert d.work_s.shape == (len(b), d.nr_cpus)
    assert np.all(d.work_s >= 0)
    assert np.all(d.work_s <= lengths[:, None] + 1e-12), name
    assert d.kind == KIND[name.split("-")[0]]


def test_frames_1_leaves_the_collector_out():
    d = from_trace(FRAMES1)
    meta = json.loads((FRAMES1 / "metadata.json").read_text())
    pid = meta["collector"]["pid"]
    t = _tasks(FRAMES1)
    t = t[t["last_cpu"] >= 0]
    everything = t["oncpu_ns"].sum() / 1e9
    collector = t.loc[t["tgid"] == pid, "oncpu_ns"].sum() / 1e9
    assert collector > 1.0, "the collector ran for seconds in this trace: a meaningful check"
    assert d.total_work_s < everything - 0.99 * collector
    # nothing else is lost: per-interval clipping moved no work out of this trace
    assert d.total_work_s == pytest.approx(everything - collector, abs=1e-6)


def test_the_collector_pid_alone_is_enough_to_leave_a_process_out(tmp_path):
    """Point metadata's collector.pid at the workload (python3): its work disappears from the demand."""
    t = _tasks(FRAMES1)
    work_by_tgid = t[(t["comm"] == "python3") & (t["last_cpu"] >= 0)].groupby("tgid")["oncpu_ns"].sum()
    victim = int(work_by_tgid.idxmax())
    victim_s = work_by_tgid.max() / 1e9
    assert victim_s > 1.0
    copy = tmp_path / "frames-1"
    shutil.copytree(FRAMES1, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    meta["collector"]["pid"] = victim
    (copy / "metadata.json").write_text(json.dumps(meta))
    base, other = from_trace(FRAMES1), from_trace(copy)
    # the real collector (comm aios-lab) is still left out by name; the victim is now too
    assert other.total_work_s < base.total_work_s - 0.99 * victim_s
    assert other.meta["collector_pid"] == victim


def test_frames_1_total_work_is_plausible():
    d = from_trace(FRAMES1)
    capacity = d.nr_cpus * d.duration_s
    assert 0.10 * capacity < d.total_work_s < 0.90 * capacity
    assert 0.10 < d.utilisation() < 0.90


@pytest.mark.parametrize("name", ALL)
def test_every_trace_replays_with_plausible_load(name):
    d = from_trace(TRACES / name)
    assert 0.05 < d.utilisation() < 0.95, (name, d.utilisation())


def test_kind_can_be_forced_and_deadline_scaled():
    d = from_trace(FRAMES1, kind="throughput", deadline_intervals=3.0)
    b = _intervals(FRAMES1)
    assert d.kind == "throughput"
    assert np.allclose(d.deadline_s, 3.0 * (b[:, 1] - b[:, 0]) / 1e9)


def test_kind_of_trace_reads_the_workload_command():
    assert kind_of_trace({"workload": {"command": ["python3", "workloads/dvfs/frames.py"]}}) == "periodic"
    assert kind_of_trace({"workload": {"command": ["sh", "workloads/build/run.sh", "build"]}}) == "throughput"
    assert kind_of_trace({"workload": {"command": ["python3", "workloads/dvfs/bursty.py"]}}) == "interactive"
    assert kind_of_trace({}) == "interactive"
    assert kind_of_trace({"workload": {"command": None}}) == "interactive"


# -- broken traces ------------------------------------------------------------------------

def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "trace"
    shutil.copytree(FRAMES1, dst)
    return dst


def test_missing_trace(tmp_path):
    with pytest.raises(TraceError, match="no such directory"):
        from_trace(tmp_path / "absent")


def test_a_file_is_not_a_trace(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(TraceError, match="not a directory"):
        from_trace(f)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_damaged_task_intervals(tmp_path, damage):
    d = _copy(tmp_path)
    p = d / "task_intervals.parquet"
    if damage == "truncate":
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif damage == "garbage":
        p.write_bytes(b"not parquet at all " * 64)
    else:
        p.unlink()
    with pytest.raises(TraceError, match="task_intervals"):
        from_trace(d)


@pytest.mark.parametrize("text", ['{"schema_version": ', "", "[]"])
def test_damaged_metadata(tmp_path, text):
    d = _copy(tmp_path)
    (d / "metadata.json").write_text(text)
    with pytest.raises(TraceError, match="metadata.json"):
        from_trace(d)


def test_missing_metadata(tmp_path):
    d = _copy(tmp_path)
    (d / "metadata.json").unlink()
    with pytest.raises(TraceError, match="metadata.json"):
        from_trace(d)


def test_a_trace_without_task_rows_has_no_demand(tmp_path):
    d = _copy(tmp_path)
    p = d / "task_intervals.parquet"
    empty = pq.read_table(p).slice(0, 0)
    pq.write_table(empty, p)
    meta = json.loads((d / "metadata.json").read_text())
    meta["rows"]["task_intervals"] = 0
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(TraceError, match="no task_intervals rows"):
        from_trace(d)


def test_a_trace_with_only_the_collector_has_no_demand(tmp_path):
    d = _copy(tmp_path)
    p = d / "task_intervals.parquet"
    tab = pq.read_table(p)
    pid = json.loads((d / "metadata.json").read_text())["collector"]["pid"]
    only = tab.filter(pq.ParquetFile(p).read().column("tgid").to_numpy() == pid)
    assert only.num_rows > 0
    pq.write_table(only, p)
    meta = json.loads((d / "metadata.json").read_text())
    meta["rows"]["task_intervals"] = only.num_rows
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(TraceError, match="no intervals with workload tasks"):
        from_trace(d)
