"""`aios-lab freq`: cpufreq and RAPL on a real host (and `freq bound`, the
simulator's yardsticks for any frequency governor)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .group import AiosGroup
from .options import deprecated_ms_option, simulator_options, unit_option
from .types import POSITIVE, Folder, InputFile, finite


@click.group("freq", cls=AiosGroup)
def freq() -> None:
    """CPU frequency (cpufreq) and energy (RAPL) on this host.

    QEMU guests, this project's VM included, have neither: run these on the
    real machine. `freq bound` is the exception: it runs on the simulator.

    Example: aios-lab freq status
    """


@freq.command("status")
@click.option("--root", default="/", show_default=True, type=Folder(path_type=Path),
              help="Filesystem root to read sysfs under (a test tree, a chroot).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(root: Path, as_json: bool) -> None:
    """Show each cpufreq policy (driver, governors, frequencies, min/max/cur,
    EPP), the RAPL energy zones and any frequency governor run by aios-lab.

    A machine without a cpufreq driver or RAPL is reported as such (exit 0).

    Example: aios-lab freq status --json
    """
    from aios_lab.cpufreq import Cpufreq, governor_state, zones_status
    from aios_lab.errors import CpufreqError, CpufreqUnavailable

    out: dict[str, Any] = {"root": str(root)}
    try:
        pols = Cpufreq(root).policies()
        out["cpufreq"] = {"available": True, "policies": [p.to_dict() for p in pols]}
    except CpufreqUnavailable as exc:
        pols = []
        out["cpufreq"] = {"available": False, "error": exc.one_line(), "policies": []}
    out["energy"] = zones_status(root)
    try:
        out["governor"] = governor_state()
    except CpufreqError as exc:
        out["governor"] = {"error": exc.one_line()}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not pols:
        click.echo(out["cpufreq"]["error"])
    for p in pols:
        click.echo(f"{p.name}: cpus {_cpus(p.cpus)}  driver {p.driver}  governor {p.governor}")
        click.echo(f"  governors: {' '.join(p.available_governors) or '-'}")
        if p.available_khz:
            click.echo(f"  frequencies: {' '.join(str(f) for f in p.available_khz)} kHz")
        else:
            click.echo(f"  frequencies: no table ({p.driver}): {p.cpuinfo_min_khz}..{p.cpuinfo_max_khz} kHz")
        cur = p.cur_khz if p.cur_khz is not None else "-"
        speed = p.setspeed_khz if p.setspeed_khz is not None else "-"
        click.echo(f"  hardware {p.cpuinfo_min_khz}..{p.cpuinfo_max_khz} kHz  min {p.min_khz}  "
                   f"max {p.max_khz}  cur {cur}  setspeed {speed}")
        if p.epp is not None:
            click.echo(f"  epp: {p.epp} (available: {' '.join(p.epp_available or ()) or '-'})")
    _echo_energy(out["energy"])
    gov = out["governor"]
    if gov and "error" in gov:
        click.echo(f"governor state: {gov['error']}")
    elif gov and gov["alive"]:
        click.echo(f"aios-lab governor running: pid {gov['pid']} (state {gov['state_file']})")
    elif gov:
        click.echo(f"a killed aios-lab governor (pid {gov['pid']}) left its settings in {gov['state_file']}: "
                   "run `aios-lab freq restore`")


def _echo_energy(energy: dict) -> None:
    if not energy["available"]:
        click.echo(f"energy: {energy['error']}")
        return
    click.echo("energy (RAPL via powercap):")
    for z in energy["zones"]:
        if z["energy_uj"] is None:
            value = z.get("error", "unreadable")
        else:
            value = f"{z['energy_uj'] / 1e6:.6f} J (counter; wraps at {z['max_energy_range_uj'] / 1e6:.6f} J)"
        click.echo(f"  {z['label']:<18} {z['zone']:<16} {value}")


def _cpus(cpus: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 6) -> "0-3,6", as the kernel writes CPU lists."""
    runs: list[list[int]] = []
    for c in cpus:
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs) or "-"


@freq.command("restore")
@click.option("--state-file", type=InputFile(path_type=Path), default=None,
              help="State file the governor wrote [default: $AIOS_LAB_FREQ_STATE or "
                   "/run/aios-lab/freq-governor.json].")
@click.option("--root", default=None, type=Folder(path_type=Path),
              help="Filesystem root to write sysfs under [default: the one the state file records].")
@click.option("--json", "as_json", is_flag=True, help="Print what was restored as JSON.")
def restore(state_file: Path | None, root: Path | None, as_json: bool) -> None:
    """Put back the cpufreq settings of a frequency governor that was killed.

    The governor restores on its own on exit, Ctrl-C and SIGTERM; after a
    SIGKILL or a crash its state file remains, and this (or its next start)
    puts the machine back.

    Example: sudo aios-lab freq restore
    """
    from aios_lab.cpufreq import default_state_file, restore_saved

    res = restore_saved(state_file, root=root)
    if as_json:
        click.echo(json.dumps(res if res is not None else {
            "state_file": str(state_file or default_state_file()), "restored": None}, indent=2,
            default=str))
        return
    if res is None:
        click.echo(f"nothing to restore: no state file at {state_file or default_state_file()}")
        return
    if not res["restored"]:
        click.echo(f"settings were already as saved by pid {res['pid']}; removed {res['state_file']}")
        return
    click.echo(f"restored the settings saved by pid {res['pid']} ({res['state_file']}):")
    for line in res["restored"]:
        click.echo(f"  {line}")


