"""Verification jobs: the staged verifier of a registry entry, run in a
child process so that a caller (the MCP server) answers at once and asks
later.

`start` resolves the entry, finds the folder it was built from (an
installed policy of its name, or its draft), writes the job's spec into
`jobs/<id>/` in aios-lab's data dir and starts `python -m
aios_lab.control.jobs <folder>`. The child runs the static stage, then the
kernel stages (each on its own where this kernel has sched_ext, so each is
reported as it ends; together in one VM boot otherwise), appending one JSON
line per finished stage to `events.jsonl`. It then checks that what it
verified is the entry (the object, manifest and source have the entry's
digests; a rebuild that came out different verifies nothing about the
entry) and records the report as a `verify` run (control.verification),
which is what the root service's deploy reads. `status` reads the events
back. A child process, not a thread: the verifier finds the draft through
AIOS_LAB_POLICY_PATH, an environment of its own, and a crash in it cannot
take the server down.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .. import paths
from ..errors import AiosError, InputError, RegistryError
from .audit import Actor
from .entry import Entry
from .registry import Registry

JOB_RE = re.compile(r"^[0-9a-f]{16}$")
SPEC, EVENTS, LOG = "job.json", "events.jsonl", "job.log"
_children: dict[str, subprocess.Popen] = {}   # reaped by status()

# What the performance stage compares against besides EEVDF: the last known
# good entry (what a deploy would fall back to, and what runs once a deploy
# held), a registry entry named by the caller, or nothing.
AGAINST_LKG, AGAINST_NONE = "lkg", "none"


def root() -> Path:
    return paths.data_dir() / "jobs"


def _installed_folder(entry: Entry) -> Path | None:
    from ..sched.policy import discover

    pol = discover().get(entry.name)
    return pol.folder if pol is not None else None


def source_folder(entry: Entry) -> tuple[Path, str]:
    """The policy folder the entry was built from and the AIOS_LAB_POLICY_PATH
    that lets the verifier find it by name."""
    from . import drafts

    installed = _installed_folder(entry)
    if installed is not None:
        return installed, os.environ.get("AIOS_LAB_POLICY_PATH", "")
    draft = drafts.folder_of(entry)
    if draft is None:
        raise RegistryError(f"entry {entry.hash[:12]} ({entry.name}) was not built from an installed policy or "
                            "a draft on this machine, so there is no source to verify",
                            hint="submit its source (submit_policy) here, then verify the entry that gives")
    return draft, drafts.search_path_with(draft)


def _stages(stages: tuple[str, ...] | None) -> tuple[str, ...]:
    """The stages asked for (all when none), in the verifier's order; static first, always."""
    from .verify import STAGES, check_stages

    check_stages(tuple(stages or ()))
    out = tuple(s for s in STAGES if s in (stages or STAGES))
    if "static" not in out:
        raise InputError("a verification always starts with the static stage", hint=f"stages: {', '.join(STAGES)}")
    return out


def _against(reg: Registry, entry: Entry, against: str | None) -> str:
    """`against` checked before any work: lkg, none, or a registry entry
    (its full hash) other than `entry`."""
    against = against or AGAINST_LKG
    if against in (AGAINST_LKG, AGAINST_NONE):
        return against
    other = reg.get(against)
    if other.hash == entry.hash:
        raise InputError("an entry cannot be its own deployed arm", hint="name another entry, lkg or none")
    return other.hash


def _resolve(ref: str, registry: Path | str | None, stages: tuple[str, ...] | None, against: str | None):
    """What a verification of `ref` needs, checked before any work: the
    stages, the entry, its source folder and search path, the deployed arm
    (_against) and the registry's root."""
    stages = _stages(stages)
    with Registry(registry) as reg:
        entry = reg.get(ref)
        folder, policy_path = source_folder(entry)
        return stages, entry, folder, policy_path, _against(reg, entry, against), reg.root


