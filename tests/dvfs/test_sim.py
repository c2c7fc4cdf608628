"""The trace-driven DVFS simulator (dvfs.sim), the governors it runs
(dvfs.governors) and the Demand it replays (dvfs.demand).

Every figure here is simulated; the tests check the model's invariants
(energy, work, time, latency of a frequency change) on small hand-built
demands whose outcome can be computed in the test.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aios_lab.dvfs import demand, governors
from aios_lab.dvfs.demand import Demand
from aios_lab.dvfs.governors import (Conservative, Ondemand, Performance, Powersave, Schedutil, Static,
                                     TableGovernor)
from aios_lab.dvfs.platform import load_cluster
from aios_lab.dvfs.sim import PELT_HALF_LIFE_S, Obs, Simulation, simulate
from aios_lab.dvfs.table import FreqTable
from aios_lab.errors import TraceError

BIG = load_cluster("gs101:big")
BIG_NOLEAK = load_cluster("gs101:big", leak_share=0.0)
TOP = BIG.nr_opps - 1
FMAX = BIG.max_khz


def one_item(work_s: float, *, at: float = 0.0, cpu: int = 0, deadline_s: float = 1.0, duration_s: float = 0.05,
             nr_cpus: int = 2) -> Demand:
    w = np.zeros((1, nr_cpus))
    w[0, cpu] = work_s
    return Demand("one", "interactive", [at], w, deadline_s, duration_s)


def light_periodic() -> Demand:
    """20 intervals of 10 ms, 1 ms + 0.5 ms of work: fits its deadline even at the lowest OPP (5.6x slower)."""
    n = 20
    return Demand("light", "periodic", np.arange(n) * 0.01, np.tile([0.001, 0.0005], (n, 1)), 0.01, n * 0.01)


def obs(util=(0.0, 0.0), busy=(0.0, 0.0), nr_queued=(0, 0), opp=TOP, cluster=BIG) -> Obs:
    return Obs(t_s=0.0, opp=opp, util=list(map(float, util)), busy=list(map(float, busy)),
               nr_queued=list(map(int, nr_queued)), cluster=cluster)


# -- (1) energy of a fixed amount of work rises with the frequency ------------------------

@pytest.mark.parametrize("mem_share", [0.0, 0.3])
def test_busy_energy_rises_with_the_opp(mem_share):
    d = light_periodic()
    energy = []
    for o in range(BIG_NOLEAK.nr_opps):
        sim = Simulation(BIG_NOLEAK, d, mem_share=mem_share, start_opp=o)
        r = sim.run(Static(o))
        assert r.misses == 0 and r.items == 40, o
        assert r.transitions == 0 and r.mean_khz == pytest.approx(BIG.freqs_khz[o])
        # leak_share=0: idle costs nothing, so all energy is busy energy:
        # busy time x P_dyn = work x ((1-m) fmax/f + m) x C V^2 f
        f = BIG.freqs_khz[o]
        busy_s = d.total_work_s * ((1 - mem_share) * FMAX / f + mem_share)
        assert r.energy_j == pytest.approx(busy_s * BIG_NOLEAK.dyn_w[o], rel=1e-9), o
        energy.append(r.energy_j)
    assert np.all(np.diff(energy) > 0), energy
    # the top OPP costs several times the lowest for the same work (V^2: 1.056^2 / 0.5^2 ~ 4.5)
    if mem_share == 0:
        assert energy[-1] / energy[0] == pytest.approx((1056250 / 500000) ** 2, rel=1e-9)


def test_idle_energy_is_shallow_then_power_collapsed():
    """No work at all: each CPU idles shallow for the idle state's min-residency, then collapsed."""
    d = Demand("idle", "interactive", [0.0], [[0.0, 0.0]], 0.01, 0.1)
    sim = Simulation(BIG, d, start_opp=TOP)
    r = sim.run(Static(TOP))
    assert r.items == 0 and r.misses == 0
    res = BIG.idle_min_residency_s
    per_cpu = res * BIG.static_w[TOP] + (sim.t - res) * BIG.sleep_w[TOP]
    assert sim.t == pytest.approx(0.1)
    assert r.energy_j == pytest.approx(2 * per_cpu, rel=1e-9)


