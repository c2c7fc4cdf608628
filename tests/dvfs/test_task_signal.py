"""Task identity in the demand and the per-task signal built on it (SIMULATED)."""
from __future__ import annotations

import numpy as np
import pytest

from aios_lab.dvfs import demand
from aios_lab.dvfs.bounds import LADDER, simulate_clairvoyant
from aios_lab.dvfs.demand import Demand, TaskSegments, from_trace
from aios_lab.dvfs.env import FreqEnv
from aios_lab.dvfs.experiment import traces_dir
from aios_lab.dvfs.governors import TableGovernor, TaskTableGovernor, table_governor_for
from aios_lab.dvfs.platform import load_cluster
from aios_lab.dvfs.sim import Simulation, simulate
from aios_lab.dvfs.table import FreqTable
from aios_lab.dvfs.task_signal import SignalConfig, util_est_rule
from aios_lab.errors import ModelError, TraceError

BIG = load_cluster("gs101:big")


def _two_tasks(n: int = 200, long_s: float = 0.008, short_s: float = 0.001) -> Demand:
    """CPU 0 alternates a long task (pid 1) and a short one (pid 2) every 10 ms,
    each due in 10 ms; CPU 1 idles. Per CPU the mean item is their average,
    which is wrong for both."""
    starts = np.arange(n) * 0.01
    task = np.where(np.arange(n) % 2 == 0, 1, 2)
    work = np.where(task == 1, long_s, short_s)
    segs = TaskSegments(np.arange(n), np.zeros(n), task, work)
    w = np.zeros((n, 2))
    w[:, 0] = work
    return Demand("two-tasks", "interactive", starts, w, 0.01, n * 0.01, tasks=segs)


def test_a_trace_keeps_its_tasks_and_their_work_sums_to_the_merged_items():
    d = from_trace(traces_dir() / "frames-1")
    ts = d.tasks
    assert ts is not None and len(np.unique(ts.task)) > 10
    total = np.zeros_like(d.work_s)
    np.add.at(total, (ts.k, ts.cpu), ts.work)
    np.testing.assert_allclose(total, d.work_s, rtol=1e-9, atol=1e-12)
    w = d.window(3.0, 4.0)
    assert w.tasks.k.max() < len(w.starts_s) and w.tasks.work.sum() == pytest.approx(w.work_s.sum())
    f = d.fold(1)
    assert set(f.tasks.cpu.tolist()) == {0} and f.tasks.work.sum() == pytest.approx(d.work_s.sum())


def test_segments_that_do_not_sum_to_the_items_are_refused():
    segs = TaskSegments([0], [0], [7], [0.002])
    with pytest.raises(TraceError, match="do not sum"):
        Demand("bad", "interactive", [0.0], [[0.003, 0.0]], 0.02, 0.02, tasks=segs)
    with pytest.raises(TraceError, match="outside"):
        Demand("bad", "interactive", [0.0], [[0.003, 0.0]], 0.02, 0.02, tasks=TaskSegments([1], [0], [7], [0.003]))


def test_the_simulator_reports_each_tasks_activations_in_completion_order():
    d = _two_tasks(n=4)
    sim = Simulation(BIG, d)
    sim.advance(50)
    assert sim.task_done == [(1, 0.008), (2, 0.001), (1, 0.008), (2, 0.001)]
    # a model demand's items are one anonymous task per CPU
    sim = Simulation(BIG, demand.batch(duration_s=0.05))
    sim.advance(200)
    assert {t for t, _ in sim.task_done} == {-1, -2}


def test_per_task_estimates_follow_the_kernels_util_est_rule():
    assert util_est_rule(2.0, 4.0) == 4.0 and util_est_rule(4.0, 0.0) == 3.0
    sim = Simulation(BIG, _two_tasks(n=40))
    sig = sim.task_signals()
    sim.advance(400)
    sig.queued()   # folds what completed
    assert sig.estimate(1) == pytest.approx(0.008) and sig.estimate(2) == pytest.approx(0.001)
    assert sig.estimate(99) == pytest.approx(0.0045)   # unseen: the mean of every activation
    # each check is (observed length, the estimate made before it): exact once learned
    assert len(sig.errors) > 30 and all(obs == pytest.approx(est) for obs, est in sig.errors[2:])


def test_the_per_task_estimates_do_not_read_the_size_of_queued_items():
    def need(work_s: float) -> float:
        segs = TaskSegments([0], [0], [5], [work_s])
        d = Demand("one", "interactive", [0.0], [[work_s, 0.0]], 0.02, 0.02, tasks=segs)
        sim = Simulation(BIG, d)
        sig = sim.task_signals()
        sim.advance(1)
        return sig.need()[0]

    assert need(0.003) == need(0.008)


