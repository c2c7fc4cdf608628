"""The HTML report of one trace (``aios-lab analyze TRACE --report out.html``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from aios_lab.analysis import plots
from aios_lab.analysis.html import esc, fmt_ns, fmt_num, img, page, table, write_html
from aios_lab.analysis.metrics import mean_util

# The wait statistics shown, label -> key of metrics' "wait", in the order shown.
WAIT_STATS = (("mean", "mean_ns"), ("p50", "p50_ns"), ("p90", "p90_ns"), ("p99", "p99_ns"),
              ("p99.9", "p999_ns"), ("max", "max_ns"))


def warnings_of(m: dict[str, Any]) -> list[str]:
    """What a reader must know before trusting the numbers, most serious first."""
    out = []
    if m["truncated"]:
        out.append(f"TRUNCATED TRACE: {m['trace']} was stopped early "
                   f"(ended by {m['metadata'].get('ended_by') or 'unknown'}); it covers less "
                   "than planned")
    lost = {k: v for k, v in m["lost"].items() if k != "unpaired_switch"}
    if lost:
        out.append("EVENTS LOST: " + ", ".join(f"{k}={v:,}" for k, v in sorted(lost.items()))
                   + "; event tables undercount")
    return out


def _summary(m: dict[str, Any]) -> str:
    mig, sw, util = m["migrations"], m["switches"], mean_util(m)
    rows = [
        ("duration", f"{m['duration_s']:.3f} s" if m["duration_s"] else "n/a"),
        ("events (switches + wakeups + migrations)", f"{m['events']:,}"),
        ("CPUs", len(m["cpus"])),
        ("mean CPU utilisation", f"{100 * util:.1f} %" if util is not None else "n/a"),
        ("context switches/s", fmt_num(sw["rate_per_s"])),
        ("migrations/s", fmt_num(mig["rate_per_s"])),
        ("tasks seen", f"{m['tasks']['count']:,}"),
    ]
    return "<h2>Summary</h2>" + table(["", ""], rows, left=1)


def _wait_section(m: dict[str, Any]) -> str:
    w = m["wait"]
    if not w.get("count"):
        return "<h2>Run-queue wait</h2><p>No waits recorded (a trace without BPF data).</p>"
    how = ("exact, over every wait in the switches table" if w["exact"] else
           "from per-task log2 histograms: each percentile is the upper bound of its bucket "
           + ("(the switch stream was sampled; collect with --stream-budget 0 for exact values)"
              if w.get("sampled_stream") else "(collect with switches for exact values)"))
    rows = [("waits", f"{w['count']:,}")] + [(label, fmt_ns(w.get(key))) for label, key in WAIT_STATS]
    return ("<h2>Run-queue wait (wakeup latency)</h2>"
            f'<p class="note">Wakeup or preemption until running; {esc(how)}.</p>'
            + table(["", ""], rows, left=1)
            + img(plots.wait_histogram([("this trace", w)]), "wait histogram"))


def task_rows(tasks: list[dict[str, Any]]) -> list[list[Any]]:
    return [[t["pid"], t["tgid"], t["comm"], fmt_ns(t["wait_ns"]), fmt_num(t["wait_count"]),
             fmt_ns(t["wait_mean_ns"]), fmt_ns(t["wait_p99_ns"]), fmt_ns(t["wait_max_ns"]),
             fmt_ns(t["oncpu_ns"]), fmt_num(t["migrations"]), fmt_num(t["wakeups"]),
             fmt_num(t["involuntary_switches"])] for t in tasks]


TASK_HEADERS = ["pid", "tgid", "comm", "total wait", "waits", "mean wait", "p99 wait", "max wait",
                "on CPU", "migrations", "wakeups", "preempted"]


def _task_section(m: dict[str, Any]) -> str:
    t = m["tasks"]
    out = "<h2>Tasks</h2>"
    out += "<h3>Top by total run-queue wait</h3>" + table(TASK_HEADERS, task_rows(t["top_by_wait"]), 3)
    if t["top_by_migrations"]:
        out += "<h3>Top by migrations</h3>" + table(TASK_HEADERS, task_rows(t["top_by_migrations"]), 3)
    how = ("estimated (from a sampled switch stream, or by t-digest past the waits ranked exactly)"
           if t.get("p99_approximate") else "exact")
    out += (f'<p class="note">p99 wait is {how}, from the switches table; n/a where the trace '
            "has none. &quot;preempted&quot; counts involuntary switches.</p>")
    return out


def _cpu_section(m: dict[str, Any]) -> str:
    tl, cpus = m["time"], m["cpus"]
    if not tl.get("t_s"):
        return "<h2>CPUs</h2><p>No per-CPU intervals in this trace.</p>"
    out = "<h2>CPU utilisation over time</h2>"
    out += img(plots.heatmap(tl["util"], tl["t_s"], cpus, f"busy fraction per {tl['bin_s']:.3g} s bin",
                             "utilisation", 0.0, 1.0), "utilisation heatmap")
    out += "<h2>Run-queue length over time</h2>"
    out += ('<p class="note">Mean nr_running sampled at each context switch (the running task '
            "included).</p>")
    out += img(plots.lines(tl["t_s"], tl["rq_len"], cpus, "run-queue length", "tasks"), "rq length")
    out += "<h2>CPU frequency over time</h2>"
    if tl.get("freq_khz"):
        out += img(plots.lines(tl["t_s"], [[None if v is None else v / 1e3 for v in row]
                                           for row in tl["freq_khz"]], cpus, "frequency", "MHz"),
                   "frequency")
    else:
        out += "<p>No frequency recorded: the traced kernel exposed no cpufreq (every VM here).</p>"
    return out


def _migration_section(m: dict[str, Any]) -> str:
    mig = m["migrations"]
    out = "<h2>Migrations</h2>"
    if mig["source"] != "migrations":
        return out + (f"<p>{fmt_num(mig['total'])} migrations counted per task; no migration "
                      "events in this trace, so no rate over time or matrix.</p>")
    d = mig["by_domain"]
    out += table(["total", "per s", "within an LLC", "across LLCs, same node", "across NUMA nodes",
                  "topology unknown"],
                 [[f"{mig['total']:,}", fmt_num(mig["rate_per_s"]), f"{d['same_llc']:,}",
                   f"{d['cross_llc']:,}", f"{d['cross_node']:,}", f"{d['unknown']:,}"]])
    out += img(plots.rate([("migrations", mig["bin_s"], mig["per_bin"])], "migrations/s",
                          "migrations per second"), "migrations per second")
    if mig["matrix"] and mig["matrix"]["cpus"]:
        out += img(plots.migration_matrix(mig["matrix"], m["metadata"].get("topology")),
                   "migration matrix")
    return out


def _policy_section(m: dict[str, Any]) -> str:
    if not m["policy_stats"]:
        return ""
    return "<h2>Policy counters</h2>" + "".join(
        f"<h3>{esc(policy)}</h3>" + table(["counter", "total"], [(k, f"{v:,}") for k, v in stats.items()], 1)
        for policy, stats in m["policy_stats"].items())


def _metadata_section(m: dict[str, Any]) -> str:
    md = dict(m["metadata"])
    topo = md.pop("topology", None)
    rows = [(k, v) for k, v in md.items() if v is not None]
    if topo:
        rows.append(("LLCs / NUMA nodes", f"{topo.get('nr_llcs')} / {topo.get('nr_nodes')}"))
    rows.append(("trace", m["trace"]))
    rows += [(f"rows: {k}", f"{v:,}") for k, v in m["rows"].items()]
    if m["lost"]:
        rows += [(f"lost: {k}", f"{v:,}") for k, v in m["lost"].items()]
    return "<h2>Trace metadata</h2>" + table(["", ""], rows, left=2)


def render_report(m: dict[str, Any]) -> str:
    sections = [_summary(m), _wait_section(m), _task_section(m), _cpu_section(m),
                _migration_section(m), _policy_section(m), _metadata_section(m)]
    return page(f"aios-lab trace report: {Path(m['trace']).name}", sections, warnings_of(m))


def write_report(m: dict[str, Any], out: Path | str) -> Path:
    """Render and write atomically: a failed write leaves no partial report."""
    return write_html(out, render_report(m))


def format_metrics(m: dict[str, Any], top: int = 10) -> str:
    """The same metrics as the HTML report, as terminal text (warnings first)."""
    w, mig, sw, util = m["wait"], m["migrations"], m["switches"], mean_util(m)
    lines = list(warnings_of(m))
    duration = f"{m['duration_s']:.3f} s, " if m["duration_s"] else ""
    lines.append(f"trace {m['trace']} ({m['status']}): {duration}{m['events']:,} events, "
                 f"{len(m['cpus'])} CPUs")
    if w.get("count"):
        kind = "exact" if w["exact"] else "log2-bucket upper bounds"
        lines.append(f"run-queue wait ({w['count']:,} waits, {kind}): "
                     + ", ".join(f"{label} {fmt_ns(w.get(key))}" for label, key in WAIT_STATS))
    else:
        lines.append("run-queue wait: none recorded")
    if util is not None:
        lines.append(f"cpu utilisation: mean {100 * util:.1f}%  " + "  ".join(
            f"cpu{c}={100 * u:.0f}%" for c, u in zip(m["cpus"], m["time"]["util_by_cpu"])
            if u is not None))
    lines.append(f"context switches: {sw['total']:,}" + (f" ({sw['rate_per_s']:.1f}/s)"
                                                        if sw["rate_per_s"] else ""))
    line = f"migrations: {mig['total']:,}" + (f" ({mig['rate_per_s']:.2f}/s)" if mig["rate_per_s"] else "")
    if mig.get("by_domain"):
        d = mig["by_domain"]
        line += f"; within LLC {d['same_llc']:,}, across LLCs {d['cross_llc']:,}, across nodes {d['cross_node']:,}"
    lines.append(line)
    for policy, stats in m["policy_stats"].items():
        lines.append(f"policy {policy}: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    tasks = m["tasks"]["top_by_wait"][:top]
    if tasks:
        lines.append("top run-queue wait:")
        lines.append(f"  {'pid':>7}  {'comm':16} {'total wait':>11} {'waits':>8} {'mean':>9} {'p99':>9}")
        for t in tasks:
            lines.append(f"  {t['pid']:>7}  {str(t['comm'])[:16]:16} {fmt_ns(t['wait_ns']):>11} "
                         f"{t['wait_count'] or 0:>8,} {fmt_ns(t['wait_mean_ns']):>9} "
                         f"{fmt_ns(t['wait_p99_ns']):>9}")
    return "\n".join(lines)