# -- (2) work is conserved --------------------------------------------------------------

GOVS = [Performance, Powersave, Ondemand, Conservative, Schedutil, lambda: Static(4),
        lambda: TableGovernor(FreqTable.constant(400))]


@pytest.mark.parametrize("make_demand", [
    lambda: demand.periodic(duration_s=0.5),
    lambda: demand.bursty(duration_s=0.5, seed=3),
    lambda: demand.batch(work_s=0.6, duration_s=0.5),
], ids=["periodic", "bursty", "batch"])
@pytest.mark.parametrize("make_gov", GOVS, ids=["performance", "powersave", "ondemand", "conservative",
                                                "schedutil", "static4", "table400"])
def test_work_is_conserved_when_the_run_drains(make_demand, make_gov):
    d = make_demand()
    sim = Simulation(BIG, d)
    r = sim.run(make_gov())
    assert not any(sim.queues), "the run drained before the cut-off"
    assert sim.t < sim.cutoff
    assert sim.work_done == pytest.approx(d.total_work_s, rel=1e-9, abs=1e-12)
    assert r.items == int(np.count_nonzero(d.work_s))
    assert 0 <= r.misses <= r.items
    assert 0 <= r.late_work_s <= d.total_work_s + 1e-12
    assert r.energy_j > 0 and r.mean_latency_s > 0
    assert sum(r.residency) == pytest.approx(1.0, abs=1e-3)
    assert BIG.freqs_khz[0] - 1e-6 <= r.mean_khz <= FMAX + 1e-6


def test_powersave_runs_slower_but_does_the_same_work():
    d = demand.periodic(duration_s=0.5)
    fast, slow = Simulation(BIG, d), Simulation(BIG, d)
    rf, rs = fast.run(Performance()), slow.run(Powersave())
    assert fast.work_done == pytest.approx(slow.work_done, rel=1e-9)
    assert rs.makespan_s > rf.makespan_s and rs.energy_j < rf.energy_j
    assert rs.mean_khz < 1.01 * BIG.freqs_khz[0] and rf.mean_khz == FMAX


# -- (3) time to complete one item ---------------------------------------------------------

@pytest.mark.parametrize("o", range(BIG.nr_opps))
def test_cpu_bound_item_takes_work_times_fmax_over_f(o):
    w = 0.0042
    sim = Simulation(BIG, one_item(w), mem_share=0.0, start_opp=o)
    r = sim.run(Static(o))
    want = w * FMAX / BIG.freqs_khz[o]
    assert r.makespan_s == pytest.approx(want, abs=1e-9)
    assert r.mean_latency_s == pytest.approx(want, abs=1e-9)
    assert r.misses == 0 and sim.work_done == pytest.approx(w)


def test_completion_is_exact_on_the_step_grid():
    """A 1 GHz / 2 GHz cluster: 3 ms of top-OPP work takes exactly 6 ms at 1 GHz, 3 ms at 2 GHz."""
    c = dataclasses.replace(BIG, freqs_khz=(1000000, 2000000), volts_uv=(700000, 1000000))
    for o, want in ((0, 0.006), (1, 0.003)):
        r = Simulation(c, one_item(0.003), mem_share=0.0, start_opp=o).run(Static(o))
        assert r.makespan_s == pytest.approx(want, abs=1e-9)
    # 0.5 memory-bound: only the CPU-bound half scales: 1.5 ms + 3 ms = 4.5 ms at 1 GHz
    r = Simulation(c, one_item(0.003), mem_share=0.5, start_opp=0).run(Static(0))
    assert r.makespan_s == pytest.approx(0.0045, abs=1e-9)