def test_the_per_task_rung_beats_the_per_cpu_one_when_tasks_of_two_sizes_share_a_cpu():
    d = _two_tasks()
    per_cpu = simulate_clairvoyant(BIG, d, lookahead_s=0.1, predict_tau_s=0.1, estimate_work=True, work_margin=0.0)
    per_task = simulate_clairvoyant(BIG, d, lookahead_s=0.1, predict_tau_s=0.1, estimate_work="task",
                                    work_margin=0.0)
    assert per_task.misses < per_cpu.misses
    assert "online: per-task estimates, predicted" in dict(LADDER)
    with pytest.raises(ValueError, match="estimate_work"):
        simulate_clairvoyant(BIG, d, estimate_work="pid", predict_tau_s=0.1)


def test_a_task_state_table_is_read_by_its_own_governor_and_round_trips():
    tab = FreqTable.constant(512)
    tab = FreqTable(tab.perf, method="manual", state="task")
    assert isinstance(table_governor_for(tab), TaskTableGovernor)
    assert type(table_governor_for(FreqTable.constant(512))) is TableGovernor
    back = FreqTable.from_dict(tab.to_dict())
    assert back.state == "task" and "state" not in FreqTable.constant(1).to_dict()
    with pytest.raises(ModelError, match="state"):
        FreqTable(tab.perf, state="pids")
    # high need, low need: the task-state table sets the OPP from the estimates, not utilisation
    perf = np.full((16, 4), 100)
    perf[8:, :] = 1024
    r_hi = simulate(BIG, _two_tasks(), table_governor_for(FreqTable(perf, state="task")))
    r_lo = simulate(BIG, _two_tasks(), table_governor_for(FreqTable(np.full((16, 4), 100), state="task")))
    assert r_hi.energy_j > r_lo.energy_j and r_hi.misses < r_lo.misses


def test_the_rl_environment_observes_the_task_state():
    env = FreqEnv(BIG, [_two_tasks()], state="task")
    obs, _ = env.reset(seed=0)
    seen = set()
    for _ in range(100):
        obs, _, done, _, _ = env.step(BIG.nr_opps - 1)
        assert env.observation_space.contains(obs)
        seen.add((int(obs[0]), int(obs[1])))
        if done:
            break
    assert len(seen) > 1
    with pytest.raises(ValueError, match="rule"):
        SignalConfig(rule="median")


def test_a_task_state_table_is_refused_by_the_in_kernel_deploy_in_one_line():
    from aios_lab.sched.kinds.freq_table.slots import check_table

    with pytest.raises(ModelError, match="simulator only") as e:
        check_table(FreqTable(np.full((16, 4), 512), state="task"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("opp", [0, 6])
def test_the_cached_queued_estimates_equal_their_item_by_item_definition_bit_for_bit(opp):
    # a low OPP: the queue grows to dozens of items, estimates change as activations complete
    d = from_trace(traces_dir() / "build-1").window(2.0, 1.5)
    sim = Simulation(BIG, d, start_opp=opp)
    sig = sim.task_signals()
    sim.request(opp)
    longest = 0
    while not sim.done:
        sim.advance(1)
        assert sig.queued() == sig.queued_by_item()      # exact floats, not approx
        longest = max(longest, max(len(q) for q in sim.queues))
    assert longest > (20 if opp == 0 else 0) and len(sig.errors) > 50
    # a model demand: one anonymous task per CPU, through the same rows
    sim = Simulation(BIG, demand.batch(duration_s=0.2), start_opp=0)
    sig = sim.task_signals()
    for _ in range(300):
        sim.advance(1)
        assert sig.queued() == sig.queued_by_item()


def test_the_item_task_rows_are_the_queued_items_tasks_in_order():
    d = from_trace(traces_dir() / "frames-1").window(0.0, 1.0)
    it = d.item_tasks
    assert d.item_tasks is it                             # computed once per demand
    sim = Simulation(BIG, d, start_opp=0)
    sim.advance(600)
    inv = {i: t for t, i in it.index.items()}
    for cpu, q in enumerate(sim.queues):
        lo = sim.completed[cpu]
        for row, item in zip(it.rows[cpu][lo:lo + len(q)], q):
            assert [inv[i] for i in row if i != it.nr_tasks] == [t for t, _ in item.segments]


def test_the_expectile_rule_rises_a_quarter_of_the_way_and_settles_between_the_mean_and_the_longest():
    from aios_lab.dvfs.task_signal import RULES, expectile_rule

    assert expectile_rule(2.0, 6.0) == 3.0 and expectile_rule(6.0, 2.0) == 5.75
    assert RULES["expectile"] is expectile_rule and SignalConfig(rule="expectile").rule == "expectile"
    est = 1.0
    for x in [1.0, 9.0] * 200:          # activations of 1 and 9 in turn: mean 5, longest 9
        est = expectile_rule(est, x)
    assert 5.0 < est < 9.0 and util_est_rule(est, 9.0) == 9.0
