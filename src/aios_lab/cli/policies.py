"""Policies and deploying them: `aios-lab policy list`, `aios-lab deploy`
and `aios-lab status`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from aios_lab import exit_codes

from .group import AiosGroup
from .options import command_argument, parse_sets
from .types import POSITIVE, InputFile, finite

SCX_STATS_PATH = "/var/run/scx/root/stats"  # aios_lab.scx_stats.DEFAULT_PATH, without importing it
INTERVAL_S = finite(0.01, 3600)  # 0 would spin; more than an hour is a typo


def _list_entries(name: str | None, as_json: bool) -> None:
    """`policy list --registry`: every entry, oldest first."""
    import datetime as dt

    from aios_lab.control.registry import Registry

    with Registry() as reg:
        rows = []
        for e in reg.entries(name):
            runs = reg.runs(e.hash)
            rows.append((e, runs[-1].verdict if runs else None, len(runs)))
    if as_json:
        click.echo(json.dumps([{**e.to_dict(), "runs": n, "last_verdict": v} for e, v, n in rows],
                              indent=2, sort_keys=True))
        return
    for e, verdict, n in rows:
        when = dt.datetime.fromtimestamp(e.created_ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        click.echo(f"{e.hash[:12]}  {e.name:10} {when}  {e.author.kind}:{e.author.name:10} "
                   f"parent {e.parent[:12] if e.parent else '-':12}  runs {n}  {verdict or 'unverified'}")


@click.group(cls=AiosGroup)
def policy() -> None:
    """Policies: folders under policies/ with BPF source and a manifest.

    Example: aios-lab policy list
    """


@policy.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include test-only policies.")
@click.option("--registry", "registry", is_flag=True, help="List the policy registry's entries instead.")
@click.option("--name", default=None, help="With --registry: only the entries of this policy.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def policy_list(show_all: bool, registry: bool, name: str | None, as_json: bool) -> None:
    """List the policies aios-lab can deploy (--registry: the registry's entries).

    Example: aios-lab policy list --json
    """
    if registry:
        _list_entries(name, as_json)
        return
    from aios_lab.sched import policy as pol

    pols = [p for p in pol.discover().values() if show_all or not p.test_only]
    if as_json:
        click.echo(json.dumps([{"name": p.name, "kind": p.kind, "summary": p.summary,
                                "built": p.object_path.exists(),
                                "tunables": {n: t.default for n, t in p.tunables.items()}} for p in pols], indent=2))
        return
    for p in pols:
        built = "" if p.object_path.exists() else "  (not built: run `aios-lab build`)"
        click.echo(f"{p.name:12} {p.kind:10} {p.summary}{built}")
        for t in p.tunables.values():
            click.echo(f"{'':12} --set {t.name}=<{t.type}> (default {t.default}): {t.help}")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--set", "sets", multiple=True, help="Tunable KEY=VALUE (repeatable); see `policy list`.")
@click.option("--duration", type=POSITIVE, default=None, help="Detach after this many seconds (default: Ctrl-C).")
@click.option("--interval", type=INTERVAL_S, default=1.0, show_default=True, help="Seconds between stats lines.")
@click.option("--json", "as_json", is_flag=True, help="Print stats lines and the final summary as JSON.")
@click.option("--model", "model_path", type=InputFile(), default=None,
              help="Learning policies: model file (mllb) or frequency table (freq) to verify and push "
                   "before attaching (mllb: implies --mode model).")
@click.option("--mode", type=click.Choice(["collect", "model"]), default=None,
              help="Learning policies: who decides, the heuristic (collect) or the model.")
@click.option("--decisions", "decisions_out", type=click.Path(file_okay=False), default=None,
              help="Learning policies: write the logged decisions to this trace directory (for `train lb`).")
@click.option("--retrain-every", type=POSITIVE, default=None,
              help="Learning policies: every N seconds, retrain on the decisions so far and swap the model in.")
@click.option("--retrain-min-rows", type=click.IntRange(min=10), default=500, show_default=True,
              help="With --retrain-every: skip a retrain until this many decisions have outcomes.")
@click.option("--backend", type=click.Choice(["sched_ext", "cpufreq"]), default="sched_ext", show_default=True,
              help="Frequency-table policies: sched_ext (the table in BPF, scx_bpf_cpuperf_set) or cpufreq "
                   "(a user-space governor writing cpufreq sysfs on a host that has a cpufreq driver).")
@click.option("--watch", is_flag=True,
              help="Frequency-table policies: re-read --model when the file changes and swap it in live.")
@click.option("--stats-socket", type=click.Path(dir_okay=False), default=str(SCX_STATS_PATH),
              show_default=True,
              help="Serve the policy's counters here over the scx_stats protocol (JSON lines on a "
                   "Unix socket, as scx schedulers do), for scx's stats tools.")
@click.option("--no-stats-socket", is_flag=True, help="Do not serve scx_stats.")
@command_argument
def deploy(name: str, sets, duration, interval, as_json, model_path, mode, decisions_out, retrain_every,
           retrain_min_rows, backend, watch, stats_socket, no_stats_socket, command) -> None:
    """Attach policy NAME to sched_ext and print its stats until Ctrl-C or --duration.

    With a COMMAND (after --) the policy is detached when COMMAND exits, and
    the exit status is COMMAND's. The scheduler is detached on Ctrl-C,
    SIGTERM, --duration, or if this process dies (the kernel drops the
    struct_ops link). If the kernel ejects the policy (watchdog stall,
    scx_bpf_error) the reason is reported and the exit status is 5; if it
    disables it asking for a restart (a CPU went offline or online), the
    policy is attached again after a short backoff, as scx schedulers do.

    Example: aios-lab deploy fifo --set slice_ns=5000000 --duration 30;
    aios-lab deploy mllb --decisions traces/d1 -- make -j4;
    aios-lab deploy mllb --model lb.model --retrain-every 30;
    aios-lab deploy freq --model table.json --watch -- make -j4;
    sudo aios-lab deploy freq --backend cpufreq --model table.json --duration 60
    """
    from aios_lab.sched import kinds
    from aios_lab.sched import policy as pol
    from aios_lab.sched.deploy_loop import DeployLoop

    if stats_socket and not no_stats_socket:
        from aios_lab.scx_stats import check_socket_path

        check_socket_path(stats_socket)
    policy = pol.get(name)
    kind = kinds.for_policy(policy)
    given = [n for n, v in (("model", model_path), ("mode", mode), ("decisions", decisions_out),
                            ("retrain_every", retrain_every)) if v is not None]
    why = kinds.refused_options(policy, given, spell=lambda n: "--" + n.replace("_", "-"), sep="/")
    if why:
        raise click.UsageError(why)
    if backend != "sched_ext":
        # Deploy (a): the same table from user space through cpufreq sysfs.
        if kind is None or backend not in kind.backends or not model_path:
            raise click.UsageError("--backend cpufreq applies a frequency table: "
                                   "aios-lab deploy freq --backend cpufreq --model TABLE")
        if command or sets or watch:
            raise click.UsageError("--backend cpufreq takes --model, --duration and --json only "
                                   "(no COMMAND, --set or --watch)")
        # That is `aios-lab freq run`, found through the root group (a CLI
        # module imports no other) and run with freq run's defaults.
        ctx = click.get_current_context()
        freq_run = ctx.find_root().command.get_command(ctx, "freq").get_command(ctx, "run")
        ctx.invoke(freq_run, model_path=Path(model_path), duration=duration, as_json=as_json)
        return
    if watch and not (kind is not None and "watch" in kind.options and model_path):
        raise click.UsageError(f"--watch needs one of the {kinds.watchers()} and --model FILE "
                               "(e.g. aios-lab deploy freq --model table.json --watch)")
    loop = DeployLoop(policy, parse_sets(sets), model_path=model_path, mode=mode,
                      decisions_out=Path(decisions_out) if decisions_out else None,
                      retrain_every_s=retrain_every, retrain_min_rows=retrain_min_rows, command=list(command),
                      watch_model=watch, stats_socket=None if no_stats_socket else stats_socket)

    def show(event: dict) -> None:
        if as_json:
            click.echo(json.dumps(event))
        elif event["event"] == "attached":
            extra = f", mode {event['mode']}" if event.get("mode") else ""
            if "table" in event:
                t = event["table"]
                extra += (f", table version {t['version']} from {t['source']}" if t else
                          ", no table: perf targets are left as they are")
            click.echo(f"attached {name} (load {event['load_s']:.3f}s, attach {event['attach_s']:.3f}s{extra}); "
                       "Ctrl-C to detach")
        elif event["event"] == "stats":
            rates = "  ".join(f"{k.lower()}={v}" for k, v in event["delta"].items())
            click.echo(f"[{event['t']:7.1f}s] {rates}")
        elif event["event"] == "retrained":
            click.echo(f"[{event['t']:7.1f}s] retrained on {event['rows']} decisions: held-out accuracy "
                       f"{event['accuracy']:.3f}, agreement {event['agreement']:.3f}; model {event['version']} "
                       f"now in slot {event['slot']}")
        elif event["event"] == "retrain_skipped":
            click.echo(f"[{event['t']:7.1f}s] retrain skipped: {event['why']}")
        elif event["event"] == "table_swapped":
            click.echo(f"[{event['t']:7.1f}s] table version {event['version']} from {event['source']} "
                       f"now in slot {event['slot']}")
        elif event["event"] == "swap_rejected":
            click.echo(f"[{event['t']:7.1f}s] table not swapped, the live one stays: {event['why']}")
        elif event["event"] == "command_exited":
            click.echo(f"command exited with {event['exit_code']} after {event['elapsed_s']:.2f}s", err=True)
        elif event["event"] == "restarting":
            click.echo(f"[{event['t']:7.1f}s] the kernel disabled {name} ({event['reason']}: "
                       f"{event['exit']['msg'] or event['exit']['reason']}); attaching again in "
                       f"{event['backoff_s']:g}s", err=True)
        elif event["event"] == "restarted":
            click.echo(f"[{event['t']:7.1f}s] {name} attached again (restart {event['restarts']})", err=True)
        elif event["event"] == "stats_socket_unavailable":
            click.echo(f"scx_stats not served at {event['path']}: {event['why']}", err=True)
        elif event["event"] == "decisions_written":
            click.echo(f"decisions trace written: {event['path']} ({event['rows']} decisions)")

    result = loop.run(duration_s=duration, interval_s=interval, on_event=show)
    if result.ejected is not None:
        info = result.exit_info
        click.echo(json.dumps({"event": "ejected", "policy": name, "exit": info.describe() if info else None})
                   if as_json else f"ejected: {result.ejected}", err=not as_json)
        sys.exit(exit_codes.EJECTED)
    info = result.exit_info
    summary = {"event": "detached", "policy": name, "stats": result.final_stats,
               "exit": info.describe() if info else None}
    summary.update({k: v for k, v in result.model.items() if v})  # e.g. the table swaps
    click.echo(json.dumps(summary) if as_json else
               f"detached {name}: {info.one_line() if info else 'no exit info'}; totals: "
               + ", ".join(f"{k.lower()}={v}" for k, v in result.final_stats.items()))
    if result.command_exit is not None and result.command_exit != 0:
        sys.exit(result.command_exit)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show sched_ext state, the attached policy and its stats.

    Example: aios-lab status --json
    """
    from aios_lab.sched.status import live_status

    st = live_status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    s = st["sched_ext"]
    click.echo(f"sched_ext: {s['state']}" + (f" ({s['ops']})" if s["ops"] else "")
               + f", enable_seq {s['enable_seq']}, nr_rejected {s['nr_rejected']}")
    p = st.get("policy")
    if p:
        click.echo(f"policy: {p['name']} (pid {p['pid']}, up {p['uptime_s']}s)")
        m = p.get("model")
        if m:
            from aios_lab.sched.kinds import noun

            what = noun(m.get("kind"))
            click.echo(f"  {what} version {m['version'] or 'none'} ({m.get('swaps', 0)} swaps)" if "version" in m
                       else f"  {what} version unknown: {m.get('error', 'unreadable')}")
        for k, v in (p.get("stats") or {}).items():
            click.echo(f"  {k.lower():12} {v}")
    elif s["ops"]:
        click.echo("policy: not attached by aios-lab")
