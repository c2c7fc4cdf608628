"""Per-activation demand cut from the switch stream (dvfs.activation, SIMULATED use)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aios_lab.dvfs import units
from aios_lab.dvfs.activation import activations, from_switches
from aios_lab.dvfs.demand import from_trace
from aios_lab.dvfs.experiment import load_demands, split, traces_dir
from aios_lab.dvfs.platform import load_cluster
from aios_lab.dvfs.sim import Simulation, simulate
from aios_lab.dvfs.governors import Schedutil
from aios_lab.errors import ModelError, TraceError

MS = 1_000_000
R, S = 0, 1
SWITCHES = traces_dir("activation")


def _sw(rows):
    """rows: (ts_ms, cpu, prev_pid, prev_state, next_pid, next_wait_ms or None[, next_tgid])"""
    out = []
    for r in rows:
        ts, cpu, prev, state, nxt, wait = r[:6]
        tgid = r[6] if len(r) > 6 else nxt
        out.append({"ts_ns": int(ts * MS), "cpu": cpu, "prev_pid": prev, "prev_state": state, "next_pid": nxt,
                    "next_tgid": tgid, "next_wait_ns": None if wait is None else int(wait * MS)})
    return pd.DataFrame(out)


def _acts(rows, **kw):
    a = activations(_sw(rows), chunk_ns=10 * MS, **kw)
    return [(int(t) / MS, int(c), int(p), int(w) / MS, int(x)) for t, c, p, w, x in
            zip(a.arrival_ns, a.cpu, a.task, a.work_ns, a.activation)], a


def test_an_activation_runs_from_its_wakeup_until_it_sleeps_across_preemptions():
    rows = [(0, 0, 0, R, 7, 1.0),      # 7 switched in after a 1 ms wait: woke at -1 ms
            (3, 0, 7, R, 8, 0.2),      # 7 preempted (R): its activation goes on; 8 woke at 2.8 ms
            (5, 0, 8, S, 7, 2.0),      # 8 sleeps after 2 ms
            (7, 0, 7, S, 0, None),     # 7 sleeps: one activation of 3 + 2 ms
            (9, 0, 0, R, 9, None)]     # the CPU's last switch: no end, not counted
    got, a = _acts(rows)
    assert got == [(-1.0, 0, 7, 5.0, 0), (2.8, 0, 8, 2.0, 1)]
    assert a.nr_activations == 2 and a.unknown_ends == 0
    assert a.lengths_ns().tolist() == [5 * MS, 2 * MS]


def test_a_long_activation_arrives_in_interval_chunks_at_the_pace_it_ran():
    # 25 ms of run from a wakeup at 19.5 ms, preempted 5 ms on the way and
    # finished on CPU 1: chunks of 10, 10 and 5 ms arrive when it had run 0, 10, 20 ms
    rows = [(20, 0, 0, R, 7, 0.5),
            (32, 0, 7, R, 0, None),    # preempted after 12 ms (ran 0..12)
            (37, 1, 0, R, 7, 5.0),     # back on CPU 1: ran 12..25 between 37 and 50
            (50, 1, 7, S, 0, None),
            (60, 0, 0, R, 0, None), (60, 1, 0, R, 0, None)]
    got, _ = _acts(rows)
    assert got == [(19.5, 0, 7, 10.0, 0), (30.0, 0, 7, 10.0, 0), (45.0, 1, 7, 5.0, 0)]


def test_the_collector_idle_task_and_untraced_switch_outs():
    rows = [(0, 0, 0, R, 5, None, 99),     # the collector (tgid 99): left out
            (1, 0, 5, S, 7, None),
            (4, 0, 8, S, 0, None),         # 8 switched out, but 7 was switched in: 7's end unknown
            (6, 0, 0, R, 7, None),         # so 7 goes on here: one activation, 3 + 2 ms
            (8, 0, 7, S, 0, None),
            (9, 0, 0, R, 0, None)]
    got, a = _acts(rows, drop_tgid=99)
    assert got == [(1.0, 0, 7, 5.0, 0)]
    assert a.unknown_ends == 1
    none, _ = _acts([(0, 0, 0, R, 0, None), (1, 0, 0, R, 0, None)])
    assert none == []


def test_chunks_must_be_positive():
    with pytest.raises(ValueError):
        activations(_sw([(0, 0, 0, R, 7, None)]), chunk_ns=0)


# ------------------------------------------------------------ recorded traces

@pytest.fixture(scope="module")
def bursty():
    return from_switches(SWITCHES / "bursty-1")


def test_a_recorded_trace_keeps_every_tasks_run_time(bursty):
    """Per workload task, the activations' work is the task's on-CPU time in
    task_intervals (the two streams count the same switches; what differs is
    the first and last segment of each CPU, cut at the trace's ends)."""
    per_interval = from_trace(SWITCHES / "bursty-1")
    ta = pd.Series(bursty.tasks.work).groupby(bursty.tasks.task).sum()
    tb = pd.Series(per_interval.tasks.work).groupby(per_interval.tasks.task).sum()
    top = tb.sort_values().index[-2:]            # the two bursty.py workers
    assert tb[top].min() > 3.0
    np.testing.assert_allclose(ta[top], tb[top], rtol=0.01)
    assert bursty.total_work_s == pytest.approx(per_interval.total_work_s, rel=0.05)


def test_items_are_activations_no_longer_than_an_interval(bursty):
    ts = bursty.tasks
    assert ts.work.max() <= 0.010 + 1e-12
    assert bursty.meta["unit"] == "activation"
    # bursty.py's workers wake for bursts of a few ms: many more items than 10 ms intervals hold
    per_interval = from_trace(SWITCHES / "bursty-1")
    assert (bursty.work_s > 0).sum() > 1.2 * (per_interval.work_s > 0).sum()
    # arrivals on the 1 ms step, deadlines of the per-interval demand (2 intervals of 10 ms)
    assert np.allclose(bursty.starts_s * 1000, np.round(bursty.starts_s * 1000))
    assert np.allclose(bursty.deadline_s, 0.02)


def test_the_simulator_reports_each_activation_and_schedutil_runs_it(bursty):
    d = bursty.window(2.0, 2.0)
    sim = Simulation(load_cluster("gs101:big"), d)
    while not sim.done:
        sim.advance()
    lengths = sorted(w for _, w in sim.task_done)
    assert lengths == pytest.approx(sorted(d.tasks.work.tolist()))
    r = simulate(load_cluster("gs101:big"), d, Schedutil())
    assert r.items == int((d.work_s > 0).sum()) and r.energy_j > 0


def _copy(tmp_path, name="bursty-1"):
    dst = tmp_path / name
    shutil.copytree(SWITCHES / name, dst)
    return dst


def test_a_sampled_switch_stream_is_refused(tmp_path):
    dst = _copy(tmp_path)
    t = pq.read_table(dst / "switches.parquet")
    w = t.column("sample_weight").to_numpy().copy()
    w[::3] = 4
    t = t.set_column(t.schema.get_field_index("sample_weight"), "sample_weight", pa.array(w, type=pa.int32()))
    pq.write_table(t, dst / "switches.parquet")
    with pytest.raises(TraceError, match="sampled") as e:
        from_switches(dst)
    assert "--stream-budget 0" in e.value.hint


def test_a_trace_without_switches_is_refused():
    with pytest.raises(TraceError, match="no switches rows"):
        from_switches(traces_dir() / "bursty-1")     # the older recordings kept no switch stream


def test_units_name_their_folder_and_loader():
    assert units.names() == ["activation", "interval"]
    train, test = split(3, unit="activation")
    assert [p.name for p in test] == ["bursty-3", "frames-3", "build-3"]
    assert all(p.parent == SWITCHES and (p / "switches.parquet").is_file() for p in train + test)
    d, = load_demands([test[0]], unit="activation")
    assert d.meta["unit"] == "activation"
    with pytest.raises(ModelError, match="unknown demand unit"):
        units.get("wakeup")


# ------------------------------------------------------------ the program prior

def _forks(n: int = 40):
    """Every 10 ms a new task wakes on CPU 0: even ones are compilers ("cc1",
    8 ms), odd ones shell children ("sh", 1 ms); each runs once."""
    from aios_lab.dvfs.demand import Demand, TaskSegments

    pids = np.arange(100, 100 + n)
    work = np.where(np.arange(n) % 2 == 0, 0.008, 0.001)
    w = np.zeros((n, 2))
    w[:, 0] = work
    names = {int(p): ("cc1" if i % 2 == 0 else "sh") for i, p in enumerate(pids)}
    return Demand("forks", "interactive", np.arange(n) * 0.01, w, 0.02, n * 0.01,
                  tasks=TaskSegments(np.arange(n), np.zeros(n), pids, work), task_names=names)


@pytest.mark.parametrize("prior", ["program", "mean"])
def test_an_unseen_task_is_estimated_by_its_programs_first_activations(prior):
    from aios_lab.dvfs.task_signal import SignalConfig

    d = _forks()
    sim = Simulation(load_cluster("gs101:big"), d, signal=SignalConfig(prior=prior))
    sig = sim.task_signals()
    while sim.t < 0.3:
        sim.advance()
    next_cc1, next_sh = 100 + 30, 100 + 31          # not arrived yet: never seen
    assert next_cc1 not in sig.est and next_sh not in sig.est
    if prior == "program":
        assert sig.estimate(next_cc1) == pytest.approx(0.008)
        assert sig.estimate(next_sh) == pytest.approx(0.001)
    else:                                           # the mean of all: wrong for both
        assert sig.estimate(next_cc1) == pytest.approx(0.0045) == sig.estimate(next_sh)
    # the gathered queue estimates still equal their item-by-item definition, bit for bit
    sim = Simulation(load_cluster("gs101:big"), d, start_opp=0, signal=SignalConfig(prior=prior))
    sig = sim.task_signals()
    sim.request(0)
    while not sim.done:
        sim.advance()
        assert sig.queued() == sig.queued_by_item()


def test_a_demand_without_names_keeps_the_mean_prior_and_a_bad_prior_is_refused():
    from aios_lab.dvfs.task_signal import SignalConfig

    d = _forks()
    d.task_names = None
    sim = Simulation(load_cluster("gs101:big"), d)
    sig = sim.task_signals()
    while sim.t < 0.3:
        sim.advance()
    assert sig.estimate(130) == pytest.approx(0.0045)
    with pytest.raises(ValueError, match="unknown prior"):
        SignalConfig(prior="oracle")


def test_a_recorded_trace_names_its_tasks_by_their_first_program():
    d = from_switches(SWITCHES / "build-1")
    assert set(d.task_names) == set(np.unique(d.tasks.task).tolist())
    # gcc forks the compiler: its children first run as "gcc", then exec cc1 or as
    assert sum(n == "gcc" for n in d.task_names.values()) > 50
    assert d.window(1.0, 2.0).task_names is d.task_names and d.fold(1).task_names is d.task_names
