"""A staged verifier's report kept in the registry as a `verify` run.

The run's verdict is the report's (pass or fail); its samples are the raw
numbers the stages measured, one row per number: each stage's seconds, the
samples a check declares (evidence["samples"]: the performance stage's
per-run values with their arm), and every other numeric value of every
check's evidence (per-program verifier
statistics, event counters, timings), named by the check and the path to it
(`load.programs.fifo_enqueue.insns_processed`), a list's items as repeats
(run_index); the whole report is stored as the blob `verify.json`, whose
digest the run keeps. The platform is where the kernel stages ran (the
pinned VM's kernel and BTF, or this host's).
"""
from __future__ import annotations

import json
from typing import Any, Iterator

from ..errors import RegistryError
from .audit import Actor
from .entry import Entry, Run, Sample
from .platform import Platform
from .registry import Registry

REPORT = "verify.json"
HTML = "verify.html"
MAX_SAMPLES = 20_000     # a report with more numbers than this is not a verifier's


def _unit(key: str) -> str:
    for suffix, unit in (("_s", "s"), ("_ms", "ms"), ("_us", "us"), ("_ns", "ns"), ("_bytes", "bytes")):
        if key.endswith(suffix):
            return unit
    if "insns" in key:
        return "insn"
    return "events" if key.startswith("SCX_EV_") else "1"   # "1": a plain number (a state, a code, a ratio)


def _numbers(value: Any, path: str) -> Iterator[tuple[str, int, float]]:
    """(metric path, run_index, value) for every number under `value`."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield path, 0, float(value)
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            yield from _numbers(value[k], f"{path}.{k}")
    elif isinstance(value, list):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            for i, v in enumerate(value):
                yield path, i, float(v)
        else:
            for i, v in enumerate(value):
                yield from _numbers(v, f"{path}.{i}")


def samples(report: dict[str, Any]) -> list[Sample]:
    out: list[Sample] = []
    for st in report.get("stages", []):
        if st.get("skipped"):
            continue
        out.append(Sample(st["stage"], "seconds", 0, float(st["seconds"]), "s"))
        for c in st.get("checks", []):
            evidence = dict(c.get("evidence", {}))
            # Samples a stage declares itself (the performance stage's per-run
            # values, with their arm and unit) are kept as they are.
            out += [Sample(stage=st["stage"], **s) for s in evidence.pop("samples", [])]
            for metric, i, v in _numbers(evidence, c["name"]):
                if len(metric) <= 128 and v == v and abs(v) != float("inf"):
                    out.append(Sample(st["stage"], metric, i, v, _unit(metric.rsplit(".", 1)[-1])))
    if len(out) > MAX_SAMPLES:
        raise RegistryError(f"the report has {len(out)} numbers, more than the {MAX_SAMPLES} a verify run keeps")
    return out


def platform(report: dict[str, Any]) -> Platform:
    """What the kernel stages ran on: this machine when they ran in this
    process, else the VM's kernel and vCPUs; the target kernel when none ran."""
    t = report.get("target", {})
    ran = t.get("platform") or {}
    if ran.get("where") == "host":
        topology = Platform.current().topology
    elif "cpus" in ran:
        topology = {"where": "vm", "online_cpus": list(range(int(ran["cpus"])))}
    else:
        topology = {"where": "none (no kernel stage ran)"}
    return Platform(ran.get("kernel", t.get("release", "unknown")), t.get("btf_sha256", "none"), topology)


def render_html(report: dict[str, Any]) -> str:
    """The report for a person: every stage and check with its verdict, and
    the performance stage's comparison (each arm's runs, each ratio with its
    interval and verdict), through the same HTML helpers as `compare --report`."""
    from collections import defaultdict

    from ..analysis.html import fmt_num, page, table

    sections = [table(["stage", "result", "seconds", "check", "passed", "criterion or reason"],
                      [[st["stage"], "skipped: " + st["skipped"] if st.get("skipped") else
                        ("PASS" if st["passed"] else "FAIL"), fmt_num(st["seconds"]), c["name"],
                        "yes" if c["passed"] else "NO", c["criterion"] if c["passed"] else c["reason"]]
                       for st in report.get("stages", []) for c in (st.get("checks") or [{
                           "name": "-", "passed": st["passed"], "criterion": "", "reason": ""}])], left=1)]
    for st in report.get("stages", []):
        for c in st.get("checks", []):
            ev = c.get("evidence", {})
            if st["stage"] != "performance" or "comparisons" not in ev:
                continue
            runs: dict[tuple[str, str], list[float]] = defaultdict(list)
            for smp in ev.get("samples", []):
                runs[(smp["metric"], smp["arm"])].append(smp["value"])
            sections.append(f"<h2>Performance on {ev['workload']['name']}: {ev['verdict']}</h2>" + table(
                ["metric", "arm", "runs", "values"],
                [[m, a, len(v), " ".join(fmt_num(x) for x in v)] for (m, a), v in sorted(runs.items())], left=2))
            sections.append(table(
                ["metric", "against", "ratio", "interval", "level", "margin", "verdict"],
                [[x["metric"], x["against"], fmt_num(x["ratio"]),
                  "-" if not x["interval"] else f"[{fmt_num(x['interval'][0])}, {fmt_num(x['interval'][1])}]",
                  fmt_num(x["level"]), f"{x['margin']:.0%}", x["verdict"]] for x in ev["comparisons"]], left=2))
    verdict = "passed" if report.get("passed") else f"failed at {report.get('failed_stage')}: {report.get('reason')}"
    return page(f"aios-lab verify {report.get('policy')}: {verdict}", sections, [])


def record(reg: Registry, entry: Entry, report: dict[str, Any], actor: Actor) -> Run:
    """Keep `report` (VerifyReport.to_dict()) as a verify run of `entry`,
    with its HTML rendering; both blobs are hashed and kept by the run."""
    body = json.dumps(report, sort_keys=True, default=str).encode()
    return reg.record_run(entry.hash, "verify", "pass" if report.get("passed") else "fail", samples(report),
                          platform(report), actor, {REPORT: body, HTML: render_html(report).encode()})


def latest_report(reg: Registry, entry: Entry, passed: bool = False) -> dict[str, Any] | None:
    """The report of the entry's latest verify run (the latest passing one
    with `passed`), or None."""
    for run in reversed(reg.runs(entry.hash)):
        if run.kind == "verify" and REPORT in run.reports and (run.verdict == "pass" or not passed):
            return json.loads(reg.blob(run.reports[REPORT]))
    return None