@pytest.mark.parametrize("o", [0, 3, 8, TOP])
def test_memory_share_does_not_scale_with_frequency(o):
    w, m = 0.0042, 0.5
    r = Simulation(BIG, one_item(w), mem_share=m, start_opp=o).run(Static(o))
    want = w * ((1 - m) * FMAX / BIG.freqs_khz[o] + m)
    assert r.makespan_s == pytest.approx(want, abs=1e-9)
    # what is left after removing the scaled part is the memory share's w x m at every OPP
    assert r.makespan_s - w * (1 - m) * FMAX / BIG.freqs_khz[o] == pytest.approx(w * m, abs=1e-9)


def test_mem_share_must_be_below_one():
    with pytest.raises(ValueError):
        Simulation(BIG, one_item(0.001), mem_share=1.0)
    with pytest.raises(ValueError):
        Simulation(BIG, one_item(0.001), mem_share=-0.1)


# -- (4) a frequency change lands after the transition latency ----------------------------

@pytest.mark.parametrize("step_s", [0.001, 0.0001, 0.0003, 0.0007])
def test_requested_opp_takes_effect_after_the_transition_latency(step_s):
    lat = BIG.transition_latency_s
    assert lat == pytest.approx(0.0005)
    sim = Simulation(BIG, one_item(1.0), mem_share=0.0, step_s=step_s, start_opp=TOP)
    sim.request(0)
    assert sim.opp == TOP                            # not yet
    steps = int(np.ceil(0.003 / step_s))
    sim.advance(steps)
    opp_time = np.asarray(sim.opp_time)
    assert opp_time[TOP] == pytest.approx(lat, abs=1e-12)     # ran at the old OPP for exactly the latency
    assert opp_time[0] == pytest.approx(steps * step_s - lat, abs=1e-12)
    assert sim.opp == 0 and sim.transitions == 1
    # the work done is what each OPP's time allowed
    done = 1.0 - sim.queues[0][0].remaining
    assert done == pytest.approx(lat * 1.0 + (steps * step_s - lat) * BIG.freqs_khz[0] / FMAX, rel=1e-9)


def test_the_old_opp_holds_until_the_change_lands():
    sim = Simulation(BIG, one_item(1.0), mem_share=0.0, step_s=0.0001, start_opp=TOP)
    sim.request(0)
    seen = []
    for _ in range(10):
        seen.append((round(sim.t, 6), sim.opp))
        sim.advance(1)
    # before t = 0.4 ms every step started at TOP; from 0.6 ms on at OPP 0
    assert all(opp == TOP for t, opp in seen if t < 0.0004 + 1e-9)
    assert all(opp == 0 for t, opp in seen if t > 0.0006 - 1e-9)


def test_a_request_mid_run_lands_latency_later():
    sim = Simulation(BIG, one_item(1.0), mem_share=0.0, start_opp=TOP)
    sim.advance(2)                       # t = 2 ms
    sim.request(5)                       # lands at 2.5 ms
    sim.advance(3)
    opp_time = np.asarray(sim.opp_time)
    assert opp_time[TOP] == pytest.approx(0.0025, abs=1e-12)
    assert opp_time[5] == pytest.approx(0.0025, abs=1e-12)


def test_repeating_a_pending_request_does_not_restart_the_clock():
    sim = Simulation(BIG, one_item(1.0), mem_share=0.0, step_s=0.0001, start_opp=TOP)
    sim.request(0)
    sim.advance(3)
    sim.request(0)
    sim.advance(20)
    assert np.asarray(sim.opp_time)[TOP] == pytest.approx(0.0005, abs=1e-12)


def test_a_new_request_replaces_a_pending_one():
    sim = Simulation(BIG, one_item(1.0), mem_share=0.0, step_s=0.0001, start_opp=TOP)
    sim.request(0)
    sim.advance(3)                       # t = 0.3 ms, OPP 0 not landed
    sim.request(5)                       # lands at 0.8 ms instead
    sim.advance(20)
    opp_time = np.asarray(sim.opp_time)
    assert opp_time[0] == 0
    assert opp_time[TOP] == pytest.approx(0.0008, abs=1e-12)
    assert sim.opp == 5 and sim.transitions == 1


