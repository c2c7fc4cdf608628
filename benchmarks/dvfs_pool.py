#!/usr/bin/env python3
"""Pool dvfs_bench.py runs that held out different runs (cross-validation).

Each JSON file is one fold (`dvfs_bench.py --hold-out-run N --json-out F`).
Prints each fold's totals against schedutil and the pooled totals: energy
and misses summed over every fold's held-out traces, so each recorded run is
judged once by a table that never saw it. SIMULATED, as the inputs are.

    .venv/bin/python benchmarks/dvfs_pool.py results/dvfs/cv-run*.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aios_lab.dvfs import experiment as ex


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folds", nargs="+", type=Path)
    a = ap.parse_args()
    folds = []
    for p in a.folds:
        try:
            folds.append(json.loads(p.read_text()))
        except (OSError, ValueError) as e:
            print(f"error: cannot read {p} as JSON ({e}); give the files dvfs_bench.py --json-out wrote", file=sys.stderr)
            return 2
    for f, p in zip(folds, a.folds):
        if not isinstance(f, dict) or not f.get("simulated") or "totals" not in f:
            print(f"error: {p} is not a dvfs_bench.py result (no totals); run dvfs_bench.py --json-out", file=sys.stderr)
            return 2
    runs = [f.get("hold_out_run") for f in folds]
    if len(set(runs)) != len(runs):
        print(f"error: two files hold out the same run ({runs}): each run must be judged once", file=sys.stderr)
        return 2
    govs = [g for g in folds[0]["totals"] if all(g in f["totals"] for f in folds)]
    print("SIMULATED: per fold (held-out run), ratios vs schedutil in the same fold")
    print(f"{'run':>4} {'governor':14} {'energy J':>9} {'xE':>6} {'misses':>9} {'xM':>6}")
    pooled = {g: {"energy_j": 0.0, "misses": 0.0, "items": 0} for g in govs}
    for f in folds:
        sb = f["totals"]["schedutil"]
        for g in govs:
            t = f["totals"][g]
            for k in pooled[g]:
                pooled[g][k] += t[k]
            print(f"{f.get('hold_out_run', '?'):>4} {g:14} {t['energy_j']:9.2f} {t['energy_j'] / sb['energy_j']:6.3f} "
                  f"{t['misses']:9.1f} {t['misses'] / max(sb['misses'], 1):6.3f}")
    sb = pooled["schedutil"]
    print(f"\npooled over {len(folds)} folds (runs {', '.join(map(str, runs))} held out)  [SIMULATED]")
    for g in govs:
        t = pooled[g]
        print(f"{g:14} energy {t['energy_j']:8.2f} J (x{t['energy_j'] / sb['energy_j']:.3f})  misses {t['misses']:8.1f} "
              f"({100 * t['misses'] / max(t['items'], 1):.2f} %, x{t['misses'] / max(sb['misses'], 1):.3f})")
    for g in [x for x in ("online-task", "table", "rl") if x in pooled]:
        print(ex.target_verdict(g, pooled[g], sb, where=", pooled"))
    if "clairvoyant" in pooled:   # issue 22's second target, on the same folds
        for g in [x for x in ("online-cpu", "online-task", "table", "rl") if x in pooled]:
            print(ex.capture_verdict(g, pooled[g], sb, pooled["clairvoyant"], where=", pooled"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
