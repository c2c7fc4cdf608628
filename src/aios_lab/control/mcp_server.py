"""`aios-lab mcp`: the control plane for agents, over MCP (stdio).

Built on the official MCP Python SDK (`mcp`, the optional extra `[mcp]`).
Each tool is a thin, typed wrapper over the same library call the CLI makes,
returning plain data; a library error (aios_lab.errors) becomes a ToolError
whose text is the one line the CLI would print, so an agent reads the same
diagnosis a person does. Nothing here needs root: telemetry for a profile is
collected inside the VM (as root there), and deploying on the host goes
through the root service, never through this process.
"""
from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import AiosError, InputError
from ..extras import require

_F = TypeVar("_F", bound=Callable[..., Any])

SERVER_NAME = "aios-lab"
INSTRUCTIONS = (
    "Learned Linux scheduling and DVFS. Profile a workload before choosing a policy; "
    "every policy must pass `verify` before it can be deployed; results are measured, "
    "never estimated, and each comes with the data it was computed from.")


def _load_sdk():
    server = require("mcp.server.mcpserver", "mcp", "the MCP server (aios-lab mcp)")
    exceptions = require("mcp.server.mcpserver.exceptions", "mcp", "the MCP server (aios-lab mcp)")
    return server.MCPServer, exceptions.ToolError


def _tool_errors(tool_error: type[Exception]) -> Callable[[_F], _F]:
    """Turn the library's typed errors into the SDK's anticipated ToolError."""
    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except AiosError as exc:
                raise tool_error(exc.one_line()) from exc
        return inner  # type: ignore[return-value]
    return wrap


# -- the tools' bodies: plain functions, so the CLI and tests can call them too ----------------

def policies(include_test_only: bool = False) -> list[dict[str, Any]]:
    """The policies this installation can deploy, with their tunables and ranges."""
    from ..sched import policy as pol

    out = []
    for p in pol.discover().values():
        if p.test_only and not include_test_only:
            continue
        out.append({"name": p.name, "kind": p.kind, "summary": p.summary, "optimises": p.optimises,
                    "built": p.object_path.exists(), "model_kind": p.model.kind if p.model else None,
                    "tunables": {n: {"type": t.type, "default": t.default, "min": t.min, "max": t.max,
                                     "help": t.help} for n, t in p.tunables.items()}})
    return out


def policy_source(name: str) -> dict[str, Any]:
    """One policy's manifest and BPF source text (what an agent edits to propose a variant)."""
    from ..sched import policy as pol

    p = pol.get(name)
    manifest = p.folder / "manifest.toml"
    return {"name": p.name, "manifest": manifest.read_text(), "source_file": p.source,
            "source": p.source_path.read_text()}


def profile_trace(trace: str) -> dict[str, Any]:
    """The workload profile (analysis.profile) of a trace already collected."""
    from ..analysis.profile import profile_trace as _profile

    return _profile(trace)


def profile_workload(command: list[str], seconds: float = 5.0, cpus: int = 2) -> dict[str, Any]:
    """Run ``command`` in the VM for ``seconds`` under telemetry and profile it.

    The collection runs as root inside the guest (BPF needs it), so this
    works unprivileged on any host with the VM set up (`aios-lab vm build`)."""
    from ..analysis.profile import profile_trace as _profile
    from ..vm import runner
    from ..vm.topology import Topology

    if not command:
        raise AiosError("profile_workload needs a command to run", hint='e.g. ["hackbench", "-l", "200"]')
    if not 0 < seconds <= 120:
        raise AiosError(f"seconds={seconds} is outside (0, 120]")
    with tempfile.TemporaryDirectory(prefix="aios-profile-") as tmp:
        out = Path(tmp) / "trace"
        cmd = [sys.executable, "-m", "aios_lab.cli", "collect", "--duration", str(seconds),
               "--out", str(out), "--", *command]
        res = runner.run(cmd, topology=Topology(cpus=cpus), rwdirs=[Path(tmp)], timeout_s=600 + seconds,
                         emulator_fault_retries=1)
        if not out.exists():
            raise AiosError(f"the collection in the VM wrote no trace (exit {res.returncode}): "
                            f"{res.output.strip().splitlines()[-1:] or ['no output']}")
        prof = _profile(out)
    prof["trace"] = None  # the trace lived in a temporary folder
    prof["collected_in"] = {"vm": res.describe(), "command": command, "seconds": seconds}
    return prof


