"""Side-by-side comparison of runs (``aios-lab compare A B ... --report``).

Runs are grouped by label: ``--label`` per trace, else the trace folder's
name without a trailing ``-N`` run number (``build-eevdf-1`` and
``build-eevdf-2`` are two runs of ``build-eevdf``). The first group is the
baseline unless one is named.

Statistics, per metric (each run contributes one value; waits inside a run
are not independent samples, so runs are the unit):
- per group: mean, sample standard deviation and a 95 % Student-t
  confidence interval of the mean (n >= 2);
- per group against the baseline: the ratio of means with a 95 %
  confidence interval (delta method on the log ratio, Welch-Satterthwaite
  degrees of freedom) and Welch's t-test p-value (unequal variances), both
  when each group has n >= 2. With one run per group only the ratio is
  given, and the report says so.
- the p-values are adjusted for the number of comparisons in the table
  (every metric of every group against the baseline is one test) with
  Benjamini-Hochberg: a 10-metric, 3-group table makes 30 tests, and at
  p < 0.05 one and a half of them would look significant by chance alone.
  BH bounds the expected share of false discoveries among the reported
  ones instead; the raw Welch p stays in the JSON as ``p_welch``.
- a group with fewer than ``MIN_RUNS`` runs gets a warning: with 2 or 3
  runs the t-interval is wide and Welch's test has little power, so a
  non-significant difference there says little.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from aios_lab.analysis import plots
from aios_lab.analysis.html import esc, fmt_ns, fmt_num, img, page, table, write_html
from aios_lab.analysis.metrics import QUANTILE_KEYS, mean_util, trace_metrics
from aios_lab.analysis.report import warnings_of
from aios_lab.errors import AiosError, InputError
from aios_lab.telemetry.schema import WAIT_HIST_BUCKETS

# Below this many runs a group's interval and test are too weak to lean on (warned, not refused).
MIN_RUNS = 5
P_ADJUST = "Benjamini-Hochberg"

def _rq_mean(m: dict) -> float | None:
    vals = [v for row in m["time"].get("rq_len") or [] for v in row if v is not None]
    return sum(vals) / len(vals) if vals else None


def _cross_llc_per_s(m: dict) -> float | None:
    mig, d = m["migrations"], m["duration_s"]
    if not mig.get("by_domain") or not d:
        return None
    return (mig["by_domain"]["cross_llc"] + mig["by_domain"]["cross_node"]) / d


# key, label, unit ("ns", "s", "rate", "frac", "num"), getter. Lower is better for all but util.
METRICS: list[tuple[str, str, str, Callable[[dict], float | None]]] = [
    ("wait_mean", "wait mean", "ns", lambda m: m["wait"].get("mean_ns")),
    ("wait_p50", "wait p50", "ns", lambda m: m["wait"].get("p50_ns")),
    ("wait_p90", "wait p90", "ns", lambda m: m["wait"].get("p90_ns")),
    ("wait_p99", "wait p99", "ns", lambda m: m["wait"].get("p99_ns")),
    ("wait_p999", "wait p99.9", "ns", lambda m: m["wait"].get("p999_ns")),
    ("duration", "duration (makespan)", "s", lambda m: m["duration_s"]),
    ("migrations_per_s", "migrations/s", "rate", lambda m: m["migrations"].get("rate_per_s")),
    ("cross_llc_per_s", "cross-LLC/node migrations/s", "rate", _cross_llc_per_s),
    ("switches_per_s", "context switches/s", "rate", lambda m: m["switches"].get("rate_per_s")),
    ("util", "mean CPU utilisation", "frac", mean_util),
    ("rq_len", "mean run-queue length", "num", _rq_mean),
]


def default_label(trace: str | Path) -> str:
    """The folder name without a trailing -N (run number)."""
    return re.sub(r"-\d+$", "", Path(trace).resolve().name) or Path(trace).name


def _t_ci(values: np.ndarray) -> float | None:
    from scipy import stats

    n = len(values)
    if n < 2:
        return None
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def _ratio_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float] | None:
    """95 % interval of mean(a)/mean(b): the delta method on the log ratio,
    with Welch-Satterthwaite degrees of freedom (the t-interval's logic,
    carried to a ratio). A percentile bootstrap was tried first: with the
    2 runs per group `make demo` makes, it can only resample 3 distinct
    means and gave intervals far narrower than the groups' own t-intervals."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or a.mean() <= 0 or b.mean() <= 0:
        return None
    va = a.var(ddof=1) / (len(a) * a.mean() ** 2)
    vb = b.var(ddof=1) / (len(b) * b.mean() ** 2)
    r = a.mean() / b.mean()
    if va + vb == 0:
        return r, r
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * math.sqrt(va + vb)
    return float(r * math.exp(-half)), float(r * math.exp(half))


