#!/usr/bin/env python3
"""The staged verifier against its corpus: every stage's time and every verdict.

Runs `aios-lab verify`'s library over tests/data/policies/corpus/corpus.toml (the
kernel stages of every case in one boot of the pinned VM), prints per case
the time of each stage and whether it was caught at the right stage, then
the tally (caught / missed / caught at the wrong place / falsely rejected),
and, unless --no-end-to-end, the wall time of one `verify --stages
static,verifier` of mllb (boot included) against the 2-minute target.

`--stages` and `--cases` run a part (e.g. `--stages performance --cases
fifo,corpus_slower --rt`: the performance stage's time and, per case, its
ratios against EEVDF with their intervals).

Usage: .venv/bin/python benchmarks/verify_corpus.py [--cpus 2] [--stages S,..] [--cases NAME,..] [--rt]
       [--out results/verify-corpus.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from aios_lab import paths

CORPUS = paths.project_root() / "tests" / "data" / "policies" / "corpus"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-end-to-end", action="store_true")
    ap.add_argument("--stages", default=None, help="comma-separated stages (default: all)")
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: the whole corpus)")
    ap.add_argument("--rt", action="store_true", default=None, help="QEMU under SCHED_RR (vm.runner)")
    args = ap.parse_args()
    os.environ["AIOS_LAB_POLICY_PATH"] = str(CORPUS)
    from aios_lab.control.verify import STAGES, corpus, verify, verify_many

    cases = corpus.load(CORPUS / "corpus.toml")
    if args.cases:
        wanted = args.cases.split(",")
        cases = [c for c in cases if c.name in wanted]
    stages = tuple(s for s in STAGES if s in args.stages.split(",")) if args.stages else STAGES
    t0 = time.monotonic()
    reports = verify_many([c.case(stages) for c in cases], cpus=args.cpus, realtime=args.rt)
    wall = time.monotonic() - t0
    boot = next((r.target.get("platform", {}).get("boot") for r in reports if r.target.get("platform")), None)
    print(f"corpus: {len(cases)} cases in {wall:.1f}s wall (one boot"
          + (f": {boot['accel']} {boot['tcg']}-threaded QEMU {boot['qemu']}, command started "
             f"{boot['boot_to_command_s']}s after boot" if boot else "") + ")")
    print(f"{'case':<24} {'expect':<24} {'static':>7} {'verifier':>9} {'liveness':>9} {'perf':>7}  verdict")
    tally: dict[str, int] = {}
    rows = []
    sv = []
    for c, r in zip(cases, reports):
        secs = {s.stage: (None if s.skipped else s.seconds) for s in r.stages}
        verdict = corpus.judge(c, r)
        tally[verdict] = tally.get(verdict, 0) + 1
        fmt = lambda v: "-" if v is None else f"{v:.1f}s"  # noqa: E731
        print(f"{c.name:<24} {c.expect:<24} {fmt(secs.get('static')):>7} {fmt(secs.get('verifier')):>9} "
              f"{fmt(secs.get('liveness')):>9} {fmt(secs.get('performance')):>7}  {verdict}"
              + (f"  ({r.to_dict()['reason'][:90]})" if not r.passed else ""))
        perf = next((s for s in r.stages if s.stage == "performance" and not s.skipped), None)
        if perf is not None:
            ctl = perf.checks[0].evidence["control"]
            print(f"    placement control x{ctl['ratio']} (pinned {ctl['pinned_s']}, free {ctl['free_s']})")
            for ch in perf.checks[1:]:
                for cmp in ch.evidence.get("comparisons", []):
                    lo, hi = cmp["interval"] or (None, None)
                    print(f"    vs {cmp['against']:<8} {cmp['metric']:<12} x{cmp['ratio']:.3f} "
                          f"[{lo}, {hi}] at {cmp['level']}  p={cmp['p']}  {cmp['verdict']}")
                for arm in ("eevdf", "candidate", "deployed"):
                    vals = [x["value"] for x in ch.evidence.get("samples", [])
                            if x["arm"] == arm and x["metric"] == "makespan_s"]
                    if vals:
                        print(f"    {arm:<9} makespan_s {', '.join(f'{v:.2f}' for v in vals)}")
        if secs.get("static") is not None and secs.get("verifier") is not None:
            sv.append(secs["static"] + secs["verifier"])
        rows.append({"case": c.name, "expect": c.expect, "verdict": verdict, "seconds": secs, "report": r.to_dict()})
    print("tally: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    if sv:
        print(f"static + kernel-verifier stage time per case: median {statistics.median(sv):.1f}s "
              f"[{min(sv):.1f}-{max(sv):.1f}] (target < 120 s)")
    out = {"cases": rows, "tally": tally, "wall_s": wall, "boot": boot}
    if not args.no_end_to_end:
        t1 = time.monotonic()
        rep = verify("mllb", stages=("static", "verifier"), cpus=args.cpus)
        e2e = time.monotonic() - t1
        print(f"end to end: verify mllb --stages static,verifier {e2e:.1f}s wall, boot included "
              f"({'PASS' if rep.passed else 'FAIL'}; target < 120 s: {'met' if e2e < 120 else 'MISSED'})")
        out["end_to_end_static_verifier_s"] = e2e
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=str))
    return 0 if tally.get("missed", 0) + tally.get("wrong-place", 0) + tally.get("falsely-rejected", 0) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
