"""`aios-lab policy submit|show|history|diff`, `aios-lab audit verify|log` and
`aios-lab service`: the policy registry, its audit log and the root service
on the command line (aios_lab.control does the work).

The root (cli/__init__.py) adds REGISTRY_COMMANDS to the `policy` group
(`policy list --registry` is in policies.py) and registers `audit` and
`service`.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import click

from .group import AiosGroup
from .options import parse_sets
from .types import POSITIVE, InputFile


def _registry():
    from aios_lab.control.registry import Registry

    return Registry()


def _when(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _folder(policy: str) -> Path:
    """A policy folder, or the name of a policy aios-lab discovers."""
    p = Path(policy)
    if p.is_dir():
        return p
    from aios_lab.sched.policy import get

    return get(policy).folder


@click.command("submit")
@click.argument("policy")
@click.option("--set", "sets", multiple=True, help="Tunable KEY=VALUE (repeatable), checked against the manifest.")
@click.option("--model", type=InputFile(), default=None, help="The model file, for a policy with a [model].")
@click.option("--parent", default=None, help="The entry this one derives from (default: the newest entry of "
                                             "the same name).")
@click.option("--root", "as_root", is_flag=True, help="Record no parent.")
@click.option("--no-build", is_flag=True, help="Store the object as built; do not run clang.")
@click.option("--agent", default="", help="Submitting for an agent: its client name (the author is the agent).")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
def submit(policy, sets, model, parent, as_root, no_build, agent, as_json) -> None:
    """Build POLICY (a folder or a policy name) and store it in the registry.

    The entry's key is the sha256 over its object, manifest, tunables and
    model: submitting the same content again finds the existing entry. Every
    submit, accepted or refused, is written to the audit log.

    Example: aios-lab policy submit policies/fifo --set slice_ns=5000000
    """
    from aios_lab.control.audit import Actor

    if parent and as_root:
        raise click.UsageError("--parent and --root exclude each other")
    with _registry() as reg:
        res = reg.submit_folder(_folder(policy), Actor.current(agent), parse_sets(sets), model, not no_build,
                                parent, as_root)
    if as_json:
        _echo_json({**res.entry.to_dict(), "created": res.created, "audit_seq": res.audit_seq})
        return
    e = res.entry
    state = "stored" if res.created else "already in the registry"
    click.echo(f"{e.hash}  {e.name}  {state}")
    if res.created:
        click.echo(f"parent {e.parent or '(none)'}")



@click.command("show")
@click.argument("ref")
@click.option("--samples", "all_samples", is_flag=True, help="List every raw sample, not a summary per metric.")
@click.option("--json", "as_json", is_flag=True, help="Print the entry, its runs and samples as JSON.")
def show(ref, all_samples, as_json) -> None:
    """Show a registry entry: its blobs, tunables, author, and every run.

    REF is a hash (at least 4 hex digits), a policy name (its newest entry),
    either followed by ~N for the N-th ancestor.

    Example: aios-lab policy show fifo~1 --samples
    """
    from aios_lab.control.entry import summarize

    with _registry() as reg:
        e = reg.get(ref)
        tunables = reg.tunables(e)
        runs = [(r, reg.samples(r.id)) for r in reg.runs(e.hash)]
    if as_json:
        _echo_json({**e.to_dict(), "tunables": tunables,
                    "runs": [{**r.to_dict(), "samples": [s.to_dict() for s in ss]} for r, ss in runs]})
        return
    click.echo(f"entry    {e.hash}\nname     {e.name} ({e.kind})\nparent   {e.parent or '(none)'}\n"
               f"author   {e.author.kind} {e.author.name} (uid {e.author.uid})\ncreated  {_when(e.created_ns)}\n"
               f"object   {e.object} ({e.object_size} bytes)\nmanifest {e.manifest}\nmodel    {e.model or '(none)'}")
    click.echo("tunables " + ", ".join(f"{k}={v}" for k, v in sorted(tunables.items())))
    for r, ss in runs:
        p = r.platform
        click.echo(f"run {r.id}: {r.kind} {r.verdict} on {p['kernel_release']} (btf {p['btf_id'][:12]}, "
                   f"{len(p['topology'].get('online_cpus', []))} cpus) by {r.author.kind} {r.author.name} "
                   f"at {_when(r.started_ns)}")
        for name, digest in r.reports.items():
            click.echo(f"  report {name} {digest}")
        if all_samples:
            for s in ss:
                click.echo(f"  {s.stage:16} {s.arm:10} {s.metric:20} #{s.run_index:<3} {s.value:g} {s.unit}")
        else:
            for g in summarize(ss):
                click.echo(f"  {g['stage']:16} {g['arm']:10} {g['metric']:20} n={g['n']:<3} median {g['median']:g} "
                           f"[{g['min']:g}, {g['max']:g}] {g['unit']}")


@click.command("history")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the chain as JSON.")
def history(ref, as_json) -> None:
    """Walk an entry's parent links back to the root, newest first, with the
    audit records of each entry.

    Example: aios-lab policy history mllb
    """
    with _registry() as reg:
        chain = [(e, reg.audit_records(e.hash)) for e in reg.history(ref)]
    if as_json:
        _echo_json([{**e.to_dict(), "audit": [r.to_dict() for r in recs]} for e, recs in chain])
        return
    for e, recs in chain:
        click.echo(f"{e.hash[:12]}  {e.name}  {_when(e.created_ns)}  {e.author.kind}:{e.author.name}")
        for r in recs:
            who = f"{r.user}" + (f"/{r.agent}" if r.agent else "")
            click.echo(f"    #{r.seq} {_when(r.time_ns)} {r.action} by {who}: {r.verdict}")


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def diff(a, b, as_json) -> None:
    """What changed from entry A to entry B: manifest, tunables, model, and
    the object's size and section sizes.

    Example: aios-lab policy diff fifo~1 fifo
    """
    from aios_lab.control.diff import diff_entries

    with _registry() as reg:
        d = diff_entries(reg, reg.get(a), reg.get(b))
    if as_json:
        _echo_json(d)
        return
    click.echo(f"a {d['a']}\nb {d['b']}")
    if d["same"]:
        click.echo("same entry")
        return
    for line in d["manifest"]:
        click.echo(line)
    for k, (va, vb) in d["tunables"].items():
        click.echo(f"tunable {k}: {va} -> {vb}")
    m = d["model"]
    if m["a"] != m["b"]:
        click.echo(f"model: {m['a'] or '(none)'} -> {m['b'] or '(none)'}")
        for line in m["diff"]:
            click.echo(line)
    o = d["object"]
    if o["a"]["sha256"] != o["b"]["sha256"]:
        click.echo(f"object: {o['a']['size']} -> {o['b']['size']} bytes")
        for s in o["sections"]:
            click.echo(f"  {s['section']:32} {s['a'] if s['a'] is not None else '-':>8} -> "
                       f"{s['b'] if s['b'] is not None else '-'}")


@click.command("deploy")
@click.argument("ref")
@click.option("--duration", type=POSITIVE, default=None, help="Detach after this many seconds (default: until "
                                                              "Ctrl-C or SIGTERM).")
@click.option("--window", type=POSITIVE, default=30.0, show_default=True,
              help="Canary window, seconds: the candidate must hold this long to become the last known good.")
@click.option("--lkg", default=None, help="The entry to roll back to (default: the last entry that held its "
                                          "canary window and is not quarantined).")
@click.option("--max-wait-ratio", type=POSITIVE, default=2.0, show_default=True,
              help="Guard: mean run-queue wait in the window over the previous scheduler's.")
@click.option("--backoff", type=POSITIVE, default=5.0, show_default=True,
              help="Seconds before the first retry of a failed candidate; doubles each time.")
@click.option("--quarantine-after", type=click.IntRange(min=1), default=3, show_default=True,
              help="Failed attempts in a row before the entry is quarantined.")
@click.option("--override", default="", metavar="REASON",
              help="Deploy an entry without a passing verification, or a quarantined one. Loud and audited.")
@click.option("--run-dir", type=click.Path(file_okay=False), default="/run/aios-lab/entries", show_default=True,
              help="Where the entries' stored objects are written out to be loaded.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome (attempts, evidence, rollback times) "
                                                      "as JSON.")
def deploy(ref, duration, window, lkg, max_wait_ratio, backoff, quarantine_after, override, run_dir,
           as_json) -> None:
    """Deploy a registry entry as a transaction, with rollback to the last
    known good policy.

    Refuses an entry without a passing verification (exit 9) unless
    --override. The last known good entry is loaded beside the candidate
    first; the candidate then runs a canary window (its exit record,
    sched_ext's event counters, the run-queue wait against the previous
    scheduler). An ejection or a breached guard puts the last known good
    policy back on the CPUs (one attach: it is already loaded), keeps the
    evidence (exit, kernel dump, kernel log, the last seconds of the trail)
    as a deploy run of the entry, and retries with exponential backoff;
    after --quarantine-after failures the entry is quarantined. A CPU hotplug
    restart re-attaches the candidate. Exits 5 when the candidate was rolled
    back. Needs root and sched_ext (in the VM: aios-lab vm run -- ...).

    Example: aios-lab policy deploy fifo --window 10 --duration 60
    """
    from aios_lab.control.audit import Actor
    from aios_lab.control.rollout import Backoff, Guards, Rollout
    from aios_lab.exit_codes import EJECTED
    from aios_lab.signals import StopSignals

    guards = Guards(window_s=window, max_wait_ratio=max_wait_ratio)
    policy = Backoff(first_s=backoff, quarantine_after=quarantine_after)
    log = (lambda m: None) if as_json else (lambda m: click.echo(m, err=True))
    with StopSignals() as stops, _registry() as reg:
        out = Rollout(reg, ref, Actor.current(), run_dir=Path(run_dir), lkg=lkg, guards=guards, backoff=policy,
                      override=override, duration_s=duration, stopped=lambda: stops.requested is not None,
                      log=log).run()
    if as_json:
        _echo_json(out.to_dict())
    else:
        click.echo(f"{out.entry[:12]}: {out.state} after {len(out.attempts)} attempt(s); "
                   f"last known good: {out.lkg[:12] if out.lkg else '(none: the default class)'}")
        for a in out.attempts:
            rb = a.rollback or {}
            back = f"; {rb['to']} live in {rb['attach_ms']:.0f} ms" if rb.get("to") else ""
            click.echo(f"  attempt {a.index}: {a.verdict}{': ' + a.reason if a.reason else ''}{back}")
    if out.state in ("rolled-back", "quarantined"):
        raise SystemExit(EJECTED)


@click.command("verify")
@click.argument("ref")
@click.option("--stages", default="static,verifier,liveness,performance", show_default=True,
              help="Comma-separated stages (static always runs first).")
@click.option("--cpus", default=2, show_default=True, type=click.IntRange(2, 64),
              help="vCPUs of the VM the kernel stages boot (at least 2: one must go offline).")
@click.option("--against", default="lkg", show_default=True, metavar="lkg|none|REF",
              help="The performance stage's deployed arm besides EEVDF: the last known good entry (what runs "
                   "once a deploy held), a registry entry, or none. It runs from its stored object.")
@click.option("--agent", default="", help="Verifying for an agent: its client name (recorded as the run's author).")
@click.option("--json", "as_json", is_flag=True, help="Print the report and the run as JSON.")
def verify_entry(ref, stages, cpus, against, agent, as_json) -> None:
    """Verify a registry entry and record the report as its verify run.

    The same staged verifier as `aios-lab verify`, on the folder the entry
    was built from (an installed policy or an agent's draft), refusing when
    what would be verified is not the entry (object, manifest and source
    digests). The report (JSON) and every number in it are kept in the
    registry: `policy deploy` and the root service deploy only an entry whose
    latest verify run passed. Exit 9 when a stage fails.

    Example: aios-lab policy verify fifo --stages static,verifier,liveness
    """
    import sys

    from aios_lab import exit_codes
    from aios_lab.control.audit import Actor
    from aios_lab.control.jobs import verify_now

    def show(st) -> None:
        if not as_json:
            what = f"SKIPPED ({st.skipped})" if st.skipped else ("PASS" if st.passed else "FAIL")
            click.echo(f"  {st.stage:<11} {what}  {st.seconds:.1f}s", err=True)

    entry, run, report = verify_now(ref, Actor.current(agent), tuple(x.strip() for x in stages.split(",") if x.strip()),
                                    cpus, on_stage=show, against=against, log=lambda m: click.echo(m, err=True))
    if as_json:
        _echo_json({"entry": entry.hash, "run": run.to_dict(), "report": report})
    else:
        verdict = "PASSED" if report["passed"] else f"FAILED at {report['failed_stage']}: {report['reason']}"
        click.echo(f"{entry.hash[:12]} {entry.name}: {verdict} (verify run {run.id})")
    if not report["passed"]:
        sys.exit(exit_codes.VERIFY_FAILED)


REGISTRY_COMMANDS = (submit, show, history, diff, verify_entry, deploy)


@click.command("mcp")
@click.option("--socket", "socket_path", default=None,
              help="The root service's Unix socket for deploy_policy, stop_policy and rollback "
                   "(default: $AIOS_LAB_SERVICE_SOCKET, else /run/aios-lab/control.sock).")
def mcp(socket_path) -> None:
    """Serve aios-lab's tools to an agent over MCP (stdio), on the official SDK.

    Tools: policies, policy_source, profile_trace, profile_workload (in the
    VM), status; search_policies, get_policy, submit_policy, verify_policy and
    verify_status (a background job), compare_policies, history (the
    registry); deploy_policy, stop_policy and rollback (requests to the root
    service).
    Runs unprivileged. Needs the [mcp] extra. docs/control-plane.md.

    Example: aios-lab mcp   # from an MCP client's server configuration
    """
    import os

    from aios_lab.control.mcp_server import build_server

    if socket_path:
        os.environ["AIOS_LAB_SERVICE_SOCKET"] = socket_path  # where the tools look (mcp_server.service_socket)
    build_server().run("stdio")


# --------------------------------------------------------------------------- audit

@click.group("audit", cls=AiosGroup)
def audit() -> None:
    """The append-only, hash-chained audit log of the policy registry.

    Example: aios-lab audit verify
    """


@audit.command("verify")
@click.option("--anchor", default=None,
              help="SEQ:HASH of a head saved earlier (from --json); fails if that record is gone or changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result and the head (save it as an anchor).")
def audit_verify(anchor, as_json) -> None:
    """Check the audit log's hash chain: every record intact, none deleted,
    none moved. Exits 8 naming each broken record.

    Example: aios-lab audit verify --anchor 42:<hash printed earlier>
    """
    from aios_lab.control.audit import parse_anchor
    from aios_lab.errors import AuditChainBroken

    with _registry() as reg:
        report = reg.verify_chain(parse_anchor(anchor) if anchor else None)
    if as_json:
        _echo_json(report.to_dict())
    elif report.ok:
        click.echo(f"audit log intact: {report.records} records, head {report.head[0]}:{report.head[1]}")
    else:
        for seq, problem in report.problems:
            click.echo(f"record {seq}: {problem}", err=True)
    if not report.ok:
        raise AuditChainBroken(f"the audit log's hash chain is broken at {len(report.problems)} place(s), "
                               f"first at record {report.problems[0][0]}", report.problems,
                               hint="restore the registry from a backup and find out who changed it")


@audit.command("log")
@click.option("--entry", "ref", default=None, help="Only the records about this entry.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the last N records.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def audit_log(ref, limit, as_json) -> None:
    """Print the audit log: who asked for what, and the answer.

    Example: aios-lab audit log --entry fifo --limit 20
    """
    with _registry() as reg:
        recs = reg.audit_records(ref, limit)
    if as_json:
        _echo_json([r.to_dict() for r in recs])
        return
    for r in recs:
        who = f"{r.user}(uid {r.uid})" + (f" for agent {r.agent}" if r.agent else "")
        click.echo(f"#{r.seq} {_when(r.time_ns)} {who} {r.action} {r.target[:12] or '-'} {r.args} -> {r.verdict}")


# --------------------------------------------------------------------------- service

SOCKET = "/run/aios-lab/control.sock"


@click.group("service", cls=AiosGroup)
def service() -> None:
    """The root service that deploys verified registry entries for
    unprivileged callers (docs/control-plane.md, packaging/systemd/).

    Example: aios-lab service deploy <64-hex hash> --duration 60
    """


def _ask(socket_path: str, payload: dict, as_json: bool) -> dict:
    from aios_lab.control.service import request
    from aios_lab.errors import ServiceRefused

    answer = request(socket_path, payload)
    if as_json:
        _echo_json(answer)
    if not answer.get("ok"):
        raise ServiceRefused(str(answer.get("error", "refused")))
    return answer


_socket_option = click.option("--socket", "socket_path", default=SOCKET, show_default=True,
                              help="The service's Unix socket.")


@service.command("run")
@click.option("--config", "config_path", type=InputFile(), default=None,
              help="TOML with a [service] table (default: /etc/aios-lab/service.toml when it exists).")
@click.option("--json", "as_json", is_flag=True, help="Print where it listens as JSON once it does.")
def service_run(config_path, as_json) -> None:
    """Run the service (as root) until SIGTERM: the systemd unit's command.

    Example: sudo aios-lab service run --config /etc/aios-lab/service.toml
    """
    import threading

    from aios_lab.control.service import DEFAULT_CONFIG, ServiceConfig, serve

    path = config_path or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    cfg = ServiceConfig.load(path) if path else ServiceConfig()
    ready = threading.Event()

    def announce():
        ready.wait()
        info = {"socket": str(cfg.socket), "group": cfg.group, "registry": str(cfg.registry),
                "deployer": cfg.deployer}
        click.echo(json.dumps(info) if as_json else
                   f"listening on {cfg.socket} for group {cfg.group} ({cfg.deployer} deployer)", err=not as_json)
    threading.Thread(target=announce, daemon=True).start()
    serve(cfg, ready=ready)


@service.command("deploy")
@click.argument("entry")
@click.option("--duration", type=POSITIVE, default=None,
              help="Seconds to keep it deployed (default: the service's maximum).")
@click.option("--set", "sets", multiple=True, help="Restate a tunable KEY=VALUE; must be the entry's own value.")
@click.option("--agent", default="", help="Asking for an agent: its client name (recorded as a claim).")
@_socket_option
@click.option("--json", "as_json", is_flag=True, help="Print the service's answer as JSON.")
def service_deploy(entry, duration, sets, agent, socket_path, as_json) -> None:
    """Ask the service to deploy registry ENTRY (its full hash) on this host.

    Example: aios-lab service deploy 4e2789773dba...5b728de8 --duration 60
    """
    payload = {"op": "deploy", "entry": entry, "agent": agent, "tunables": parse_sets(sets)}
    if duration is not None:
        payload["duration"] = duration
    answer = _ask(socket_path, payload, as_json)
    if not as_json:
        click.echo(f"deployed {answer['entry']} until {_when(int(answer['until'] * 1e9))}"
                   + (f" ({answer['note']})" if answer.get("note") else ""))


@service.command("stop")
@click.option("--agent", default="", help="Asking for an agent: its client name (recorded as a claim).")
@_socket_option
@click.option("--json", "as_json", is_flag=True, help="Print the service's answer as JSON.")
def service_stop(agent, socket_path, as_json) -> None:
    """Ask the service to detach what it deployed.

    Example: aios-lab service stop
    """
    answer = _ask(socket_path, {"op": "stop", "agent": agent}, as_json)
    if not as_json:
        click.echo(f"stopped {answer['entry']}")


@service.command("rollback")
@click.option("--reason", default="", help="Why (recorded in the audit log and the entry's deploy run).")
@click.option("--agent", default="", help="Asking for an agent: its client name (recorded as a claim).")
@_socket_option
@click.option("--json", "as_json", is_flag=True, help="Print the service's answer as JSON.")
def service_rollback(reason, agent, socket_path, as_json) -> None:
    """Ask the service to detach the deployed entry and attach the last
    known good one (already loaded beside it).

    Example: aios-lab service rollback --reason "p99 latency alarm"
    """
    answer = _ask(socket_path, {"op": "rollback", "reason": reason, "agent": agent}, as_json)
    if not as_json:
        rb = answer.get("rollback") or {}
        click.echo(f"rolled back {answer['entry'][:12]}: {answer.get('live')} runs"
                   + (f" ({rb['to']}, {rb['attach_ms']:.0f} ms)" if rb.get("to") else ""))


@service.command("status")
@_socket_option
@click.option("--json", "as_json", is_flag=True, help="Print the service's answer as JSON.")
def service_status(socket_path, as_json) -> None:
    """What the service has deployed, if anything.

    Example: aios-lab service status --json
    """
    answer = _ask(socket_path, {"op": "status"}, as_json)
    if not as_json:
        a = answer.get("active")
        click.echo("nothing deployed" if a is None else
                   f"{a['entry']} deployed for uid {a['uid']} until {_when(int(a['until'] * 1e9))} ({a['deployer']})")