def test_requests_are_clamped_to_the_table():
    sim = Simulation(BIG, one_item(1.0), start_opp=3)
    sim.request(-4)
    sim.advance(2)
    assert sim.opp == 0
    sim.request(99)
    sim.advance(2)
    assert sim.opp == TOP


def test_run_pays_the_latency_from_the_top_opp():
    """run() starts at the top OPP; powersave's first request lands 0.5 ms in."""
    d = Demand("idle", "interactive", [0.0], [[0.0, 0.0]], 0.01, 0.1)
    sim = Simulation(BIG, d)
    r = sim.run(Powersave())
    assert r.transitions == 1
    assert np.asarray(sim.opp_time)[TOP] == pytest.approx(BIG.transition_latency_s, abs=1e-12)


def test_cancelling_a_pending_change_is_not_a_transition():
    sim = Simulation(BIG, one_item(1.0), mem_share=0.0, step_s=0.0001, start_opp=TOP)
    sim.request(0)
    sim.advance(3)
    sim.request(TOP)                     # changed our mind before OPP 0 landed
    sim.advance(20)
    assert np.asarray(sim.opp_time)[0] == 0 and sim.opp == TOP
    assert sim.transitions == 0


# -- (5) deadlines ------------------------------------------------------------------------

def fitting_demand(seed: int) -> Demand:
    """Every interval's work fits the interval (at the top OPP); due at the interval's end."""
    rng = np.random.default_rng(seed)
    n, step = 50, 0.01
    return Demand(f"fit-{seed}", "interactive", np.arange(n) * step, rng.uniform(0, step, (n, 2)), step, n * step)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_performance_never_misses_when_each_interval_fits(seed):
    d = fitting_demand(seed)
    r = simulate(BIG, d, Performance())
    assert r.items == 100 and r.misses == 0 and r.late_work_s == 0


def test_performance_never_misses_on_a_model_frame_loop():
    for seed in range(3):
        d = demand.periodic(duration_s=0.5, seed=seed)
        assert np.all(d.work_s <= 1 / 60 + 1e-12)
        assert simulate(BIG, d, Performance()).misses == 0


def test_full_load_meets_deadlines_only_at_the_top():
    n, step = 50, 0.01
    d = Demand("full", "throughput", np.arange(n) * step, np.full((n, 2), step), step, n * step)
    assert simulate(BIG, d, Performance()).misses == 0
    r = simulate(BIG, d, Powersave())
    assert r.misses > 0.9 * r.items
    assert r.late_work_s > 0.9 * d.total_work_s


# -- (6) governor decisions on hand-built observations -----------------------------------

def _lowest_at_or_above(perf_target: float) -> int:
    return next(i for i, p in enumerate(BIG.perf) if p >= perf_target - 1e-9)


def test_schedutil_by_hand():
    g = Schedutil()
    g.reset(BIG)
    # busiest CPU 300: 1.25 x 300 = 375 -> 375/1024 x 2802 MHz = 1026 MHz -> 1106 MHz (index 3)
    assert g.decide(obs(util=[100, 300])) == 3
    assert g.decide(obs(util=[300, 100])) == 3
    assert g.decide(obs(util=[0, 0])) == 0
    assert g.decide(obs(util=[820, 0])) == TOP       # 1025 capped at 1024
    assert g.decide(obs(util=[1024, 1024])) == TOP


def test_schedutil_formula_on_a_grid():
    g = Schedutil()
    g.reset(BIG)
    for u in np.arange(0, 1025, 3.5):
        want = _lowest_at_or_above(min(1.25 * u, 1024.0))
        assert g.decide(obs(util=[u / 3, u])) == want, u


