"""Figures for reports, drawn with matplotlib and returned as PNG bytes.

Each function takes the plain data of analysis.metrics (never a trace), so
a report is a pure function of its metrics. PNG is embedded in the HTML
as base64: a report is one file that opens offline.
"""
from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

from aios_lab.analysis.html import fmt_ns
from aios_lab.analysis.metrics import QUANTILE_KEYS, bucket_upper_ns


def _plt():
    from aios_lab.extras import require

    matplotlib = require("matplotlib", "report", "an HTML report's figures")
    matplotlib.use("Agg")  # no display; must precede pyplot's first import
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def bucket_label(i: int) -> str:
    """Tick label of log2 wait bucket i: its lower bound ("+" on the open last one)."""
    lo = 0 if i == 0 else 1 << i
    return fmt_ns(lo).replace(" ", "") + ("+" if bucket_upper_ns(i) is None else "")


def wait_histogram(series: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    """Log2-bucket histogram of run-queue waits, one bar set per (label, wait)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    hists = [np.array(w.get("hist") or [0] * 32, dtype=float) for _, w in series]
    used = np.nonzero(np.sum(hists, axis=0))[0]
    lo, hi = (int(used.min()), int(used.max()) + 1) if len(used) else (0, 1)
    x = np.arange(lo, hi)
    width = 0.8 / max(1, len(series))
    for k, ((label, w), h) in enumerate(zip(series, hists)):
        total = h.sum() or 1.0
        bars = ax.bar(x + k * width - 0.4 + width / 2, h[lo:hi] / total * 100, width,
                      label=f"{label} (n={int(h.sum()):,})")
        color = bars.patches[0].get_facecolor() if bars.patches else None
        for key, style in zip(QUANTILE_KEYS, (":", "--", "-.", "-")):
            v = w.get(key)
            if v:
                # Bar i spans [2^i, 2^(i+1)) and is drawn over [i-0.5, i+0.5].
                ax.axvline(np.log2(max(v, 1)) - 0.5, color=color, ls=style, lw=1)
    ax.set_xticks(x, [bucket_label(i) for i in x], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("% of waits")
    ax.set_xlabel("run-queue wait (log2 buckets; lines: p50 : p90 -- p99 -. p99.9 -)")
    ax.legend(fontsize=8)
    return _png(fig)


def heatmap(grid: list[list[float | None]], t_s: list[float], cpus: list[int], title: str,
            label: str, vmin: float | None = None, vmax: float | None = None) -> bytes:
    """Time (x) by CPU (y) heatmap of a per-CPU series."""
    plt = _plt()
    a = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float).T
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(cpus) + 1.6))
    step = t_s[1] - t_s[0] if len(t_s) > 1 else 1.0
    im = ax.imshow(a, aspect="auto", interpolation="nearest", origin="lower", cmap="viridis",
                   vmin=vmin, vmax=vmax, extent=(0, len(t_s) * step, -0.5, len(cpus) - 0.5))
    ax.set_yticks(range(len(cpus)), [f"cpu{c}" for c in cpus], fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=label)
    return _png(fig)


def lines(t_s: list[float], grid: list[list[float | None]], cpus: list[int], title: str,
          ylabel: str, mean_label: str = "mean over CPUs") -> bytes:
    """One line per CPU (up to 16, else only the mean) plus their mean."""
    plt = _plt()
    a = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    if len(cpus) <= 16:
        for i, c in enumerate(cpus):
            ax.plot(t_s, a[:, i], lw=0.8, alpha=0.6, label=f"cpu{c}")
    with np.errstate(all="ignore"):
        mean = np.nanmean(a, axis=1) if a.size else a
    ax.plot(t_s, mean, lw=2, color="black", label=mean_label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=6)
    return _png(fig)


def rate(series: Sequence[tuple[str, float, list[int]]], ylabel: str, title: str) -> bytes:
    """Events per second over time: (label, bin_s, counts per bin) per series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.0))
    for label, bin_s, counts in series:
        if counts:
            t = np.arange(len(counts)) * bin_s
            ax.step(t, np.array(counts) / bin_s, where="post", label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def migration_matrix(matrix: dict[str, Any], topology: dict[str, Any] | None) -> bytes:
    """Source (rows) to destination (columns) counts; lines mark LLC (thin)
    and NUMA node (thick) boundaries, CPUs ordered by node, then LLC."""
    plt = _plt()
    cpus: list[int] = matrix["cpus"]
    counts = np.array(matrix["counts"], dtype=float)
    where = {c["cpu"]: (c.get("node") if c.get("node") is not None else -1,
                        c.get("llc") if c.get("llc") is not None else -1)
             for c in ((topology or {}).get("cpus") or [])}
    order = sorted(range(len(cpus)), key=lambda i: (*where.get(cpus[i], (-1, -1)), cpus[i]))
    counts = counts[np.ix_(order, order)]
    ordered = [cpus[i] for i in order]
    n = len(ordered)
    fig, ax = plt.subplots(figsize=(min(2 + 0.45 * n, 10), min(1.6 + 0.4 * n, 9)))
    im = ax.imshow(counts, cmap="magma_r", interpolation="nearest")
    ax.set_xticks(range(n), [str(c) for c in ordered], fontsize=7)
    ax.set_yticks(range(n), [str(c) for c in ordered], fontsize=7)
    ax.set_xlabel("destination CPU")
    ax.set_ylabel("source CPU")
    if n <= 16:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=6,
                            color="white" if counts[i, j] > counts.max() / 2 else "black")
    for k in range(1, n):
        a, b = where.get(ordered[k - 1]), where.get(ordered[k])
        if a is None or b is None or a == b:
            continue
        lw = 2.5 if a[0] != b[0] else 1.0
        ax.axhline(k - 0.5, color="tab:blue", lw=lw)
        ax.axvline(k - 0.5, color="tab:blue", lw=lw)
    fig.colorbar(im, ax=ax, label="migrations")
    ax.set_title("migrations src -> dst (blue: LLC thin, NUMA node thick)", fontsize=9)
    return _png(fig)


def ratio_points(labels: list[str], metrics: list[str],
                 ratios: list[list[tuple[float, float | None, float | None] | None]],
                 baseline: str) -> bytes:
    """Per metric, each group's ratio to the baseline with its 95 % interval,
    on a log axis (x2 and x0.5 are the same distance from 1)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(metrics) + 2), 3.6))
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(metrics))
    for k, label in enumerate(labels):
        xs, ys, lo, hi = [], [], [], []
        for m, r in enumerate(ratios[k]):
            if r is None or not r[0] or r[0] <= 0:
                continue
            xs.append(x[m] + k * width - 0.4 + width / 2)
            ys.append(r[0])
            lo.append(r[0] - r[1] if r[1] else 0.0)
            hi.append(r[2] - r[0] if r[2] else 0.0)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=label)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x, metrics, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"ratio to {baseline} (log)")
    ax.set_title(f"mean over {baseline}'s, with 95 % intervals (none with one run)", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)
