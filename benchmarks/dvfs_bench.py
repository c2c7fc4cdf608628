#!/usr/bin/env python3
"""DVFS policies on held-out recorded traces, on the simulator (SIMULATED).

Trains the CRAVE-style table (sweep, deterministic) once and the RL policy
once per seed on every recorded run of each trace kind but one (run 3 unless
--hold-out-run says otherwise), then replays the held-out run of each kind
under: performance, powersave, ondemand, conservative, schedutil,
the best static OPP for that very trace (an oracle: it sees the test trace),
the clairvoyant governor (dvfs.bounds: it sees every queued and future
item's work and deadline; a yardstick, not a policy), the online planner
with work estimated per CPU (online-cpu) and per task (online-task, the
per-task rung: dvfs.task_signal), the table and the RL policy. Prints energy,
deadline misses and EDP per trace and in total, with ratios against
schedutil from the same run, and both targets' verdicts.

--state task trains the table and RL over the per-task state (need from
per-task estimates of queued work, arrival rate) instead of (utilisation,
queue length). --validate-run N holds run N of each kind out of training as
well and chooses every hyperparameter on it (the RL seed and reward's miss
weight, the sweep's miss slack), never on the held-out run; the chosen
model is the one trained without the validation run.

    .venv/bin/python benchmarks/dvfs_bench.py --seeds 5 --json-out results/dvfs-bench.json
    .venv/bin/python benchmarks/dvfs_bench.py --state task --validate-run 2 --seeds 2 --rl-w-miss 1,4
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from aios_lab.dvfs import experiment as ex, units
from aios_lab.dvfs.bounds import simulate_clairvoyant
from aios_lab.dvfs.budget import miss_excess, within_first
from aios_lab.dvfs.env import RewardWeights
from aios_lab.dvfs.governors import BUILTIN, Schedutil, table_governor_for
from aios_lab.dvfs.platform import load_cluster
from aios_lab.dvfs.rl import QLearner
from aios_lab.dvfs.sim import simulate
from aios_lab.dvfs.sweep import SweepLearner
from aios_lab.dvfs.table import save_table
from aios_lab.errors import ModelError


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--unit", choices=units.names(), default=units.DEFAULT,
                    help="demand unit: 'interval' (per-interval time, workloads/dvfs/traces) or 'activation' "
                         "(one item per activation, workloads/dvfs/traces-switches); dvfs.units")
    ap.add_argument("--cluster", default="gs101:big")
    ap.add_argument("--mem-share", type=float, default=0.3)
    ap.add_argument("--refine-passes", type=int, default=1, help="sweep: coordinate-descent passes")
    ap.add_argument("--sweep-budget", choices=["total", "per-trace"], default="total",
                    help="sweep: schedutil's misses + 5%% over all training traces, or on each one")
    ap.add_argument("--hold-out-run", type=int, default=ex.TEST_RUN,
                    help="the run of each kind held out (cross-validation: each run in turn, "
                         "then benchmarks/dvfs_pool.py)")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--tables-out", type=Path, default=None, help="folder to keep the learned tables in")
    ap.add_argument("--state", choices=["util-queue", "task"], default="util-queue",
                    help="what the table and RL are indexed by (FreqTable.state)")
    ap.add_argument("--no-table", action="store_true", help="skip the sweep (table) learner: RL only")
    ap.add_argument("--validate-run", type=int, default=None,
                    help="choose every hyperparameter on this run of each kind (taken out of training)")
    ap.add_argument("--rl-w-miss", type=_floats, default=[RewardWeights().w_miss],
                    help="RL reward's miss weights to choose among (needs --validate-run if more than one)")
    ap.add_argument("--sweep-slack", type=_floats, default=[SweepLearner().miss_slack],
                    help="sweep's training miss slacks to choose among (needs --validate-run if more than one)")
    a = ap.parse_args()
    if a.validate_run is None and (len(a.rl_w_miss) > 1 or len(a.sweep_slack) > 1):
        print("error: more than one hyperparameter value needs --validate-run N to choose among them",
              file=sys.stderr)
        return 2
    if a.validate_run is not None and a.validate_run == a.hold_out_run:
        print("error: --validate-run must differ from --hold-out-run", file=sys.stderr)
        return 2

    cl = load_cluster(a.cluster)
    try:
        train_p, test_p = ex.split(a.hold_out_run, a.unit)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train, test = ex.load_demands(train_p, a.unit), ex.load_demands(test_p, a.unit)
    val: list = []
    if a.validate_run is not None:
        vnames = {f"{k}-{a.validate_run}" for k in ex.KINDS}
        if not any(d.name in vnames for d in train):
            print(f"error: no recorded run {a.validate_run} to validate on", file=sys.stderr)
            return 2
        val = [d for d in train if d.name in vnames]
        train = [d for d in train if d.name not in vnames]
    m = a.mem_share
    print(ex.SIMULATED)
    print(f"cluster {cl.platform}:{cl.name}: {cl.nr_cpus}x {cl.core}, {cl.nr_opps} OPPs "
          f"{cl.freqs_khz[0] // 1000}-{cl.max_khz // 1000} MHz; mem_share {m}; "
          f"train {[d.name for d in train]}; validation {[d.name for d in val]}; held out "
          f"{[d.name for d in test]}; learned state {a.state}")
    t0 = time.time()
    rows: list[dict] = []

    def add(res, seed=None):
        d = res.as_dict()
        d["seed"] = seed
        rows.append(d)

    base = {}
    for d in test:
        for name, cls in BUILTIN.items():
            r = simulate(cl, d, cls(), mem_share=m)
            add(r)
            if name == "schedutil":
                base[d.name] = r
        add(ex.oracle_static(cl, d, miss_budget=int(base[d.name].misses * 1.05), mem_share=m))
        cv = simulate_clairvoyant(cl, d, mem_share=m)
        cv.governor = "clairvoyant"
        add(cv)
        for name, how in (("online-cpu", True), ("online-task", "task")):
            r = simulate_clairvoyant(cl, d, mem_share=m, predict_tau_s=0.1, estimate_work=how,
                                     work_margin=0.5 if how is True else 0.0)
            r.governor = name
            add(r)
    print(f"baselines: {time.time() - t0:.0f} s", flush=True)

    # validation: candidates judged on the validation traces like the target (least energy
    # within schedutil's misses x 1.05 there), never on the held-out run
    val_base = [simulate(cl, d, Schedutil(), mem_share=m) for d in val]
    val_excess = miss_excess(val_base, miss_slack=ex.TARGET_MISSES_X - 1)
    chosen: dict = {}

    def judge(what: str, tab, params: dict) -> tuple:
        res = [simulate(cl, d, table_governor_for(tab), mem_share=m) for d in val]
        e, mi = sum(r.energy_j for r in res), sum(r.misses for r in res)
        print(f"  validation {what} {params}: energy {e:.2f} J (schedutil {sum(r.energy_j for r in val_base):.2f}),"
              f" misses {mi} (schedutil {sum(r.misses for r in val_base)})", flush=True)
        return within_first(e, val_excess(res))

    t1, c1 = time.time(), time.process_time()
    best_sw = None
    for slack in [] if a.no_table else a.sweep_slack:
        cand = SweepLearner(cl, per_trace=a.sweep_budget == "per-trace", miss_slack=slack, mem_share=m,
                            refine_passes=a.refine_passes, state=a.state).fit(
            train, samples=best_sw[1].samples_ if best_sw else None)   # sampled once for every slack
        key = judge("table", cand.table_, {"miss_slack": slack}) if val else (0,)
        if best_sw is None or key < best_sw[0]:
            best_sw = (key, cand, slack)
    sw = best_sw[1] if best_sw else None
    sweep_s, sweep_cpu_s = time.time() - t1, time.process_time() - c1
    if sw is not None:
        chosen["table"] = {"miss_slack": best_sw[2]}
        print(f"sweep (table) trained in {sweep_s:.0f} s ({sweep_cpu_s:.0f} s CPU), lambda {sw.table_.meta['lambda']}, "
              f"chosen {chosen['table']}", flush=True)
        if a.tables_out:
            a.tables_out.mkdir(parents=True, exist_ok=True)
            save_table(a.tables_out / "table-sweep.json", sw.table_)
        for d in test:
            add(simulate(cl, d, table_governor_for(sw.table_, name="table"), mem_share=m))
    rl_s, rl_cpu_s = [], []
    rl_cands = []
    for w_miss in a.rl_w_miss:
        for seed in range(a.seeds):
            t2, c2 = time.time(), time.process_time()
            rl = QLearner(cl, episodes=a.episodes, seed=seed, mem_share=m, weights=RewardWeights(w_miss=w_miss),
                          state=a.state).fit(train)
            tab, curve = rl.table_, rl.curve_
            rl_s.append(time.time() - t2)
            rl_cpu_s.append(time.process_time() - c2)
            if a.tables_out:
                save_table(a.tables_out / f"table-rl-w{w_miss:g}-seed{seed}.json", tab)
                ex.save_curve_png(curve, a.tables_out / f"rl-w{w_miss:g}-seed{seed}.curve.png", f"RL seed {seed}")
            key = judge("rl", tab, {"w_miss": w_miss, "seed": seed}) if val else (0,)
            rl_cands.append((key, w_miss, seed, tab))
            print(f"rl w_miss {w_miss:g} seed {seed} trained in {rl_s[-1]:.0f} s ({rl_cpu_s[-1]:.0f} s CPU)", flush=True)
    if val and rl_cands:  # one RL policy, the validation's choice; without validation, every seed (mean)
        key, w_miss, seed, tab = min(rl_cands, key=lambda c: c[0])
        rl_cands = [(key, w_miss, seed, tab)]
        chosen["rl"] = {"w_miss": w_miss, "seed": seed}
        print(f"chosen on validation: {chosen}")
    for _, _, seed, tab in rl_cands:
        for d in test:
            add(simulate(cl, d, table_governor_for(tab, name="rl"), mem_share=m), seed)

    govs = ["performance", "powersave", "ondemand", "conservative", "schedutil", "oracle-static", "clairvoyant",
            "online-cpu", "online-task"] + ([] if sw is None else ["table"])
    govs += ["rl"] if a.seeds else []
    print("\nper held-out trace (rl: mean over seeds; ratios vs schedutil)  [SIMULATED]")
    print(f"{'trace':10} {'governor':14} {'energy J':>9} {'xE':>6} {'misses':>9} {'miss %':>7} {'EDP mJ*s':>9}")
    totals = {}
    for d in test:
        b = base[d.name]
        for g in govs:
            sel = [r for r in rows if r["demand"] == d.name and r["governor"] == g]
            e = statistics.mean(r["energy_j"] for r in sel)
            mi = statistics.mean(r["misses"] for r in sel)
            edp = statistics.mean(r["edp"] for r in sel)
            t = totals.setdefault(g, {"energy_j": 0.0, "misses": 0.0, "items": 0, "edp": 0.0})
            t["energy_j"] += e
            t["misses"] += mi
            t["items"] += sel[0]["items"]
            t["edp"] += edp
            print(f"{d.name:10} {g:14} {e:9.2f} {e / b.energy_j:6.2f} {mi:9.1f} {100 * mi / sel[0]['items']:7.2f} "
                  f"{1000 * edp:9.2f}")
    sb = totals["schedutil"]
    print("\nall held-out traces  [SIMULATED]")
    for g in govs:
        t = totals[g]
        print(f"{g:14} energy {t['energy_j']:8.2f} J (x{t['energy_j'] / sb['energy_j']:.3f})  misses "
              f"{t['misses']:8.1f} ({100 * t['misses'] / t['items']:.2f} %, x{t['misses'] / max(sb['misses'], 1):.3f})"
              f"  EDP x{t['edp'] / sb['edp']:.3f}")
    if a.seeds > 1 and not val:
        per_seed = [sum(r["energy_j"] for r in rows if r["governor"] == "rl" and r["seed"] == s)
                    for s in range(a.seeds)]
        per_seed_m = [sum(r["misses"] for r in rows if r["governor"] == "rl" and r["seed"] == s)
                      for s in range(a.seeds)]
        print(f"rl over {a.seeds} seeds: energy {statistics.mean(per_seed):.2f} +- {statistics.stdev(per_seed):.2f} J,"
              f" misses {statistics.mean(per_seed_m):.1f} +- {statistics.stdev(per_seed_m):.1f}")
    for g in [x for x in ("table", "rl") if x in totals]:
        print(ex.target_verdict(g, totals[g], sb))
    for g in [x for x in ("online-cpu", "online-task", "table", "rl") if x in totals]:
        print(ex.capture_verdict(g, totals[g], sb, totals["clairvoyant"]))
    out = {"simulated": True, "cluster": cl.describe(), "mem_share": m, "unit": a.unit, "hold_out_run": a.hold_out_run,
           "train": [d.name for d in train],
           "test": [d.name for d in test], "rows": rows, "totals": totals, "sweep_s": sweep_s, "rl_s": rl_s,
           "sweep_cpu_s": sweep_cpu_s, "rl_cpu_s": rl_cpu_s,
           "sweep_table": sw.table_.to_dict() if sw else None, "argv": sys.argv, "state": a.state,
           "validation": [d.name for d in val], "chosen": chosen}
    if a.json_out:
        from aios_lab.atomic import write_json_atomic
        write_json_atomic(a.json_out, out)
        print(f"\nwritten: {a.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