def test_schedutil_rate_limit_follows_the_transition_latency():
    g = Schedutil()
    g.reset(BIG)
    # 1.5 x 500 us = 750 us, but no faster than the simulator's 1 ms step
    assert g.period_s == pytest.approx(max(1.5 * BIG.transition_latency_s, 0.001))
    assert Schedutil(rate_limit_s=0.004).period_s == 0.004


def test_ondemand_jumps_to_max_above_80_percent():
    g = Ondemand()
    g.reset(BIG)
    assert g.decide(obs(busy=[0.9, 0.1])) == TOP
    assert g.decide(obs(busy=[0.0, 0.81])) == TOP
    assert g.decide(obs(busy=[1.0, 1.0])) == TOP


def test_ondemand_is_proportional_below():
    g = Ondemand()
    g.reset(BIG)
    assert g.decide(obs(busy=[0.0, 0.0])) == 0
    # load 50 (busiest CPU): 500 + 0.5 x (2802 - 500) = 1651 MHz, closest: 1582 MHz (index 6)
    assert g.decide(obs(busy=[0.5, 0.2])) == 6
    # load exactly 80 is not above the threshold: 500 + 0.8 x 2302 = 2341.6 MHz, closest 2401 MHz (index 12)
    assert g.decide(obs(busy=[0.8, 0.0])) == 12
    picks = [g.decide(obs(busy=[x, 0])) for x in np.linspace(0, 0.8, 41)]
    assert picks == sorted(picks) and picks[0] == 0 and picks[-1] < TOP


def test_ondemand_picks_the_closest_frequency_like_the_kernel():
    g = Ondemand()
    g.reset(BIG)
    # 1651 MHz: 1582 MHz is 69 MHz away, 1745 MHz is 94 MHz away
    assert g.decide(obs(busy=[0.5, 0.0])) == 6


def test_conservative_steps_by_five_percent_of_max():
    g = Conservative()
    g.reset(BIG)
    step = 0.05 * FMAX
    assert g.target == FMAX
    assert g.decide(obs(busy=[0.9, 0.0])) == TOP and g.target == FMAX      # capped at max
    targets = []
    for _ in range(25):
        o = g.decide(obs(busy=[0.1, 0.05]))
        targets.append(g.target)
        assert o == BIG.opp_for_khz(g.target)
    assert targets[0] == pytest.approx(FMAX - step)
    assert targets[5] == pytest.approx(FMAX - 6 * step)
    assert targets[-1] == BIG.freqs_khz[0]                                # floored at min
    assert g.decide(obs(busy=[0.1, 0.0])) == 0
    assert g.decide(obs(busy=[0.5, 0.5])) == 0 and g.target == BIG.freqs_khz[0]   # between thresholds: hold
    g.decide(obs(busy=[0.95, 0.0]))
    assert g.target == pytest.approx(BIG.freqs_khz[0] + step)
    g.decide(obs(busy=[0.0, 0.85]))
    assert g.target == pytest.approx(BIG.freqs_khz[0] + 2 * step)


def test_conservative_steps_up_to_the_highest_at_or_below_like_the_kernel():
    g = Conservative()
    g.reset(BIG)
    for _ in range(30):
        g.decide(obs(busy=[0.0, 0.0]))                 # down to the minimum, 500 MHz
    assert g.target == BIG.freqs_khz[0]
    # one step up: 500 + 140.1 = 640.1 MHz; RELATION_H keeps 500 MHz (851 MHz is above the request)
    assert g.decide(obs(busy=[0.9, 0.0])) == 0


