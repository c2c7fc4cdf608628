"""Verdicts of a scheduler comparison: ratios with a significance test, and
how many runs a given difference needs at the spread measured.

Makespans in an emulated guest are noisy (+-20 % between runs of one
scheduler on 4 vCPUs over 2 host cores), so a ratio alone says little: every
ratio comes with a two-sided Mann-Whitney U test over the interleaved runs
(rank-based, so one slow run cannot dominate it), and a verdict is "better"
or "worse" only where that test says so. The number of runs needed to see a
5 % difference is computed from the baseline's own coefficient of variation
(normal approximation, alpha 0.05, power 0.8), so a reader can tell a
"no difference" that means no difference from one that means too few runs.
Every load-balancing verdict is "not judged" when the placement control says
the platform cannot reward a good placement (bench.control).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .control import judges, not_judged_banner

ALPHA = 0.05
POWER = 0.8
EFFECT = 0.05


def mann_whitney_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value; None with fewer than 2 runs a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import mannwhitneyu

    if len(set(a) | set(b)) == 1:
        return 1.0  # identical samples: no evidence of a difference
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _u_counts(n: int, m: int) -> list[int]:
    """How many of the C(n+m, n) orderings of two samples (sizes n, m, no
    ties) give each value of the Mann-Whitney U statistic, 0..n*m."""
    # f[j][u]: orderings of i first-sample and j second-sample values with U = u,
    # built up one first-sample value at a time (it adds j to U).
    f = [[1] for _ in range(m + 1)]
    for _i in range(1, n + 1):
        g: list[list[int]] = []
        for j in range(m + 1):
            row = [0] * (len(f[j]) + j)
            for u, c in enumerate(f[j]):          # the new value is the largest: beats all j
                row[u + j] += c
            if j:
                for u, c in enumerate(g[j - 1]):  # the largest value is a second-sample one
                    row[u] += c
            g.append(row)
        f = g
    return f[m]


def ratio_interval(a: list[float], b: list[float], alpha: float = ALPHA) -> tuple[float, float] | None:
    """Distribution-free confidence interval, level 1 - alpha, for the ratio
    of a typical value of ``a`` to one of ``b``: the Hodges-Lehmann interval
    of the shift in log values that inverts the exact Mann-Whitney U test
    (so it excludes 1 exactly when that test rejects at alpha). None with
    fewer than 2 positive values a side; (0, inf) when n is too small for
    any interval at this alpha."""
    la = [math.log(x) for x in a if x > 0]
    lb = [math.log(x) for x in b if x > 0]
    if len(la) < 2 or len(lb) < 2:
        return None
    counts = _u_counts(len(la), len(lb))
    total = sum(counts)
    # c: how many of the sorted pairwise differences to cut from each end:
    # the largest c with P(U <= c - 1) <= alpha / 2.
    c, cum = 0, 0
    while c < len(counts) and (cum + counts[c]) / total <= alpha / 2:
        cum += counts[c]
        c += 1
    if c == 0:
        return (0.0, math.inf)
    diffs = sorted(x - y for x in la for y in lb)
    return (math.exp(diffs[c - 1]), math.exp(diffs[len(diffs) - c]))


def runs_needed(values: list[float], effect: float = EFFECT, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Runs per scheduler to detect a relative difference ``effect`` at the
    spread of ``values`` (two-sample, normal approximation)."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    if mean <= 0:
        return None
    cv = statistics.stdev(values) / mean
    from scipy.stats import norm

    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return max(2, math.ceil(2 * (z * cv / effect) ** 2))


@dataclass(frozen=True)
class Comparison:
    scheduler: str
    against: str
    metric: str
    ratio: float | None        # median(scheduler) / median(against)
    p: float | None

    @property
    def verdict(self) -> str:
        if self.ratio is None or self.p is None:
            return "too few runs"
        if self.p >= ALPHA:
            return "no significant difference"
        return "lower" if self.ratio < 1 else "higher"

    def to_dict(self) -> dict:
        return {"scheduler": self.scheduler, "against": self.against, "metric": self.metric,
                "ratio": None if self.ratio is None else round(self.ratio, 4),
                "p": None if self.p is None else round(self.p, 5), "verdict": self.verdict}


def compare(runs: list[dict], scheduler: str, against: str, metric: str) -> Comparison:
    a = [float(r[metric]) for r in runs if r["scheduler"] == scheduler and r.get(metric) is not None]
    b = [float(r[metric]) for r in runs if r["scheduler"] == against and r.get(metric) is not None]
    ratio = statistics.median(a) / statistics.median(b) if a and b and statistics.median(b) else None
    return Comparison(scheduler, against, metric, ratio, mann_whitney_p(a, b))


# The targets of learned load balancing (after the OSS-NA-2025 sched_ext ML
# load balancer: 77 % fewer migrations and a 10 % shorter makespan).
MIGRATION_CUT = 0.80
MAKESPAN_GAIN = 0.05
LATENCY_SLACK = 0.10


def judge(runs: list[dict], schedulers: list[str], baseline: str, control: dict | None) -> dict:
    """Comparisons against the baseline and, for a learned model, the targets.

    ``control`` is the placement control's dict (ControlResult.to_dict) or
    None when none ran; without a passing control nothing is judged.
    """
    judged = control is not None and judges(control.get("ratio"), control.get("threshold", 1.5))
    base_ms = [r["makespan_s"] for r in runs if r["scheduler"] == baseline]
    out: dict = {"judged": judged, "baseline": baseline, "runs_for_5pct": runs_needed(base_ms),
                 "runs_per_scheduler": {s: sum(r["scheduler"] == s for r in runs) for s in schedulers},
                 "comparisons": [], "targets": []}
    metrics = ["makespan_s", "migrate"] + [m for m in ("wc_loss_s", "latency_p99_ns")
                                           if any(r.get(m) is not None for r in runs)]
    for s in schedulers:
        if s == baseline:
            continue
        for m in metrics:
            out["comparisons"].append(compare(runs, s, baseline, m).to_dict())
    for model in [s for s in schedulers if s.endswith("-model")]:
        stem = model[: -len("-model")]
        ms = compare(runs, model, baseline, "makespan_s")
        mig = compare(runs, model, baseline, "migrate")
        checks = [
            ("migrations at least 80 % fewer than " + baseline,
             mig.ratio is not None and mig.ratio <= 1 - MIGRATION_CUT, mig),
            ("makespan at least 5 % shorter than " + baseline + " (significant)",
             ms.ratio is not None and ms.ratio <= 1 - MAKESPAN_GAIN and ms.verdict == "lower", ms),
        ]
        if any(r.get("latency_p99_ns") is not None for r in runs):
            lat = compare(runs, model, baseline, "latency_p99_ns")
            checks.append((f"p99 wakeup latency within 10 % of {baseline}",
                           lat.ratio is not None and lat.ratio <= 1 + LATENCY_SLACK, lat))
        for rival in (f"{stem}-collect", f"{stem}-stay"):
            if rival in schedulers:
                c = compare(runs, model, rival, "makespan_s")
                checks.append((f"makespan shorter than {rival} (significant)", c.verdict == "lower", c))
        for what, ok, c in checks:
            status = ("met" if ok else "missed") if judged else "not judged"
            out["targets"].append({"scheduler": model, "target": what, "status": status, **c.to_dict()})
    for stay in [s for s in schedulers if s.endswith("-stay")]:
        c = compare(runs, stay, baseline, "makespan_s")
        # The never-migrate control must lose: if it does not, makespans here
        # cannot tell balancing from not balancing.
        status = ("met" if c.verdict == "higher" else "missed") if judged else "not judged"
        out["targets"].append({"scheduler": stay, "target": f"never-migrate control slower than {baseline}",
                               "status": status, **c.to_dict()})
    return out


def format_verdicts(v: dict, control: dict | None) -> list[str]:
    lines = []
    if not v["judged"]:
        lines.append(not_judged_banner(control.get("ratio") if control else None))
    need = v.get("runs_for_5pct")
    have = min(v["runs_per_scheduler"].values()) if v["runs_per_scheduler"] else 0
    if need is not None:
        lines.append(f"runs needed to detect a 5 % makespan difference at {v['baseline']}'s spread "
                     f"(alpha {ALPHA}, power {POWER}): {need} per scheduler; this run has {have}"
                     + ("" if have >= need else " (TOO FEW: a 'no significant difference' here means little)"))
    for c in v["comparisons"]:
        r = "-" if c["ratio"] is None else f"x{c['ratio']:.3f}"
        p = "-" if c["p"] is None else f"{c['p']:.3g}"
        lines.append(f"  {c['scheduler']:13} vs {c['against']:13} {c['metric']:11} {r:>8}  "
                     f"Mann-Whitney p={p:<7} {c['verdict']}")
    for t in v["targets"]:
        r = "-" if t["ratio"] is None else f"x{t['ratio']:.3f}"
        lines.append(f"  target [{t['status'].upper()}] {t['scheduler']}: {t['target']} ({r}, p={t['p']})")
    return lines
