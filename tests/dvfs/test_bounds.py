"""The yardsticks for learned governors (dvfs.bounds): the LP lower bound on
the energy of any zero-miss run, and the clairvoyant governor.

All simulated. The bound is checked against a case solved by hand, against
simulator runs of several governors (it must never exceed a zero-miss run's
energy), and on the FIFO order the simulator runs items in.
"""
from __future__ import annotations

import numpy as np
import pytest

from aios_lab.dvfs import demand
from aios_lab.dvfs.bounds import BoundError, Clairvoyant, energy_lower_bound, simulate_clairvoyant
from aios_lab.dvfs.demand import Demand
from aios_lab.dvfs.governors import Performance, Schedutil, Static
from aios_lab.dvfs.platform import load_cluster
from aios_lab.dvfs.sim import Simulation, simulate, work_rates

BIG = load_cluster("gs101:big")
M = 0.3


def test_one_item_with_time_to_spare_costs_the_lowest_opp_all_along():
    # 2 ms of top-OPP work due in 40 ms: the lowest OPP (rate 0.237) does it in 8.4 ms.
    # Cheapest: both CPUs at OPP 0 throughout, CPU 0 busy for w / r0, everything else power-collapsed.
    w, T = 0.002, 0.04
    d = Demand("one", "interactive", [0.0], [[w, 0.0]], T, T)
    r0 = work_rates(BIG, M)[0]
    expected = 2 * BIG.sleep_w[0] * T + (w / r0) * (BIG.busy_w[0] - BIG.sleep_w[0])
    assert energy_lower_bound(BIG, d, mem_share=M).energy_j == pytest.approx(expected, rel=1e-6)


def test_the_bound_is_at_most_every_zero_miss_run_and_at_least_the_work_at_its_cheapest():
    d = demand.bursty(duration_s=1.0, seed=3)
    lb = energy_lower_bound(BIG, d, mem_share=M).energy_j
    runs = [simulate(BIG, d, g, mem_share=M) for g in (Performance(), Schedutil(), Static(BIG.nr_opps - 2))]
    runs.append(simulate_clairvoyant(BIG, d, mem_share=M))
    zero_miss = [r for r in runs if r.misses == 0]
    assert any(r.governor == "performance" for r in zero_miss)  # the check below is never vacuous
    for r in zero_miss:
        assert lb <= r.energy_j, r.governor
    r = work_rates(BIG, M)
    cheapest_per_work = float(np.min((BIG.busy_w - BIG.sleep_w) / r))
    assert lb >= d.total_work_s * cheapest_per_work


def test_demand_over_capacity_has_no_bound():
    d = Demand("too-much", "interactive", [0.0], [[0.05, 0.0]], 0.01, 0.01)
    with pytest.raises(BoundError, match="no schedule meets every deadline"):
        energy_lower_bound(BIG, d)


def test_an_item_owes_everything_queued_ahead_of_it():
    # 25 ms due at 50 ms, then 1 ms arriving at 10 ms and due at 20 ms. Earliest-deadline-first could
    # meet both; the simulator runs FIFO, so the second waits for the first and must miss.
    d = Demand("fifo", "interactive", [0.0, 0.01], [[0.025, 0.0], [0.001, 0.0]], [0.05, 0.01], 0.05)
    assert simulate(BIG, d, Performance()).misses >= 1
    with pytest.raises(BoundError, match="no schedule meets every deadline"):
        energy_lower_bound(BIG, d)
    # the same work with the second item due after the first's deadline fits
    ok = Demand("fifo-ok", "interactive", [0.0, 0.01], [[0.025, 0.0], [0.001, 0.0]], [0.05, 0.05], 0.06)
    assert energy_lower_bound(BIG, ok).energy_j > 0


def test_clairvoyant_meets_every_deadline_for_less_than_any_fixed_opp_that_does():
    d = demand.bursty(duration_s=1.0, seed=3)
    cv = simulate_clairvoyant(BIG, d, mem_share=M)
    assert cv.misses == 0
    statics = [simulate(BIG, d, Static(o), mem_share=M) for o in range(BIG.nr_opps)]
    best_static = min(r.energy_j for r in statics if r.misses == 0)
    assert cv.energy_j < best_static
    assert cv.energy_j >= energy_lower_bound(BIG, d, mem_share=M).energy_j


def test_lateness_allowed_trades_misses_for_energy():
    d = demand.periodic(duration_s=1.0, load=0.6, seed=1)
    strict = simulate_clairvoyant(BIG, d, mem_share=M)
    late = simulate_clairvoyant(BIG, d, mem_share=M, lateness_s=0.01)
    assert strict.misses == 0
    assert late.misses > 0 and late.energy_j < strict.energy_j


