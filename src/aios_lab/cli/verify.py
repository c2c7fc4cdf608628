"""`aios-lab verify`: the staged verifier, as a thin click layer.

The package root registers it with the control plane's commands.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .options import parse_sets
from .types import InputFile

STAGE_CHOICES = ("static", "verifier", "liveness", "performance")


def _stages(text: str) -> tuple[str, ...]:
    stages = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in stages if s not in STAGE_CHOICES]
    if bad or not stages:
        raise click.BadParameter(f"{text!r}: stages are {', '.join(STAGE_CHOICES)} (comma-separated)",
                                 param_hint="--stages")
    return tuple(s for s in STAGE_CHOICES if s in stages)


def _perf_lines(ev: dict) -> list[str]:
    out = [f"      {ev['runs_per_arm']} interleaved runs per arm of {ev['workload']['name']}; "
           f"verdict {ev['verdict']}"]
    for c in ev["comparisons"]:
        lo, hi = c["interval"] or (None, None)
        iv = "-" if lo is None else f"[{lo:.2f}, {'inf' if hi is None else f'{hi:.2f}'}]"
        out.append(f"      vs {c['against']:<8} {c['metric']:<12} x{c['ratio']:.3f} {iv:>14} at {c['level']:.4f}  "
                   f"p={c['p']} (Bonferroni {c['p_bonferroni']})  {c['verdict']}")
    return out


def format_report(rep: dict) -> str:
    lines = [f"verify {rep['policy']}  (kernel {rep['target']['release']}, tunables "
             + ", ".join(f"{k}={v}" for k, v in rep["tunables"].items()) + ")"]
    for st in rep["stages"]:
        if st["skipped"]:
            lines.append(f"  {st['stage']:<9} SKIPPED ({st['skipped']})")
            continue
        lines.append(f"  {st['stage']:<9} {'PASS' if st['passed'] else 'FAIL'}  {st['seconds']:.1f}s")
        for c in st["checks"]:
            mark = "ok  " if c["passed"] else "FAIL"
            lines.append(f"    {mark} {c['name']:<16} {c['reason'] if not c['passed'] else c['criterion']}")
            if c["name"] == "verdict" and "comparisons" in c["evidence"]:
                lines += _perf_lines(c["evidence"])
    verdict = "PASSED" if rep["passed"] else f"FAILED at {rep['failed_stage']}/{rep['failed_check']}: {rep['reason']}"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


@click.command("verify")
@click.argument("name")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="A tunable value to verify (repeatable).")
@click.option("--stages", default=",".join(STAGE_CHOICES), show_default=True,
              help="Comma-separated stages to run, in order: static, verifier, liveness, performance.")
@click.option("--parent", type=InputFile(exists=True), default=None,
              help="A passing report (--out) of the parent policy: fail when a program's verifier work "
                   "grows beyond the stated regression limit.")
@click.option("--deployed", default=None, metavar="POLICY",
              help="The policy deployed now (its manifest defaults): the performance stage compares "
                   "against it as well as against EEVDF.")
@click.option("--workload", default=None, metavar="NAME",
              help="The performance stage's workload (workloads/NAME.toml; default batch-small).")
@click.option("--runs", default=None, type=click.IntRange(5, 100),
              help="Interleaved performance runs per arm (default 5).")
@click.option("--cpus", default=2, show_default=True, type=click.IntRange(2, 64),
              help="vCPUs of the VM the kernel stages boot (at least 2: one must go offline).")
@click.option("--rt", is_flag=True, default=None,
              help="Run the VM's QEMU under SCHED_RR (or AIOS_LAB_VM_RT=1): on a busy host with few cores "
                   "the performance stage cannot judge without it.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full JSON report here (replaced if it exists).")
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON report.")
def verify(name, sets, stages, parent, deployed, workload, runs, cpus, rt, out, as_json) -> None:
    """Verify policy NAME in stages, each against written criteria (docs/verifier.md).

    static (manifest, tunable ranges, kfuncs in the target kernel's BTF,
    -Werror), kernel verifier (per-program statistics, an instruction
    budget), liveness (attached under a stress mix and a CPU hotplug cycle
    with a short watchdog), performance (interleaved runs against EEVDF and
    --deployed on a workload; worse beyond a margin fails). The kernel
    stages run in the pinned VM (one
    boot) unless this kernel has sched_ext. Exit 0 when every stage passes,
    9 when one fails (the report says which check and why).

    Example: aios-lab verify fifo --set slice_ns=5000000 --out fifo-verify.json
    """
    from aios_lab import exit_codes
    from aios_lab.atomic import write_json_atomic
    from aios_lab.control.verify import parent_programs, verify as run_verify
    from aios_lab.safe_output import check_output
    from aios_lab.safe_read import load_json

    overrides, stages = parse_sets(sets), _stages(stages)

    if out is not None:
        check_output(out, what="report")
    parent_progs = parent_programs(load_json(parent, what="parent report")) if parent else None
    rep = run_verify(name, overrides, stages, parent=parent_progs, cpus=cpus,
                     log=lambda m: click.echo(m, err=True),
                     deployed={"policy": deployed, "tunables": {}} if deployed else None,
                     workload=workload, runs=runs, realtime=rt)
    data = rep.to_dict()
    data["digest"] = rep.digest()
    if out is not None:
        write_json_atomic(out, data)
    click.echo(json.dumps(data, indent=2, default=str) if as_json else format_report(data))
    if not rep.passed:
        sys.exit(exit_codes.VERIFY_FAILED)