@freq.command("run")
@click.option("--model", "model_path", required=True, type=InputFile(path_type=Path),
              help="Frequency table from `aios-lab train freq`.")
@click.option("--period", default=0.01, show_default=True, type=finite(0.001, 10),
              help="Seconds between decisions.")
@click.option("--duration", default=None, type=POSITIVE,
              help="Stop after this many seconds (default: Ctrl-C / SIGTERM).")
@click.option("--root", default="/", show_default=True, type=Folder(path_type=Path),
              help="Filesystem root of sysfs (a test tree).")
@click.option("--proc-root", default="/", show_default=True, type=Folder(path_type=Path),
              help="Filesystem root of /proc (a test tree).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(model_path: Path, period: float, duration: float | None, root: Path, proc_root: Path,
        as_json: bool) -> None:
    """Apply a learned frequency table from user space through cpufreq sysfs.

    Switches each policy to the userspace governor and writes scaling_setspeed
    (pstate drivers without one: pins scaling_min/max_freq); restores the
    previous settings on exit, Ctrl-C, SIGTERM and errors, and after a
    SIGKILL through `aios-lab freq restore`. Needs a cpufreq driver: QEMU
    guests have none (the in-kernel variant is `aios-lab deploy freq`).

    Example: sudo aios-lab freq run --model freq.json --duration 60
    """
    from aios_lab.cpufreq.governor_loop import run_table_governor
    from aios_lab.dvfs.table import load_table

    table = load_table(model_path)  # validated before anything on the machine changes
    summary = run_table_governor(table, root=root, proc_root=proc_root, period_s=period, duration_s=duration)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(f"applied {model_path} for {summary['periods']} periods ({summary['writes']} writes), "
               f"stopped by {summary['stopped']}; settings restored: {summary['restored']}")
    for pol, res in (summary.get("residency") or {}).items():
        tot = sum(res.values()) or 1
        click.echo(f"  {pol}: " + "  ".join(f"{int(k) // 1000} MHz {100 * v / tot:.0f}%"
                                            for k, v in sorted(res.items(), key=lambda kv: int(kv[0]))))


@freq.command("bound")
@click.option("--trace", "traces", multiple=True, type=click.Path(path_type=Path),
              help="Recorded trace (repeat). Default: the recorded run 3 of each kind in the unit's folder.")
@unit_option
@simulator_options
@click.option("--lookahead", default=0.6, show_default=True, type=finite(0, 600),
              help="Seconds ahead the planner sees (or predicts) arriving work.")
@click.option("--lateness", default=0.0, show_default=True, type=finite(0, 600),
              help="Seconds of lateness past each deadline the planner plans for (spends misses).")
@deprecated_ms_option("--lookahead-ms", "--lookahead")
@deprecated_ms_option("--lateness-ms", "--lateness")
@click.option("--max-opp", default=None, type=click.IntRange(0, None),
              help="Highest OPP index the planner may ask for (spends misses).")
@click.option("--no-lp", is_flag=True, help="Skip the LP lower bound (about a minute on a 20 s build trace).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bound(traces, unit, cluster, mem_share, lookahead, lateness, lookahead_ms, lateness_ms, max_opp, no_lp,
          as_json) -> None:
    """How far any frequency governor could go on a trace, against schedutil (SIMULATED).

    Prints a lower bound on the energy of any run that misses no deadline
    (an LP with perfect foresight), and what one speed-planning rule reaches
    in the simulator knowing less and less: every queued and future item's
    work; the queued work, the future predicted; the queued work only; and
    online, the work estimated per CPU from completed items, or per task
    (each task's next activation by the kernel's util_est rule, the per-task
    rung). A learned governor is
    judged against these, not only against schedutil.

    Example: aios-lab freq bound --trace workloads/dvfs/traces/bursty-3 --no-lp
    """
    from aios_lab.dvfs import experiment as ex
    from aios_lab.dvfs.bounds import yardsticks
    from aios_lab.dvfs.platform import load_cluster
    from aios_lab.errors import ModelError

    lookahead_s = lookahead if lookahead_ms is None else lookahead_ms / 1000
    lateness_s = lateness if lateness_ms is None else lateness_ms / 1000

    cl = load_cluster(cluster)
    if max_opp is not None and max_opp >= cl.nr_opps:
        raise ModelError(f"--max-opp {max_opp}: {cluster} has OPPs 0..{cl.nr_opps - 1}")
    demands = ex.load_demands(list(traces) or ex.split(unit=unit)[1], unit)
    rows = [r for d in demands
            for r in yardsticks(cl, d, mem_share=mem_share, lookahead_s=lookahead_s,
                                lateness_s=lateness_s, max_opp=max_opp, lower_bound=not no_lp)]
    if as_json:
        click.echo(json.dumps({"simulated": True, "cluster": cluster, "unit": unit, "rows": rows}, indent=2))
        return
    click.echo(ex.SIMULATED)
    for r in rows:
        click.echo(f"{r['demand']:12} {r['what']:38} {r['energy_j']:8.2f} J  x{r['energy_x']:.3f}  "
                   f"misses {r['misses']:5}/{r['items']}  x{r['misses_x']:.3f}")
