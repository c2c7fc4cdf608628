"""The gymnasium environment over the simulator (dvfs.env), tabular
Q-learning on it (dvfs.rl) and the CRAVE-style table sweep (dvfs.sweep).

Tiny demands and episode counts: these check the plumbing and the contracts
(valid, deterministic, monotone tables), not the quality of what is learned.
"""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from aios_lab.dvfs import budget, demand, rl, sweep
from aios_lab.dvfs.env import FreqEnv, RewardWeights
from aios_lab.dvfs.governors import TableGovernor
from aios_lab.dvfs.platform import load_cluster
from aios_lab.dvfs.sim import Obs
from aios_lab.dvfs.table import FreqTable, freq_for_perf, load_table, save_table

BIG = load_cluster("gs101:big")
TOP = BIG.nr_opps - 1


def tiny_demands():
    return [demand.periodic(duration_s=0.5), demand.bursty(duration_s=0.5, seed=1)]


def make_env(**kw) -> FreqEnv:
    return FreqEnv(BIG, tiny_demands(), **kw)


# -- FreqEnv ------------------------------------------------------------------------------

def test_gymnasium_env_checker_passes():
    check_env(make_env(), skip_render_check=True)


def test_spaces():
    env = make_env()
    assert list(env.observation_space.nvec) == [16, 4, BIG.nr_opps]
    assert env.action_space.n == BIG.nr_opps
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs[2] == TOP                 # a run starts at the top OPP
    assert "demand" in info


def test_needs_a_demand_and_a_reset():
    with pytest.raises(ValueError):
        FreqEnv(BIG, [])
    with pytest.raises(RuntimeError, match="reset"):
        make_env().step(0)


@pytest.mark.parametrize("i", [0, 1])
def test_reset_options_pick_the_demand(i):
    env = make_env()
    names = [d.name for d in env.demands]
    for seed in range(4):
        _, info = env.reset(seed=seed, options={"demand": i})
        assert info["demand"] == names[i]
        assert env.sim.d.name == names[i]
        assert env.sim.d.total_work_s == pytest.approx(env.demands[i].total_work_s)


def test_reset_draws_every_demand_without_options():
    env = make_env()
    env.reset(seed=0)
    seen = {env.reset()[1]["demand"] for _ in range(30)}
    assert seen == {d.name for d in env.demands}


def test_window_replays_part_of_a_longer_demand():
    env = FreqEnv(BIG, [demand.periodic(duration_s=2.0)], window_s=0.5)
    _, info = env.reset(seed=1, options={"demand": 0})
    assert "@" in info["demand"]
    assert env.sim.d.duration_s == pytest.approx(0.5)
    assert len(env.sim.d.starts_s) == pytest.approx(30, abs=1)


def _episode(env, policy, seed=0, demand_i=0, max_steps=10_000):
    obs, _ = env.reset(seed=seed, options={"demand": demand_i})
    rewards, infos = [], []
    for n in range(max_steps):
        obs, r, terminated, truncated, info = env.step(policy(obs, n))
        assert env.observation_space.contains(obs)
        assert truncated is False
        rewards.append(r)
        infos.append(info)
        if terminated:
            return rewards, infos
    raise AssertionError("episode did not terminate")


def test_episodes_terminate_and_rewards_are_sane():
    env = make_env()
    rng = np.random.default_rng(0)
    w = env.weights
    for i in (0, 1):
        rewards, infos = _episode(env, lambda o, n: int(rng.integers(BIG.nr_opps)), demand_i=i)
        sim = env.sim
        # the run ends when drained (>= the demand's span) or at the 3x cut-off
        assert sim.done and len(rewards) * env.decision_s <= sim.cutoff + env.decision_s
        assert len(rewards) >= int(sim.d.duration_s / env.decision_s)
        for r, info in zip(rewards, infos):
            assert np.isfinite(r) and r <= 0
            # energy term in [-1, 0], then w_miss per miss, then at most every CPU overdue all step
            assert r >= -1 - w.w_miss * info["misses"] - w.w_late * BIG.nr_cpus - 1e-9
            assert info["energy_j"] >= 0 and info["misses"] >= 0
        # the steps' energy and misses add up to the run's
        assert sum(i["energy_j"] for i in infos) == pytest.approx(sim.energy_j, rel=1e-9)
        assert sum(i["misses"] for i in infos) == sim.misses


def test_flat_out_costs_about_one_per_busy_step():
    """Both CPUs busy at the top OPP: energy term = -1 per step (the normalisation)."""
    n, step = 40, 0.01
    full = demand.Demand("full", "throughput", np.arange(n) * step, np.full((n, 2), step), 0.1, n * step)
    env = FreqEnv(BIG, [full])
    rewards, infos = _episode(env, lambda o, k: TOP)
    assert sum(i["misses"] for i in infos) == 0
    assert np.allclose(rewards[:50], -1.0, atol=1e-9)