def test_table_governor_takes_the_highest_per_cpu_request():
    u, r = np.meshgrid(np.arange(16), np.arange(4), indexing="ij")
    tab = FreqTable(64 * u + 16 * r + 1)
    g = TableGovernor(tab)
    g.reset(BIG)
    # CPU 0: util 100 (bucket 1), 3 queued -> 113; CPU 1: util 700 (bucket 10), none queued -> 641
    want = _lowest_at_or_above(641)
    assert want == 8
    assert g.decide(obs(util=[100, 700], nr_queued=[3, 0])) == want
    assert g.decide(obs(util=[700, 100], nr_queued=[0, 3])) == want
    # the queue can dominate: util 0 but 9 queued (bucket 3) -> 49 vs util 40 (bucket 0) -> 1
    assert g.decide(obs(util=[40, 0], nr_queued=[0, 9])) == _lowest_at_or_above(49)


def test_table_governor_queue_column_can_win_over_utilisation():
    perf = np.full((16, 4), 200, dtype=np.int64)
    perf[:, 3] = 1024
    g = TableGovernor(FreqTable(perf))
    g.reset(BIG)
    assert g.decide(obs(util=[1000, 0], nr_queued=[0, 0])) == _lowest_at_or_above(200)
    assert g.decide(obs(util=[1000, 0], nr_queued=[0, 5])) == TOP


def test_static_performance_powersave():
    for g, want in ((Performance(), TOP), (Powersave(), 0), (Static(4), 4), (Static(99), TOP)):
        g.reset(BIG)
        assert g.decide(obs()) == want
    assert set(governors.BUILTIN) == {"performance", "powersave", "ondemand", "conservative", "schedutil"}
    assert governors.builtin("schedutil").name == "schedutil"


# -- what governors observe ----------------------------------------------------------------

def test_util_is_frequency_invariant_pelt():
    o = 8
    sim = Simulation(BIG, one_item(10.0, duration_s=1.0), start_opp=o)
    sim.advance(400)
    assert sim.t == pytest.approx(0.4)
    decay = 0.5 ** (0.4 / PELT_HALF_LIFE_S)
    # always busy at OPP o: util tends to perf(o) = 1024 x f/fmax, not 1024
    assert sim.util[0] == pytest.approx(BIG.perf[o] * (1 - decay), rel=1e-6)
    assert sim.util[1] == 0


def test_observe_reports_busy_share_and_queue_then_resets():
    d = Demand("q", "interactive", [0.0, 0.0005], [[1.0, 0.0], [1.0, 0.0]], 1.0, 0.01)
    sim = Simulation(BIG, d, start_opp=TOP)
    sim.advance(10)
    o = sim.observe()
    assert list(o.busy) == pytest.approx([1.0, 0.0])
    assert list(o.nr_queued) == [1, 0]
    assert o.opp == TOP and o.t_s == pytest.approx(0.01)
    again = sim.observe()
    assert list(again.busy) == [0.0, 0.0]


# -- (7) the cut-off ----------------------------------------------------------------------

def test_items_unfinished_at_the_cutoff_are_misses():
    w = 0.05                                          # 50 ms at the top, 280 ms at the lowest OPP
    d = one_item(w, deadline_s=10.0, duration_s=0.01)  # cut-off at 3 x 10 ms
    sim = Simulation(BIG, d, mem_share=0.0)
    r = sim.run(Powersave())
    assert sim.t == pytest.approx(0.03) and len(sim.queues[0]) == 1
    assert (r.items, r.misses) == (1, 1)
    assert r.late_work_s == pytest.approx(w)
    assert r.makespan_s == pytest.approx(sim.t)
    assert sim.work_done == 0.0
    # with a later cut-off the same item finishes, well within its 10 s deadline
    r2 = Simulation(BIG, d, mem_share=0.0, cutoff_factor=100).run(Powersave())
    assert (r2.items, r2.misses) == (1, 0)


def test_a_late_completion_is_a_miss():
    r = simulate(BIG, one_item(0.004, deadline_s=0.003), Performance(), mem_share=0.0)
    assert (r.items, r.misses) == (1, 1) and r.late_work_s == pytest.approx(0.004)
    r = simulate(BIG, one_item(0.004, deadline_s=0.005), Performance(), mem_share=0.0)
    assert (r.items, r.misses) == (1, 0)