def start(ref: str, agent: str = "", registry: Path | str | None = None, cpus: int = 2,
          stages: tuple[str, ...] | None = None, against: str | None = None) -> dict[str, Any]:
    """Start verifying registry entry `ref` (every stage unless `stages`
    names some; the performance stage against `against`: AGAINST_LKG by
    default); returns the job's id at once."""
    stages, entry, folder, policy_path, against, reg_root = _resolve(ref, registry, stages, against)
    job = secrets.token_hex(8)
    d = root() / job
    d.mkdir(parents=True, mode=0o700)
    spec = {"job": job, "entry": entry.hash, "policy": entry.name, "folder": str(folder),
            "registry": str(Path(reg_root).resolve()), "agent": agent, "cpus": cpus, "started": time.time(),
            "stages": list(stages), "against": against}
    (d / SPEC).write_text(json.dumps(spec))
    env = dict(os.environ, AIOS_LAB_POLICY_PATH=policy_path)
    with open(d / LOG, "wb") as log:
        _children[job] = subprocess.Popen([sys.executable, "-m", "aios_lab.control.jobs", str(d)], env=env,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
    (d / "pid").write_text(str(_children[job].pid))
    return {"job": job, "entry": entry.hash, "policy": entry.name, "state": "running"}


def _alive(job: str, d: Path) -> bool:
    child = _children.get(job)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(int((d / "pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def status(job: str) -> dict[str, Any]:
    """The stages finished so far and, once it ended, the verdict and the
    registry run that keeps the report."""
    if not isinstance(job, str) or not JOB_RE.match(job):
        raise InputError(f"{job!r} is not a job id (16 hex digits, as verify_policy returned)")
    d = root() / job
    if not (d / SPEC).is_file():
        raise InputError(f"no verification job {job}", hint="start one with verify_policy")
    spec = json.loads((d / SPEC).read_text())
    events = []
    if (d / EVENTS).is_file():
        events = [json.loads(ln) for ln in (d / EVENTS).read_text().splitlines() if ln.strip()]
    out: dict[str, Any] = {"job": job, "entry": spec["entry"], "policy": spec["policy"],
                           "stages": [{k: v for k, v in e.items() if k != "event"} for e in events
                                      if e["event"] == "stage"],
                           "against": spec.get("against", AGAINST_LKG),
                           "notes": [e["note"] for e in events if e["event"] == "note"],
                           "elapsed_s": round(time.time() - spec["started"], 1)}
    end = next((e for e in events if e["event"] in ("done", "error")), None)
    if end is None and _alive(job, d):
        out["state"] = "running"
    elif end is None:
        tail = (d / LOG).read_text(errors="replace").strip().splitlines()[-5:] if (d / LOG).is_file() else []
        out.update(state="failed", error=f"the verification process ended without a verdict: {' | '.join(tail)}")
    elif end["event"] == "error":
        out.update(state="failed", error=end["error"])
    else:
        out.update(state="done", verdict=end["verdict"], passed=end["verdict"] == "pass", run=end["run"],
                   report_digest=end["report_digest"], failed_stage=end["failed_stage"], reason=end["reason"])
    if end is not None:
        _children.pop(job, None)
    return out


# ---------------------------------------------------------------------- the child

def _emit(d: Path, event: dict[str, Any]) -> None:
    with open(d / EVENTS, "a") as f:
        f.write(json.dumps(event, default=str) + "\n")


def _stage_event(stage) -> dict[str, Any]:
    fail = stage.first_failure
    return {"event": "stage", "stage": stage.stage, "passed": stage.passed, "seconds": stage.seconds,
            "skipped": stage.skipped, "reason": stage.skipped or (fail.reason if fail else "")}


def _groups(in_process: bool, stages: tuple[str, ...]) -> list[tuple[str, ...]]:
    rest = tuple(s for s in stages if s != "static")
    # In the VM the stages after static share one boot; in this process each
    # costs nothing extra on its own and is reported as soon as it ends.
    return [("static",)] + ([(s,) for s in rest] if in_process else [rest] if rest else [])


def _mismatch(entry: Entry, artifacts: dict[str, str]) -> str:
    want = {"object": entry.object, "manifest": entry.manifest, "source": entry.source}
    bad = [k for k, v in want.items() if v is not None and artifacts.get(k) and artifacts[k] != v]
    return ", ".join(f"{k} {artifacts[k][:12]} is not the entry's {want[k][:12]}" for k in bad)


def deployed_arm(reg: Registry, entry: Entry, against: str, stages: tuple[str, ...],
                  scratch: Path) -> tuple[dict[str, Any] | None, str]:
    """The performance stage's deployed arm ({policy, tunables, entry,
    folder}, the entry written out into `scratch`) and a line saying which."""
    from .rollout import last_known_good
    from .stored import materialize

    if "performance" not in stages or against == AGAINST_NONE:
        return None, ""
    if against == AGAINST_LKG:
        other = last_known_good(reg, exclude=entry.hash)
        if other is None:
            return None, "no last known good entry (none has held a deploy): the candidate is compared with EEVDF only"
    else:
        other = reg.by_hash(_against(reg, entry, against))
    pol = materialize(reg, other, scratch / other.hash[:16])
    return ({"policy": pol.name, "tunables": reg.tunables(other), "entry": other.hash, "folder": str(pol.folder)},
            f"deployed arm: {other.name} {other.hash[:12]}")


def verify_entry(registry: Path | str, entry_hash: str, actor: Actor, stages: tuple[str, ...], cpus: int = 2,
                 on_stage: Callable[[Any], None] = lambda st: None, against: str = AGAINST_LKG,
                 log: Callable[[str], None] = lambda m: None):
    """Verify a registry entry in this process and record the report as a
    verify run; `on_stage` gets each StageReport as it ends. Needs the
    entry's folder findable by name (AIOS_LAB_POLICY_PATH: source_folder).
    The performance stage's deployed arm is `against` (AGAINST_LKG, a
    registry ref, AGAINST_NONE), run from its stored object.
    Returns (the run, the report as a dict)."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="aios-verify-arm-"))
    try:
        return _verify_entry(registry, entry_hash, actor, stages, cpus, on_stage, against, log, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _verify_entry(registry, entry_hash, actor, stages, cpus, on_stage, against, log, scratch):
    from . import verification
    from .verify import VerifyReport, _in_process, parent_programs, verify
    from .verify.report import StageReport

    with Registry(registry) as reg:
        entry = reg.by_hash(entry_hash)
        tunables = reg.tunables(entry)
        parent = reg.by_hash(entry.parent) if entry.parent else None
        parent_report = verification.latest_report(reg, parent, passed=True) if parent else None
        deployed, said = deployed_arm(reg, entry, against, stages, scratch)
    if said:
        log(said)
    parent_progs = None
    if parent_report is not None:
        try:
            parent_progs = parent_programs(parent_report)
        except InputError:
            pass
    report: VerifyReport | None = None
    for group in _groups(_in_process(), stages):   # the verifier's own rule for where kernel stages run
        failed = next((st.stage for st in report.stages if not st.passed), None) if report else None
        if failed is not None:
            for s in group:
                st = StageReport(s, False, 0.0, [], skipped=f"{failed} failed")
                report.stages.append(st)
                on_stage(st)
            continue
        part = verify(entry.name, tunables, group, parent=parent_progs, cpus=cpus, deployed=deployed)
        if report is None:
            bad = _mismatch(entry, part.artifacts)
            if bad:
                raise RegistryError(f"what would be verified is not entry {entry.hash[:12]}: {bad}",
                                    hint="the policy's files changed since the entry was submitted; submit again")
            report = part
        else:
            report.stages += part.stages
            report.target.update({k: v for k, v in part.target.items() if k == "platform"})
        for st in part.stages:
            on_stage(st)
    data = report.to_dict()
    with Registry(registry) as reg:
        return verification.record(reg, entry, data, actor), data


def verify_now(ref: str, actor: Actor, stages: tuple[str, ...], cpus: int = 2,
               on_stage: Callable[[Any], None] = lambda st: None, registry: Path | str | None = None,
               against: str | None = None, log: Callable[[str], None] = lambda m: None):
    """`aios-lab policy verify`: what a job's child does, in this process
    (the verifier finds the entry's folder by name through
    AIOS_LAB_POLICY_PATH, set here for the call and restored after)."""
    stages, entry, _folder, policy_path, against, reg_root = _resolve(ref, registry, stages, against)
    old = os.environ.get("AIOS_LAB_POLICY_PATH")
    os.environ["AIOS_LAB_POLICY_PATH"] = policy_path
    try:
        return entry, *verify_entry(reg_root, entry.hash, actor, stages, cpus, on_stage, against, log)
    finally:
        if old is None:
            os.environ.pop("AIOS_LAB_POLICY_PATH", None)
        else:
            os.environ["AIOS_LAB_POLICY_PATH"] = old


def run(d: Path) -> None:
    from . import verification
    from .verify import STAGES

    spec = json.loads((d / SPEC).read_text())
    run_, data = verify_entry(spec["registry"], spec["entry"], Actor.current(spec["agent"]),
                              tuple(spec.get("stages", STAGES)), spec["cpus"],
                              on_stage=lambda st: _emit(d, _stage_event(st)), against=spec.get("against", AGAINST_LKG),
                              log=lambda m: _emit(d, {"event": "note", "note": m}))
    _emit(d, {"event": "done", "verdict": run_.verdict, "run": run_.id,
              "report_digest": run_.reports[verification.REPORT], "failed_stage": data["failed_stage"],
              "reason": data["reason"]})


def main(argv: list[str]) -> int:
    d = Path(argv[0])
    try:
        run(d)
    except AiosError as e:
        _emit(d, {"event": "error", "error": e.one_line()})
        return 1
    except Exception as e:  # noqa: BLE001 - the caller must learn that it broke, and how
        traceback.print_exc()
        _emit(d, {"event": "error", "error": f"the verification broke: {type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