def test_powersave_on_a_heavy_demand_is_punished_for_misses():
    n, step = 40, 0.01
    full = demand.Demand("full", "throughput", np.arange(n) * step, np.full((n, 2), step), 2 * step, n * step)
    env = FreqEnv(BIG, [full])
    fast, fast_i = _episode(env, lambda o, k: TOP)
    slow, slow_i = _episode(env, lambda o, k: 0)
    assert sum(i["misses"] for i in slow_i) > 0
    assert sum(slow) < sum(fast)


def test_reset_with_a_seed_is_reproducible():
    env = make_env(window_s=0.3)
    a = _episode(env, lambda o, n: (n * 7) % BIG.nr_opps, seed=5)[0]
    b = _episode(env, lambda o, n: (n * 7) % BIG.nr_opps, seed=5)[0]
    assert a == b


def test_reward_weights():
    assert RewardWeights().as_dict() == {"w_miss": 2.0, "w_late": 0.5}


# -- Q-learning ---------------------------------------------------------------------------

TINY = dict(episodes=4, window_s=0.5, eval_every=2, seed=0)


def _train(params=TINY):
    train = [demand.periodic(duration_s=1.0), demand.bursty(duration_s=1.0, seed=2)]
    test = [demand.periodic(duration_s=0.4, seed=7)]
    fitted = rl.QLearner(BIG, **params).fit(train, test=test)
    return fitted.table_, fitted.curve_


def test_q_learner_fits_a_valid_table_and_a_curve():
    lines = []
    learner = rl.QLearner(BIG, **TINY)
    train = [demand.periodic(duration_s=1.0), demand.bursty(duration_s=1.0, seed=2)]
    assert learner.fit(train, test=[demand.periodic(duration_s=0.4, seed=7)], progress=lines.append) is learner
    table, curve = learner.table_, learner.curve_
    assert isinstance(table, FreqTable) and table.method == "rl"
    table.validate()
    assert table.perf.shape == (16, 4) and table.perf.min() >= 1 and table.perf.max() <= 1024
    assert table.meta["simulated"] is True
    assert table.meta["config"]["episodes"] == 4
    assert list(table.meta["config"]) == list(rl.CONFIG)
    assert table.meta["train"] == [d.name for d in train]
    assert len(curve) == 4
    assert [row["episode"] for row in curve] == [1, 2, 3, 4]
    held_out = [row for row in curve if "test_energy_j" in row]
    assert [row["episode"] for row in held_out] == [2, 4]
    assert [line.split(":")[0] for line in lines] == ["episode 2", "episode 4"]   # one line per held-out point
    for row in held_out:
        assert row["test_energy_j"] > 0 and row["test_items"] > 0 and 0 <= row["test_misses"] <= row["test_items"]
    eps = [row["epsilon"] for row in curve]
    assert eps[0] == learner.eps_start and eps == sorted(eps, reverse=True) and eps[-1] >= learner.eps_end
    for row in curve:
        assert row["reward"] < 0 and row["energy_j"] > 0 and row["misses"] >= 0
    assert learner.q_.shape == learner.visits_.shape == (16, 4, len(learner.actions_))


def test_q_learner_table_survives_save_and_load(tmp_path):
    table, _ = _train()
    back = load_table(save_table(tmp_path / "rl.json", table))
    assert np.array_equal(back.perf, table.perf) and back.method == "rl"
    assert back.meta["simulated"] is True


def test_q_learner_is_deterministic():
    t1, c1 = _train()
    t2, c2 = _train()
    assert np.array_equal(t1.perf, t2.perf)
    assert [r["reward"] for r in c1] == [r["reward"] for r in c2]
    assert [r.get("test_energy_j") for r in c1] == [r.get("test_energy_j") for r in c2]


def test_q_learner_without_test_has_no_held_out_points():
    train = [demand.periodic(duration_s=0.5)]
    curve = rl.QLearner(BIG, episodes=2, window_s=0.5, eval_every=1).fit(train).curve_
    assert len(curve) == 2 and not any("test_energy_j" in r for r in curve)


def _obs(util):
    return Obs(t_s=0.0, opp=TOP, util=[float(util), 0.0], busy=[0.0, 0.0], nr_queued=[0, 0], cluster=BIG)


def test_rl_table_runs_the_opp_the_agent_chose():
    for o in range(BIG.nr_opps):
        q = np.zeros((16, 4, BIG.nr_opps))
        q[:, :, o] = 1.0
        table = rl.table_from_q(q, np.ones_like(q, dtype=np.int64), BIG, {})
        g = TableGovernor(table)
        g.reset(BIG)
        assert g.decide(_obs(500)) == o, o
        assert freq_for_perf(int(table.perf[8, 0]), list(BIG.freqs_khz)) == BIG.freqs_khz[o], o


# -- the sweep ----------------------------------------------------------------------------