def status() -> dict[str, Any]:
    """sched_ext as the kernel reports it (state, attached ops) and our policy's live stats.

    Returns {"sched_ext": {"state", "ops", "enable_seq", ...}, "policy": the
    attached aios-lab policy's name, tunables and stats, or null}."""
    from ..sched.status import live_status

    return live_status()


# -- the registry: search, get, submit, verify, compare, history --------------------------------

MAX_RESULTS = 200


def _registry():
    from .registry import Registry

    return Registry()


def _actor(agent: str):
    from .audit import Actor

    agent = agent or "mcp"
    if not isinstance(agent, str) or len(agent) > 64 or not agent.isprintable():
        raise InputError("agent is the client's name: printable, at most 64 characters")
    return Actor.current(agent)


def _latest(runs, kind: str):
    return next((r for r in reversed(runs) if r.kind == kind), None)


def _summary(reg, e) -> dict[str, Any]:
    runs = reg.runs(e.hash)
    ver = _latest(runs, "verify")
    return {"hash": e.hash, "name": e.name, "kind": e.kind, "parent": e.parent, "author": e.author.to_dict(),
            "created": _iso(e.created_ns), "tunables": reg.tunables(e), "runs": len(runs),
            "verified": ver.verdict if ver else None}


def _iso(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def search_policies(name: str | None = None, hash: str | None = None, author: str | None = None,
                    verdict: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Registry entries (submitted policies), newest first, filtered by every filter given.

    name: exact policy name; hash: a prefix of the entry's hash; author: the
    author's name or kind ("agent", "person"); verdict: the latest
    verification's verdict ("pass", "fail") or "unverified". Returns a list
    of {hash, name, kind, parent, author, created, tunables, runs, verified}.
    `policies` lists the installed (built-in) policies instead."""
    from .entry import VERDICTS

    if hash is not None and not (isinstance(hash, str) and hash and all(c in "0123456789abcdef" for c in hash)):
        raise InputError(f"hash {hash!r} is not a lowercase hex prefix")
    if verdict is not None and verdict not in (*VERDICTS, "unverified"):
        raise InputError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}, unverified")
    if not 1 <= limit <= MAX_RESULTS:
        raise InputError(f"limit {limit} is outside [1, {MAX_RESULTS}]")
    out = []
    with _registry() as reg:
        for e in reversed(reg.entries(name)):
            if hash and not e.hash.startswith(hash):
                continue
            if author and author not in (e.author.name, e.author.kind):
                continue
            row = _summary(reg, e)
            if verdict is not None and (row["verified"] or "unverified") != verdict:
                continue
            out.append(row)
            if len(out) == limit:
                break
    return out


def get_policy(ref: str, all_samples: bool = False) -> dict[str, Any]:
    """One registry entry: its hash, name, parent, author, tunables, manifest
    and source text, and every run (verification, benchmark) with its verdict,
    platform and samples (a summary per metric: n, median, min, max; every
    raw sample with all_samples=true).

    ref: a hash (at least 4 hex digits), a policy name (its newest entry),
    either with ~N for the N-th ancestor (e.g. "fifo~1")."""
    from .entry import summarize

    with _registry() as reg:
        e = reg.get(ref)
        out = {**_summary(reg, e), "blobs": e.to_dict()["blobs"], "object_size": e.object_size,
               "manifest": reg.blob(e.manifest).decode("utf-8", "replace"),
               "source": reg.blob(e.source).decode("utf-8", "replace") if e.source else None, "run_list": []}
        for r in reg.runs(e.hash):
            ss = reg.samples(r.id)
            out["run_list"].append({**r.to_dict(), "samples": [s.to_dict() for s in ss] if all_samples
                                    else summarize(ss)})
    return out


def submit_policy(source: str, manifest: str | None = None, base: str | None = None, name: str | None = None,
                  tunables: dict[str, int | bool | str] | None = None, parent: str | None = None,
                  agent: str = "") -> dict[str, Any]:
    """Submit a policy's BPF source text to the registry; returns the entry.

    Give either `manifest` (the manifest.toml text; the policy's name is its
    name) or `base`, an installed policy whose manifest and headers the draft
    reuses, with `name`, a new name for the variant. The source is written
    into a private folder, compiled with warnings as errors, and stored with
    `tunables` (checked against the manifest's ranges; defaults otherwise),
    `parent` (a reference; default: the newest entry of the same name) and
    you as the author (`agent`, your client's name). Returns {hash, name,
    parent, author, tunables, created (false: this content was already
    there), ...}. Next: verify_policy(hash)."""
    from .. import build
    from ..sched.policy import load_manifest
    from . import drafts

    actor = _actor(agent)
    sets = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (tunables or {}).items()}
    with _registry() as reg:
        import hashlib

        args = {"draft": {"base": base, "name": name, "manifest_given": manifest is not None,
                          "source_sha256": hashlib.sha256(str(source).encode()).hexdigest()},
                "sets": sets, "parent": parent}
        try:
            folder = drafts.write(source, manifest=manifest, base=base, name=name)
            pol = load_manifest(folder / "manifest.toml")
            with tempfile.TemporaryDirectory(prefix="aios-werror-") as tmp:
                build.compile_bpf(pol.source_path, Path(tmp) / "werror.bpf.o", extra_flags=["-Werror"], force=True)
        except AiosError as e:
            reg.refused(actor, "submit", args, e)
            raise
        res = reg.submit_folder(folder, actor, sets, parent=parent)
        return {**_summary(reg, res.entry), "created": res.created, "audit_seq": res.audit_seq,
                "folder": str(folder)}


def verify_policy(ref: str, agent: str = "", cpus: int = 2, stages: list[str] | None = None,
                  against: str = "lkg") -> dict[str, Any]:
    """Start the staged verifier on a registry entry; returns {job, entry, policy, state} at once.

    Stages: static (manifest, tunable ranges, kfuncs in the target kernel's
    BTF, -Werror), the kernel verifier (per-program statistics, an instruction
    budget), liveness (attached under a stress mix and a CPU hotplug cycle
    with a short watchdog), performance (interleaved runs against EEVDF on a
    small batch workload, and against `against`: "lkg" (default) the last
    known good entry, which runs once a deploy held, from its stored object;
    a registry hash; or "none"; the verdict better / no-worse / worse). `stages`
    picks some (static always runs first); default: all. The kernel stages run in the pinned VM (cpus
    vCPUs) unless this kernel has sched_ext. Poll verify_status(job): it
    reports each stage as it ends; the verdict is recorded in the registry,
    and only an entry whose latest verification passed can be deployed."""
    from . import jobs

    if not 2 <= cpus <= 64:
        raise InputError(f"cpus {cpus} is outside [2, 64] (one vCPU must go offline in the hotplug cycle)")
    _actor(agent)
    return jobs.start(ref, agent or "mcp", cpus=cpus, stages=tuple(stages) if stages else None, against=against)


def verify_status(job: str) -> dict[str, Any]:
    """A verification job's progress: {job, entry, policy, state (running, done,
    failed), elapsed_s, against, notes (which deployed arm), stages: [{stage, passed, seconds, reason, skipped}],
    and when done: verdict (pass/fail), passed, failed_stage, reason, run (the
    registry run that keeps the report), report_digest; when failed: error}."""
    from . import jobs

    return jobs.status(job)


def compare_policies(a: str, b: str) -> dict[str, Any]:
    """What differs between registry entries a and b, and their measurements side by side.

    Returns {diff: {manifest (unified diff lines), tunables {name: [a, b]},
    model, object (sizes, sections)}, runs: {a, b: the latest run of each
    kind with its verdict}, samples: [{kind, stage, arm, metric, unit, a, b}]
    where a and b are {n, median, min, max} of that metric in the latest run
    of that kind (null where one side has none)}."""
    from .diff import diff_entries
    from .entry import RUN_KINDS, summarize

    with _registry() as reg:
        ea, eb = reg.get(a), reg.get(b)
        rows: dict[tuple, dict[str, Any]] = {}
        runs: dict[str, dict[str, Any]] = {"a": {}, "b": {}}
        for side, e in (("a", ea), ("b", eb)):
            all_runs = reg.runs(e.hash)
            for kind in RUN_KINDS:
                r = _latest(all_runs, kind)
                if r is None:
                    continue
                runs[side][kind] = {"run": r.id, "verdict": r.verdict, "platform": r.platform}
                for g in summarize(reg.samples(r.id)):
                    key = (kind, g["stage"], g["arm"], g["metric"], g["unit"])
                    row = rows.setdefault(key, dict(zip(("kind", "stage", "arm", "metric", "unit"), key),
                                                    a=None, b=None))
                    row[side] = {k: g[k] for k in ("n", "median", "min", "max")}
        return {"diff": diff_entries(reg, ea, eb), "runs": runs, "samples": [rows[k] for k in sorted(rows)]}


def history(ref: str) -> list[dict[str, Any]]:
    """An entry's ancestry: the entry and each parent back to the root, newest
    first, each with its audit records (who submitted, verified, deployed or
    rolled it back, when, and the answer)."""
    with _registry() as reg:
        return [{**_summary(reg, e), "audit": [r.to_dict() for r in reg.audit_records(e.hash)]}
                for e in reg.history(ref)]


# -- the root service: deploy, rollback ---------------------------------------------------------

def service_socket() -> Path:
    """AIOS_LAB_SERVICE_SOCKET, else the service's default socket."""
    import os

    from .service import ServiceConfig

    env = os.environ.get("AIOS_LAB_SERVICE_SOCKET")
    return Path(env) if env else ServiceConfig().socket


def _ask(payload: dict[str, Any]) -> dict[str, Any]:
    from ..errors import ServiceRefused
    from .service import request

    answer = request(service_socket(), payload)
    if not answer.get("ok"):
        raise ServiceRefused(f"the root service refused {payload['op']}: {answer.get('error', 'no reason given')}")
    return {k: v for k, v in answer.items() if k != "ok"}


def deploy_policy(hash: str, duration: float = 60.0, agent: str = "") -> dict[str, Any]:
    """Ask the root service to deploy a verified registry entry on this host for `duration` seconds.

    hash: the entry's full 64-digit hash (a name or a prefix could name
    another entry by the time it runs); its latest verification must have
    passed. Returns the service's answer: {entry, until (unix time), loaded,
    ...}. The service checks who you are, rate-limits and audits; it refuses
    with a reason, which comes back as the error."""
    _actor(agent)
    return _ask({"op": "deploy", "entry": hash, "duration": duration, "agent": agent or "mcp"})


def stop_policy(agent: str = "") -> dict[str, Any]:
    """Ask the root service to detach the policy it deployed (the kernel's
    default scheduler takes over). Returns {entry: what was detached, exit}."""
    _actor(agent)
    return _ask({"op": "stop", "agent": agent or "mcp"})


def rollback(agent: str = "") -> dict[str, Any]:
    """Ask the root service to put the last known good policy back in place of
    the deployed one. Returns the service's answer (what is deployed now)."""
    _actor(agent)
    return _ask({"op": "rollback", "agent": agent or "mcp"})


# -- the server ---------------------------------------------------------------------------------

TOOLS = (policies, policy_source, profile_trace, profile_workload, status, search_policies, get_policy,
         submit_policy, verify_policy, verify_status, compare_policies, history, deploy_policy, stop_policy,
         rollback)


def build_server():
    """The MCPServer with every tool registered (imports the SDK)."""
    MCPServer, ToolError = _load_sdk()
    server = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS)
    wrap = _tool_errors(ToolError)
    for fn in TOOLS:
        server.tool()(wrap(fn))
    return server


def main() -> None:
    build_server().run("stdio")


if __name__ == "__main__":
    main()