def _welch_p(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        return 1.0 if a.mean() == b.mean() else 0.0  # no spread: the means decide
    import warnings

    with warnings.catch_warnings():
        # Nearly identical runs make scipy warn about precision; the p-value stands.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def bh_adjust(pvalues: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values over the non-None entries (the
    family); None stays None."""
    from scipy import stats

    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if idx:
        adj = stats.false_discovery_control([pvalues[i] for i in idx], method="bh")
        for i, q in zip(idx, adj):
            out[i] = float(q)
    return out


def _adjust_ratios(ratios: dict[str, dict[str, Any]]) -> int:
    """Adds ``p`` (BH-adjusted over every test in the table) beside each
    ``p_welch``; returns the number of tests in the family."""
    cells = [r for per_group in ratios.values() for r in per_group.values() if r is not None]
    adjusted = bh_adjust([r["p_welch"] for r in cells])
    for r, q in zip(cells, adjusted):
        r["p"] = q
    return sum(q is not None for q in adjusted)


def _few_runs_warnings(groups: list[dict]) -> list[str]:
    few = [f"{g['label']} ({g['runs']})" for g in groups if g["runs"] < MIN_RUNS]
    if not few:
        return []
    return [f"fewer than {MIN_RUNS} runs in {', '.join(few)}: intervals are wide and the tests "
            "have little power; repeat the runs (e.g. bench-schedulers --repeat 5)"]


def compare_metrics(runs: Sequence[tuple[str, dict]], baseline: str | None = None) -> dict[str, Any]:
    """Statistics over (label, trace_metrics) pairs; see the module docstring."""
    if len(runs) < 2:
        raise AiosError("compare needs at least two traces", hint="give two or more trace folders")
    order: list[str] = []
    for label, _ in runs:
        if label not in order:
            order.append(label)
    base = baseline or order[0]
    if base not in order:
        raise AiosError(f"baseline {base!r} is not one of the labels: {', '.join(order)}",
                        hint="use one of those labels, or leave --baseline out")
    order.remove(base)
    order.insert(0, base)
    values = {g: {k: [] for k, *_ in METRICS} for g in order}
    for label, m in runs:
        for key, _, _, get in METRICS:
            v = get(m)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                values[label][key].append(float(v))
    groups = []
    for g in order:
        stats_g = {}
        for key, *_ in METRICS:
            a = np.array(values[g][key], dtype=float)
            stats_g[key] = {"n": len(a), "values": a.tolist(),
                            "mean": float(a.mean()) if len(a) else None,
                            "sd": float(a.std(ddof=1)) if len(a) > 1 else None,
                            "ci95": _t_ci(a)}
        groups.append({"label": g, "runs": sum(1 for lab, _ in runs if lab == g), "stats": stats_g})
    ratios: dict[str, dict[str, Any]] = {}
    for g in order[1:]:
        ratios[g] = {}
        for key, *_ in METRICS:
            a = np.array(values[g][key], dtype=float)
            b = np.array(values[base][key], dtype=float)
            if not len(a) or not len(b) or b.mean() == 0:
                ratios[g][key] = None
                continue
            ci = _ratio_ci(a, b)
            ratios[g][key] = {"ratio": float(a.mean() / b.mean()),
                              "ci95": list(ci) if ci else None, "p_welch": _welch_p(a, b)}
    n_tests = _adjust_ratios(ratios)
    return {"baseline": base, "labels": order,
            "p_adjust": {"method": P_ADJUST, "tests": n_tests},
            "warnings": _few_runs_warnings(groups),
            "metrics": [{"key": k, "label": lab, "unit": u} for k, lab, u, _ in METRICS],
            "groups": groups, "ratios": ratios,
            "runs": [{"label": lab, "trace": m["trace"], "status": m["status"],
                      "values": {k: get(m) for k, _, _, get in METRICS}} for lab, m in runs]}


def _run_identity(path: str | Path) -> tuple | None:
    """(host, start times) of a collected trace: equal for a copy of the same
    run. None when the metadata lacks them (hand-made traces)."""
    from aios_lab.telemetry.trace import Trace

    md = Trace.open(path).metadata
    host, start = (md.get("host") or {}).get("hostname"), md.get("start") or {}
    if host is None or start.get("monotonic_ns") is None or start.get("wall") is None:
        return None
    return ("run", host, start["monotonic_ns"], start["wall"])


def compare_traces(traces: Sequence[str | Path], labels: Sequence[str] | None = None,
                   baseline: str | None = None, memory_limit: str | None = None
                   ) -> tuple[dict[str, Any], list[tuple[str, dict]]]:
    """Metrics of every trace, then their comparison."""
    if labels and len(labels) != len(traces):
        raise AiosError(f"{len(labels)} labels for {len(traces)} traces",
                        hint="give one --label per trace, in order, or none")
    seen: dict[object, str | Path] = {}
    for t in traces:  # the same run twice (a path, a link, a copy) would count as two runs
        for key in (os.path.realpath(t), _run_identity(t)):
            if key is not None and key in seen:
                raise InputError(f"trace {t} is the same run as {seen[key]}; each run counts once",
                                 hint="pass every trace once")
            seen[key] = t
    runs = [((labels[i] if labels else default_label(t)), trace_metrics(t, memory_limit=memory_limit))
            for i, t in enumerate(traces)]
    return compare_metrics(runs, baseline), runs


# -- rendering ---------------------------------------------------------------------------------

def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "ns":
        return fmt_ns(v)
    if unit == "s":
        return f"{v:.3g} s"
    if unit == "frac":
        return f"{100 * v:.1f} %"
    return fmt_num(v)


def _mean_ci(s: dict, unit: str) -> str:
    if s["mean"] is None:
        return "n/a"
    txt = fmt_value(s["mean"], unit)
    return txt + (f" ± {fmt_value(s['ci95'], unit)}" if s["ci95"] is not None else "")


def _ratio_txt(r: dict | None) -> tuple[str, str]:
    if r is None:
        return "n/a", ""
    txt = f"x{r['ratio']:.3f}"
    if r["ci95"]:
        txt += f" [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
    p = r.get("p")
    return txt, ("" if p is None else f"{p:.3g}")


def _metric_rows(c: dict[str, Any]) -> list[list[str]]:
    """Per metric: its label, then per group mean ± CI (+ ratio [CI] p= after the baseline)."""
    rows = []
    for m in c["metrics"]:
        row = [m["label"]]
        for i, g in enumerate(c["groups"]):
            cell = _mean_ci(g["stats"][m["key"]], m["unit"])
            if i:
                r, p = _ratio_txt(c["ratios"][g["label"]][m["key"]])
                cell += f"  {r}" + (f" p={p}" if p else "")
            row.append(cell)
        rows.append(row)
    return rows


def format_comparison(c: dict[str, Any]) -> str:
    """Plain-text table for the terminal: mean ± CI per group, then ratio and p."""
    lines = [f"baseline: {c['baseline']}   runs: " +
             ", ".join(f"{g['label']} x{g['runs']}" for g in c["groups"])]
    table_rows = [["metric"] + [g["label"] for g in c["groups"]]] + _metric_rows(c)
    widths = [max(len(r[i]) for r in table_rows) for i in range(len(table_rows[0]))]
    for k, r in enumerate(table_rows):
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("-" * len(lines[-1]))
    lines.append(_p_note(c))
    if any(g["runs"] < 2 for g in c["groups"]):
        lines.append("(one run in some group: no confidence interval or test there; repeat runs "
                     "for them)")
    lines += [f"warning: {w}" for w in c["warnings"]]
    return "\n".join(lines)


def _p_note(c: dict[str, Any]) -> str:
    n = c["p_adjust"]["tests"]
    return (f"p: Welch's t-test, adjusted for the {n} comparisons in this table "
            f"({c['p_adjust']['method']}; raw p as p_welch in --json)")


def render_comparison(c: dict[str, Any], runs: list[tuple[str, dict]]) -> str:
    warnings = list(c["warnings"])
    for lab, m in runs:
        warnings += [f"{lab}: {w}" for w in warnings_of(m)]
    groups = c["groups"]
    sections = [
        "<h2>Runs</h2>" + table(["label", "trace", "status", "duration", "events"],
                                [[lab, m["trace"], m["status"], fmt_value(m["duration_s"], "s"),
                                  f"{m['events']:,}"] for lab, m in runs], left=3),
        '<p class="note">' + esc(
            f"Baseline: {c['baseline']}. Mean ± 95 % t-interval per group over its runs; ratio of "
            "means to the baseline with a 95 % interval (delta method on the log ratio); "
            + _p_note(c) + ". Runs are the "
            "unit of replication (waits within a run are not independent).") + "</p>",
    ]
    heads = ["metric"] + [f"{g['label']} (n={g['runs']})" for g in groups]
    sections.append("<h2>Metrics</h2>" + table(heads, _metric_rows(c), left=1))
    if any(g["runs"] < 2 for g in groups):
        sections.append('<p class="note">Some groups have one run: no interval or test for them. '
                        "Repeat the runs to get them.</p>")
    keys = ("wait_p50", "wait_p99", "wait_p999", "duration", "migrations_per_s", "switches_per_s")
    labels = [g["label"] for g in groups]
    by_key = {m["key"]: m["label"] for m in c["metrics"]}
    others = [g["label"] for g in groups[1:]]

    def point(g: str, k: str):
        r = c["ratios"][g][k]
        return None if r is None else (r["ratio"], *(r["ci95"] or (None, None)))
    sections.append("<h2>Ratios to the baseline</h2>" + img(plots.ratio_points(
        others, [by_key[k] for k in keys], [[point(g, k) for k in keys] for g in others],
        c["baseline"]), "ratios"))
    pooled = []
    for g in groups:
        hist = np.sum([np.array(m["wait"].get("hist") or [0] * WAIT_HIST_BUCKETS) for lab, m in runs
                       if lab == g["label"]], axis=0)
        w = {"hist": hist.tolist()}
        # Lines at the group's mean percentiles (metric wait_pNN <-> wait key pNN_ns).
        for qk in QUANTILE_KEYS:
            w[qk] = g["stats"]["wait_" + qk.removesuffix("_ns")]["mean"]
        pooled.append((g["label"], w))
    sections.append("<h2>Run-queue wait, all runs of each group pooled</h2>"
                    + img(plots.wait_histogram(pooled), "wait histograms"))
    mig = [(f"{lab}: {Path(m['trace']).name}", m["migrations"]["bin_s"], m["migrations"]["per_bin"])
           for lab, m in runs if m["migrations"].get("per_bin")]
    if mig:
        sections.append("<h2>Migrations per second</h2>" + img(plots.rate(
            mig, "migrations/s", "per run"), "migrations per second"))
    sections.append("<h2>Per-run values</h2>" + table(
        ["label", "trace"] + [m["label"] for m in c["metrics"]],
        [[r["label"], Path(r["trace"]).name] + [fmt_value(r["values"][m["key"]], m["unit"])
                                                for m in c["metrics"]] for r in c["runs"]], left=2))
    title = "aios-lab comparison: " + " vs ".join(labels)
    return page(title, sections, warnings)


def write_comparison(c: dict[str, Any], runs: list[tuple[str, dict]], out: Path | str) -> Path:
    return write_html(out, render_comparison(c, runs))