def test_work_does_not_run_before_it_arrives():
    d = one_item(0.0001, at=0.0005, duration_s=0.01)
    sim = Simulation(BIG, d, mem_share=0.0, start_opp=TOP)
    r = sim.run(Static(TOP))
    assert r.makespan_s >= 0.0005 + 0.0001 - 1e-12
    assert r.mean_latency_s >= 0.0001 - 1e-12


# -- (8) Demand ---------------------------------------------------------------------------

@pytest.mark.parametrize("work,words", [
    ([[0.001, -0.001]], "negative or non-finite"),
    ([[np.nan, 0.0]], "negative or non-finite"),
    ([[np.inf, 0.0]], "negative or non-finite"),
    ([0.001, 0.001], "shape"),
    ([[0.001, 0.0], [0.001, 0.0]], "shape"),
    ([[[0.001]]], "shape"),
])
def test_demand_rejects_bad_work(work, words):
    with pytest.raises(TraceError, match=words):
        Demand("bad", "interactive", [0.0], work, 0.01, 0.01)


def test_demand_rejects_unordered_starts():
    with pytest.raises(TraceError, match="time order"):
        Demand("bad", "interactive", [0.01, 0.0], [[0.001], [0.001]], 0.01, 0.02)


@pytest.mark.parametrize("starts,deadline", [([0.0], np.nan), ([np.nan], 0.01), ([0.0], -0.01)],
                         ids=["nan-deadline", "nan-start", "negative-deadline"])
def test_demand_rejects_nan_deadlines_and_starts(starts, deadline):
    with pytest.raises(TraceError):
        Demand("bad", "interactive", starts, [[0.001, 0.0]], deadline, 0.01)


def test_demand_basics():
    d = demand.periodic(duration_s=0.5)
    assert d.kind == "periodic" and d.nr_cpus == 2 and len(d.starts_s) == 30
    assert d.total_work_s == pytest.approx(float(d.work_s.sum()))
    assert d.utilisation() == pytest.approx(d.total_work_s / (0.5 * 2))
    assert np.all(d.deadline_s == pytest.approx(1 / 60))
    assert d.deadline_s.shape == d.starts_s.shape


def test_fold_sums_cpus_modulo():
    w = np.arange(12, dtype=float).reshape(3, 4) / 1000
    d = Demand("four", "interactive", [0.0, 0.01, 0.02], w, 0.02, 0.03)
    two = d.fold(2)
    assert two.nr_cpus == 2
    assert np.allclose(two.work_s[:, 0], w[:, 0] + w[:, 2])
    assert np.allclose(two.work_s[:, 1], w[:, 1] + w[:, 3])
    assert two.total_work_s == pytest.approx(d.total_work_s)
    assert two.meta["folded_from"] == 4
    assert np.array_equal(two.starts_s, d.starts_s) and np.array_equal(two.deadline_s, d.deadline_s)
    one = d.fold(1)
    assert np.allclose(one.work_s[:, 0], w.sum(axis=1))
    assert d.fold(4) is d
    six = d.fold(6)
    assert np.allclose(six.work_s[:, :4], w) and np.all(six.work_s[:, 4:] == 0)


def test_the_simulator_folds_the_demand_onto_the_cluster():
    little = load_cluster("gs101:little")
    d = demand.periodic(duration_s=0.2)
    sim = Simulation(little, d)
    assert sim.d.nr_cpus == 4 and len(sim.queues) == 4
    sim.run(Performance())
    assert sim.work_done == pytest.approx(d.total_work_s)