def test_sweep_learner_fits_a_monotone_simulated_table():
    lambdas = (1.0, 16.0)
    learner = sweep.SweepLearner(BIG, lambdas=lambdas, bisect_steps=0)
    assert learner.fit(tiny_demands()) is learner
    t = learner.table_
    assert isinstance(t, FreqTable) and t.method == "sweep"
    t.validate()
    p = t.perf
    assert np.all(np.diff(p, axis=0) >= 0), "non-decreasing in utilisation"
    assert np.all(np.diff(p, axis=1) >= 0), "non-decreasing in queue length"
    assert t.meta["simulated"] is True
    assert t.meta["lambda"] in lambdas
    assert t.meta["train"] == [d.name for d in tiny_demands()]
    assert list(t.meta["config"]) == list(sweep.CONFIG) and t.meta["config"]["lambdas"] == lambdas
    assert [c["lambda"] for c in learner.candidates_] == list(lambdas)
    assert all("perf" not in c for c in learner.candidates_)
    assert learner.schedutil_train_["energy_j"] > 0 and learner.curve_ == []
    best = next(c for c in learner.candidates_ if c["lambda"] == t.meta["lambda"])
    if "refined_passes" not in t.meta:     # the table is the best candidate's, figures and all
        assert t.meta["train_misses"] == best["misses"]
        assert t.meta["train_energy_j"] == pytest.approx(best["energy_j"])
    if t.meta["met_miss_budget"]:
        assert t.meta["train_misses"] <= learner.schedutil_train_["misses"] * 1.05 + 1e-9


def _samples(cheapest_of_bucket):
    """Samples where, in bucket (ub, rb), the cheapest OPP is cheapest_of_bucket(ub, rb)."""
    n = BIG.nr_opps
    steps = np.full((n, 16, 4), 100.0)
    energy = np.zeros((n, 16, 4))
    for ub in range(16):
        for rb in range(4):
            c = cheapest_of_bucket(ub, rb)
            energy[:, ub, rb] = 100 * 0.001 * (1.0 + np.abs(np.arange(n) - c))
    z = np.zeros((n, 16, 4))
    return sweep.Samples(steps, energy, z.copy(), z.copy(), 0.001)


def test_choose_makes_the_table_monotone():
    # cheapest OPP falls with utilisation: the table is lifted to stay non-decreasing
    s = _samples(lambda ub, rb: 15 - ub)
    perf = sweep.choose(BIG, s, 1.0)
    assert np.all(np.diff(perf, axis=0) >= 0) and np.all(np.diff(perf, axis=1) >= 0)
    assert np.all(perf == perf[0, 0])                      # the first bucket's (highest) choice everywhere
    assert BIG.opp_for_perf(perf[0, 0]) >= 15


def test_choose_trusts_only_buckets_seen_often_enough():
    s = _samples(lambda ub, rb: 0)
    s.steps[:, 10:, :] = 2                                 # below min_visits=5: falls back to schedutil
    perf = sweep.choose(BIG, s, 1.0, min_visits=5)
    assert np.all(perf[:10] == perf[0, 0])
    assert np.all(perf[10:] > perf[0, 0])
    assert perf[15, 0] == 1024                             # schedutil at util ~1000 asks for the top


def test_sweep_table_runs_the_cheapest_opp():
    s = _samples(lambda ub, rb: 3)
    perf = sweep.choose(BIG, s, 1.0)
    assert BIG.opp_for_perf(perf[0, 0]) == 3


def test_miss_excess_per_trace_and_total():
    from types import SimpleNamespace as R

    base = [R(misses=100, items=1000), R(misses=0, items=1000)]
    per = budget.miss_excess(base, per_trace=True, miss_slack=0.05, abs_slack=0.005)
    tot = budget.miss_excess(base, per_trace=False, miss_slack=0.05)
    # caps per trace: 105 + 5 = 110 and 0 + 5 = 5; total cap 105
    assert per([R(misses=110, items=1000), R(misses=5, items=1000)]) == 0
    assert per([R(misses=0, items=1000), R(misses=50, items=1000)]) == 45  # trading kinds is not allowed
    assert tot([R(misses=0, items=1000), R(misses=50, items=1000)]) == 0   # in total it is
    assert tot([R(misses=100, items=1000), R(misses=10, items=1000)]) == 5


def test_refine_stops_after_a_pass_that_changes_nothing():
    """A pass that keeps the table leaves the next pass the same steps from the
    same table, so refinement stops there: the figures are those of a longer
    run, and `refined_passes` says how many passes ran."""
    start = FreqTable(np.full((16, 4), 1024, dtype=np.int64), method="sweep", meta={})
    few = sweep.refine(BIG, start, tiny_demands(), lam=1.0, passes=2, top_buckets=4)
    many = sweep.refine(BIG, start, tiny_demands(), lam=1.0, passes=40, top_buckets=4)
    assert many.meta["refined_passes"] < 40
    if few.meta["refined_passes"] == 2 and many.meta["refined_passes"] > 2:
        assert many.meta["train_energy_j"] <= few.meta["train_energy_j"] + 1e-9
    again = sweep.refine(BIG, many, tiny_demands(), lam=1.0, passes=40, top_buckets=4)
    assert again.meta["refined_passes"] == 1, "refining a converged table changes nothing in its first pass"
    np.testing.assert_array_equal(again.perf, many.perf)
