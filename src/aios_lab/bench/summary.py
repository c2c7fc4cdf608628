"""What a benchmark's result says: per-scheduler summaries and the text table.

`summarise` reduces the interleaved runs to medians and ranges, and ratios
against the baseline; `format_summary` prints what `bench-schedulers` and
`demo` end with: where it ran, the placement control, makespan and
migrations, BPF cost per decision, placement, headroom and the verdicts.
"""
from __future__ import annotations

import statistics

from .spec import BASELINE


def summarise(runs: list[dict], policies: list[str]) -> dict:
    out: dict[str, dict] = {}
    for sched in policies:
        ms = [r["makespan_s"] for r in runs if r["scheduler"] == sched]
        mig = [r["migrate"] for r in runs if r["scheduler"] == sched]
        if not ms:
            continue
        out[sched] = {"makespan_median_s": statistics.median(ms), "makespan_min_s": min(ms),
                      "makespan_max_s": max(ms), "migrations_median": statistics.median(mig),
                      "migrations_min": min(mig), "migrations_max": max(mig), "n": len(ms)}
        for key in ("wc_loss_s", "wc_fraction", "wait_p50_ns", "wait_p99_ns", "latency_p50_ns", "latency_p99_ns"):
            vals = [r[key] for r in runs if r["scheduler"] == sched and r.get(key) is not None]
            if vals:
                out[sched][f"{key}_median"] = statistics.median(vals)
        cost: dict[str, list[float]] = {}
        for r in runs:
            if r["scheduler"] == sched:
                for prog, c in (r.get("bpf_cost") or {}).items():
                    cost.setdefault(prog, []).append(c["ns_per_call"])
        if cost:
            out[sched]["bpf_ns_per_call_median"] = {k: statistics.median(v) for k, v in cost.items()}
    base = out.get(BASELINE)
    for sched, s in out.items():
        if base:
            s["makespan_ratio_vs_eevdf"] = round(s["makespan_median_s"] / base["makespan_median_s"], 3)
            s["migrations_ratio_vs_eevdf"] = (round(s["migrations_median"] / base["migrations_median"], 3)
                                              if base["migrations_median"] else None)
    return out


def format_summary(result: dict, vm: dict | None = None) -> str:
    lines = []
    head = f"workload {result['workload']['name']} ({result['workload']['summary']})"
    lines.append(head)
    where = f"kernel {result['kernel']}, {result['cpus']} CPUs"
    # The guest's own record (it has the host priority too) before the runner's.
    plat = result.get("platform") if (result.get("platform") or {}).get("vm") else (vm or {})
    if plat.get("topology"):
        topo = plat["topology"]
        from ..vm.guest_platform import describe

        flat = dict(plat, qemu=plat["qemu"]["version"] if isinstance(plat.get("qemu"), dict) else plat.get("qemu"))
        where += f", {describe(flat)} ({topo['sockets']} sockets, {topo['numa_nodes']} NUMA nodes)"
    lines.append(f"{where}, {result['repeat']} interleaved runs each")
    if result.get("control"):
        from .control import ControlResult

        lines.append(ControlResult.from_dict(result["control"]).line())
    lines.append(f"{'scheduler':13} {'makespan median [min-max]':>28} {'vs eevdf':>9} "
                 f"{'migrations median [min-max]':>30} {'vs eevdf':>9}")
    for sched, s in result["summary"].items():
        ratio, mratio = s.get("makespan_ratio_vs_eevdf"), s.get("migrations_ratio_vs_eevdf")
        lines.append(f"{sched:13} {s['makespan_median_s']:>12.2f}s [{s['makespan_min_s']:.2f}-{s['makespan_max_s']:.2f}]"
                     f" {('x%.2f' % ratio) if ratio else '-':>9} {s['migrations_median']:>14.0f}"
                     f" [{s.get('migrations_min', 0):.0f}-{s.get('migrations_max', 0):.0f}]"
                     f" {('x%.2f' % mratio) if mratio is not None else '-':>9}")
    costs = {k: v["bpf_ns_per_call_median"] for k, v in result["summary"].items() if v.get("bpf_ns_per_call_median")}
    if costs:
        lines.append("BPF run time per call (median over runs; kernel.bpf_stats_enabled):")
        for sched, c in costs.items():
            lines.append(f"  {sched:13} " + "  ".join(f"{k}: {v:.0f} ns" for k, v in sorted(c.items())))
        learn = [k for k in costs if k.endswith("-model")]
        for m in learn:
            base = m[: -len("model")] + "collect"
            if base in costs:
                ratios = [f"{k}: x{costs[m][k] / costs[base][k]:.2f}" for k in sorted(costs[m])
                          if k in costs[base] and costs[base][k]]
                lines.append(f"  {m} vs {base}: " + "  ".join(ratios))
    placement = {k: v for k, v in result["summary"].items() if v.get("wc_loss_s_median") is not None}
    if placement:
        lines.append("placement (median over runs, from the guest's own switches): "
                     "work-conservation loss = CPU time idle while work waited")
        for sched, s in placement.items():
            p50, p99 = s.get("wait_p50_ns_median"), s.get("wait_p99_ns_median")
            lat = ""
            if s.get("latency_p99_ns_median") is not None:
                lat = (f"  latency-task wait p50 {s['latency_p50_ns_median'] / 1e6:7.3f} ms  "
                       f"p99 {s['latency_p99_ns_median'] / 1e6:8.3f} ms")
            lines.append(f"  {sched:13} wc-loss {s['wc_loss_s_median']:8.2f}s  wait p50 "
                         f"{(p50 or 0) / 1e6:7.3f} ms  p99 {(p99 or 0) / 1e6:8.3f} ms{lat}")
    base = result["summary"].get(BASELINE, {})
    if base.get("wc_fraction_median") is not None:
        # Placement can only recover CPU time that sat idle while work waited:
        # a scheduler doing the same work is at best this much faster.
        lines.append(f"headroom: {BASELINE} left {100 * base['wc_fraction_median']:.1f} % of CPU time idle while "
                     f"work waited; better placement alone can shorten its makespan by at most about that much")
    if result.get("verdicts"):
        from .verdict import format_verdicts

        lines.append("verdicts (median ratios; two-sided Mann-Whitney U over the interleaved runs):")
        lines += format_verdicts(result["verdicts"], result.get("control"))
    elif result.get("control") is None and any(k.endswith("-model") for k in result["summary"]):
        from .control import not_judged_banner

        lines.append(not_judged_banner(None))
    return "\n".join(lines)