def test_window_selects_and_retimes():
    d = demand.periodic(duration_s=0.5)
    w = d.window(0.105, 0.2)              # frames 7..18 (0.1167 .. 0.3 s); no start on an edge
    sel = (d.starts_s >= 0.105) & (d.starts_s < 0.305)
    assert len(w.starts_s) == int(sel.sum()) == 12
    assert np.allclose(w.starts_s, d.starts_s[sel] - 0.105)
    assert w.starts_s[0] >= 0 and w.starts_s[-1] < 0.2
    assert np.array_equal(w.work_s, d.work_s[sel])
    assert w.duration_s == pytest.approx(0.2)
    assert w.meta["window"] == (0.105, 0.2) and w.kind == d.kind
    tail = d.window(0.4, 0.5)
    assert tail.duration_s == pytest.approx(0.1)
    assert len(tail.starts_s) == int((d.starts_s >= 0.4).sum())
    empty = d.window(0.6, 0.1)
    assert len(empty.starts_s) == 0 and empty.duration_s == 0.0


def test_schedutil_util_est_reacts_to_recurring_bursts():
    # Bursts that PELT alone forgets between arrivals: util_est remembers the
    # util each burst reached, so schedutil with it starts the next burst
    # higher and misses fewer deadlines, at some energy.
    from aios_lab.dvfs import demand as dm
    from aios_lab.dvfs.governors import Schedutil
    from aios_lab.dvfs.sim import simulate

    d = dm.bursty(duration_s=3.0, seed=5)
    plain = simulate(BIG, d, Schedutil(util_est=False))
    est = simulate(BIG, d, Schedutil())
    assert est.misses < plain.misses
    assert est.energy_j > plain.energy_j


def test_util_est_update_rule():
    # up at once to a larger sample, down by a quarter of the gap to a smaller one
    from aios_lab.dvfs.demand import Demand
    from aios_lab.dvfs.sim import Simulation

    d = Demand("two", "interactive", [0.0, 0.1], [[0.05, 0.0], [0.01, 0.0]], 0.1, 0.2)
    sim = Simulation(BIG, d, step_s=0.001)
    samples, est_after = [], []
    had = False
    while not sim.done:
        sim.advance(1)
        if had and not sim.queues[0]:
            samples.append(sim.util[0])
            est_after.append(sim.util_est[0])
        had = bool(sim.queues[0])
    assert len(samples) == 2 and samples[1] < samples[0]
    assert est_after[0] == pytest.approx(samples[0])
    assert est_after[1] == pytest.approx(samples[0] + (samples[1] - samples[0]) / 4)
    assert sim.util_est[1] == 0.0


def test_table_util_remembers_the_last_burst_while_the_cpu_has_work():
    # The freq policy's util_est: when CPU 0's 6 ms burst ends, the sample is
    # the larger of the windowed EWMA and the window's busy fraction so far
    # (which holds the burst). At the next burst's arrival the EWMA has
    # decayed, yet the table is indexed by the remembered value; while the
    # CPU idles, by the EWMA alone, and CPU 1 (never busy) stays at 0.
    from aios_lab.dvfs.demand import Demand
    from aios_lab.dvfs.sim import WINDOW_S, Simulation

    d = Demand("bursts", "interactive", [0.0, 0.1], [[0.006, 0.0], [0.006, 0.0]], 0.05, 0.2)
    sim = Simulation(BIG, d, step_s=0.001, start_opp=BIG.nr_opps - 1)
    had, est_at_end = False, None
    while sim.t < 0.098:
        sim.advance(1)
        if had and not sim.queues[0]:
            est_at_end = sim.win_est[0]
        had = bool(sim.queues[0])
    # 6 ms busy at the top OPP in the first 8 ms window: 6/6 of the window so far
    assert est_at_end == pytest.approx(1024.0, rel=0.01)
    assert sim.util_win[0] < 400                      # decayed over ~11 idle windows
    assert sim.table_util() == [sim.util_win[0], 0.0]  # idle: the EWMA alone
    while not sim.queues[0]:
        sim.advance(1)                                 # until the second burst arrives
    assert sim.t == pytest.approx(0.1)
    assert sim.table_util()[0] == pytest.approx(est_at_end)
    assert sim.table_state()[0] == 15
    assert WINDOW_S == 0.008
