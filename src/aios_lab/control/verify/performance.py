"""Stage 4, performance: is the candidate worse than EEVDF (and than the
deployed policy) on a chosen workload?

The comparison is the benchmarks' own (bench.run.run_interleaved): the arms
take turns, rotated each round, each run attaching its scheduler afresh, on
the same workload; the placement control (bench.control) first checks that
this platform can reward a good placement at all. Every metric is "lower is
better". Each (metric, reference arm) pair gets the ratio of medians, a
two-sided Mann-Whitney U p-value and a distribution-free interval on the
ratio (bench.verdict.ratio_interval), both Bonferroni-corrected for the
number of pairs; the verdict per pair:

- worse: the whole interval lies above 1 + the metric's margin;
- better: the whole interval lies below 1;
- no-worse: the interval's top is at most 1 + margin (non-inferiority shown);
- inconclusive: none of these (too few runs for this spread).

The stage fails only on "worse": it rejects a policy on evidence, never for
lack of it; the report says how many runs a 5 % difference would need.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import workloads
from ...bench import control as bench_control
from ...bench.run import run_interleaved
from ...bench.spec import Baseline, PlainPolicy, SchedSpec
from ...bench.verdict import mann_whitney_p, ratio_interval, runs_needed
from ...sched import sched_ext
from ...sched.deployment import Deployment
from ...sched.policy import Policy
from . import criteria
from .report import Check, StageReport

CANDIDATE, EEVDF, DEPLOYED = "candidate", "eevdf", "deployed"
# What each run records as a sample (registry: arm, metric, run_index,
# value, unit); the judged metrics are criteria.PERF_MARGINS' keys.
UNITS = {"makespan_s": "s", "runq_wait_s": "s", "runq_wait_per_slice_us": "us", "migrate": "count",
         "switch": "count", "wakeup": "count"}


@dataclass(frozen=True)
class StoredArm(PlainPolicy):
    """The deployed arm as a registry entry: its stored object, written out
    by the caller (control.stored.materialize) where the guest can read it,
    never the policy of that name on the search path (a new version of the
    same policy is the usual candidate: that would compare it with itself)."""
    folder: str = ""
    entry: str = ""

    def start(self, model):
        from ..stored import load

        return Deployment(load(Path(self.folder), self.entry), dict(self.tunables)).start(), None


def deployed_arm(deployed: dict[str, Any]) -> PlainPolicy:
    """{"policy", "tunables"} and, for a registry entry, "entry" and "folder"."""
    tunables = tuple((deployed.get("tunables") or {}).items())
    if deployed.get("entry"):
        return StoredArm(DEPLOYED, deployed["policy"], tunables, deployed["folder"], deployed["entry"])
    return PlainPolicy(DEPLOYED, deployed["policy"], tunables)


# One placement control per process (a boot): it measures the platform, not a policy.
_control: dict | None = None


def placement_control() -> dict:
    global _control
    if _control is None:
        _control = bench_control.run_control(criteria.PERF_CONTROL_LOOPS, criteria.PERF_CONTROL_REPEAT).to_dict()
    return _control


def compare(cand: list[float], ref: list[float], margin: float, family: int) -> dict[str, Any]:
    """One (metric, reference) comparison, corrected for a family of `family` pairs."""
    alpha = criteria.PERF_ALPHA / family
    ratio = statistics.median(cand) / statistics.median(ref) if cand and ref and statistics.median(ref) else None
    p = mann_whitney_p(cand, ref)
    ci = ratio_interval(cand, ref, alpha)
    if ci is None:
        verdict = "inconclusive"
    elif ci[0] > 1 + margin:
        verdict = "worse"
    elif ci[1] < 1:
        verdict = "better"
    elif ci[1] <= 1 + margin:
        verdict = "no-worse"
    else:
        verdict = "inconclusive"
    return {"ratio": None if ratio is None else round(ratio, 4),
            "interval": None if ci is None else [round(ci[0], 4), round(ci[1], 4) if ci[1] != float("inf") else None],
            "level": round(1 - alpha, 5), "p": None if p is None else round(p, 5),
            "p_bonferroni": None if p is None else round(min(1.0, p * family), 5),
            "margin": margin, "verdict": verdict,
            "runs_for_5pct": runs_needed(ref)}


def overall(comparisons: list[dict]) -> str:
    """worse if any pair is; better if the primary metric is better against
    every reference; else no-worse (which may include inconclusive pairs:
    the report lists each)."""
    if any(c["verdict"] == "worse" for c in comparisons):
        return "worse"
    primary = [c for c in comparisons if c["metric"] == criteria.PERF_PRIMARY]
    if primary and all(c["verdict"] == "better" for c in primary):
        return "better"
    return "no-worse"


def samples(runs: list[dict]) -> list[dict[str, Any]]:
    """Every run's raw values, as the registry stores them (control.entry.Sample)."""
    out = []
    index: dict[str, int] = {}
    for r in runs:
        arm = r["scheduler"]
        i = index[arm] = index.get(arm, -1) + 1
        for metric, unit in UNITS.items():
            if r.get(metric) is not None:
                out.append({"arm": arm, "metric": metric, "run_index": i, "value": float(r[metric]), "unit": unit})
    return out