def test_need_counts_work_that_has_not_arrived_only_within_the_lookahead():
    # one item arrives at 50 ms: nothing is queued before it
    d = Demand("later", "interactive", [0.0, 0.05], [[0.0, 0.0], [0.01, 0.0]], 0.02, 0.07)
    blind = Clairvoyant(Simulation(BIG, d), lookahead_s=0.0)
    seeing = Clairvoyant(Simulation(BIG, d), lookahead_s=0.1)
    assert blind.need() == 0.0
    guard = BIG.transition_latency_s + 0.001
    assert seeing.need() == pytest.approx(0.01 / (0.07 - guard))
    with pytest.raises(ValueError):
        Clairvoyant(Simulation(BIG, d), lookahead_s=-1)


def test_an_opp_cap_is_never_exceeded_and_trades_misses_for_energy():
    d = demand.periodic(duration_s=1.0, load=0.7, seed=1)   # frames up to 1.8x heavier: the top OPP at times
    top = BIG.nr_opps - 1
    free = simulate_clairvoyant(BIG, d, mem_share=M)
    capped = simulate_clairvoyant(BIG, d, mem_share=M, max_opp=top - 3)
    assert free.misses == 0 and free.residency[top] > 0.01      # the demand needs the top OPP at times...
    # ...the capped run leaves only the start, at the top OPP until its first request lands
    assert sum(capped.residency[top - 2:]) <= (BIG.transition_latency_s + 0.001) / capped.duration_s
    assert capped.misses > free.misses and capped.energy_j < free.energy_j
    with pytest.raises(ValueError, match="max_opp"):
        Clairvoyant(Simulation(BIG, d), max_opp=top + 1)


def test_predicting_a_steady_demand_comes_close_to_reading_its_future():
    d = demand.batch(work_s=1.2, duration_s=1.0)          # the same work every 10 ms, due 100 ms later
    exact = simulate_clairvoyant(BIG, d, mem_share=M, lookahead_s=0.3)
    predicted = simulate_clairvoyant(BIG, d, mem_share=M, lookahead_s=0.3, predict_tau_s=0.05)
    queue_only = simulate_clairvoyant(BIG, d, mem_share=M, lookahead_s=0.0)
    assert exact.misses == predicted.misses == 0
    assert predicted.energy_j == pytest.approx(exact.energy_j, rel=0.03)
    # and the prediction is used: seeing only the queue, work piles up against its 100 ms deadline and
    # then has to be raced through faster
    assert queue_only.energy_j > 1.01 * predicted.energy_j


def test_the_predictor_does_not_read_the_future():
    d = Demand("later", "interactive", [0.0, 0.05], [[0.0, 0.0], [0.01, 0.0]], 0.02, 0.07)
    assert Clairvoyant(Simulation(BIG, d), lookahead_s=0.1, predict_tau_s=0.1).need() == 0.0
    with pytest.raises(ValueError, match="predict_tau_s"):
        Clairvoyant(Simulation(BIG, d), predict_tau_s=0.0)


def test_estimated_work_does_not_read_the_size_of_queued_items():
    def need_after_one_step(work_s: float, **kw) -> float:
        d = Demand("one", "interactive", [0.0], [[work_s, 0.0]], 0.02, 0.02)
        sim = Simulation(BIG, d, mem_share=M)
        gov = Clairvoyant(sim, **kw)
        sim.advance(1)   # the item has arrived and run 1 ms; both sizes still have work left
        return gov.need()

    online = dict(lookahead_s=0.0, estimate_work=True)
    assert need_after_one_step(0.003, **online) == need_after_one_step(0.008, **online)
    assert need_after_one_step(0.003, lookahead_s=0.0) < need_after_one_step(0.008, lookahead_s=0.0)
    with pytest.raises(ValueError, match="estimate_work"):
        Clairvoyant(Simulation(BIG, demand.batch()), estimate_work=True)


def test_estimated_work_learns_a_steady_item_size():
    d = demand.batch(work_s=1.2, duration_s=1.0)
    predicted = simulate_clairvoyant(BIG, d, mem_share=M, lookahead_s=0.3, predict_tau_s=0.05)
    online = simulate_clairvoyant(BIG, d, mem_share=M, lookahead_s=0.3, predict_tau_s=0.05, estimate_work=True)
    assert online.misses == 0
    # the margin over the learned size costs some energy, but the sizes are learned: within 10 %
    assert predicted.energy_j <= online.energy_j <= 1.10 * predicted.energy_j