def judge(runs: list[dict], arms: list[str]) -> tuple[list[dict], str]:
    refs = [a for a in arms if a != CANDIDATE]
    family = len(refs) * len(criteria.PERF_MARGINS)
    comparisons = []
    for ref in refs:
        for metric, margin in criteria.PERF_MARGINS.items():
            cand = [float(r[metric]) for r in runs if r["scheduler"] == CANDIDATE and r.get(metric) is not None]
            base = [float(r[metric]) for r in runs if r["scheduler"] == ref and r.get(metric) is not None]
            comparisons.append({"metric": metric, "against": ref, **compare(cand, base, margin, family)})
    return comparisons, overall(comparisons)


def _reason(comparisons: list[dict]) -> str:
    worse = [c for c in comparisons if c["verdict"] == "worse"]
    def one(c: dict) -> str:
        lo, hi = c["interval"]
        return (f"{c['against']} on {c['metric']}: x{c['ratio']:.2f} (interval {lo:.2f}-"
                f"{'inf' if hi is None else f'{hi:.2f}'}, wholly above the {c['margin']:.0%} margin)")

    return "worse than " + "; ".join(one(c) for c in worse)


def run(policy: Policy, tunables: dict[str, Any], deployed: dict[str, Any] | None = None,
        workload: str | None = None, runs: int | None = None) -> StageReport:
    t0 = time.monotonic()
    runs = runs or criteria.PERF_RUNS
    sched_ext.require_free()
    wl = workloads.get(workload or criteria.PERF_WORKLOAD)
    wl.check()
    wl.run_prepare()
    ctl = placement_control()
    judged = bench_control.judges(ctl.get("ratio"), ctl.get("threshold", bench_control.THRESHOLD))
    checks = [Check("platform", judged,
                    f"the placement control (bench.control: CPU-bound spinners pinned to one CPU vs free, "
                    f"under EEVDF) differs by at least x{bench_control.THRESHOLD}: this platform can tell a "
                    "policy that keeps every CPU busy from one that does not",
                    {"control": ctl},
                    "" if judged else f"this platform cannot judge performance: the placement control's "
                    f"pinned/free ratio is x{ctl.get('ratio')}, below x{bench_control.THRESHOLD} (in a TCG VM "
                    "on a busy host: give QEMU the host's cores with --rt / AIOS_LAB_VM_RT=1)")]
    if not judged:
        return StageReport.from_checks("performance", checks, time.monotonic() - t0)
    specs: list[SchedSpec] = [Baseline(EEVDF), PlainPolicy(CANDIDATE, policy.name, tuple(tunables.items()))]
    if deployed is not None:
        specs.append(deployed_arm(deployed))
    got = run_interleaved(specs, wl, runs, rotate=True)
    arms = [s.label for s in specs]
    comparisons, verdict = judge(got, arms)
    evidence = {"verdict": verdict,
                # whether non-inferiority was shown for every pair, not only worse ruled out
                "shown_not_worse": all(c["verdict"] in ("better", "no-worse") for c in comparisons),
                "workload": {"name": wl.name, "command": wl.command},
                "runs_per_arm": runs, "arms": {s.label: s.policy or EEVDF for s in specs},
                "deployed_tunables": (deployed or {}).get("tunables"),
                "deployed_entry": (deployed or {}).get("entry"),
                "correction": "bonferroni", "alpha": criteria.PERF_ALPHA, "comparisons": comparisons,
                "samples": samples(got)}
    checks.append(Check(
        "verdict", verdict != "worse",
        "the candidate is not worse than "
        + " or ".join(a for a in arms if a != CANDIDATE) + ": for each of "
        + ", ".join(f"{m} (margin {v:.0%})" for m, v in criteria.PERF_MARGINS.items())
        + f", the Bonferroni-corrected (family alpha {criteria.PERF_ALPHA}) Hodges-Lehmann interval on the "
          "ratio candidate/reference does not lie wholly above 1 + margin",
        evidence, "" if verdict != "worse" else _reason(comparisons)))
    return StageReport.from_checks("performance", checks, time.monotonic() - t0)
