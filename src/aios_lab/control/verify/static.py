"""Stage 1, static: everything that can be judged without loading the policy.

- manifest: it parses (aios_lab.sched.policy's schema), is a sched_ext policy, and
  its object has what the manifest names (the struct_ops map, the exit record
  the liveness stage reads);
- tunables: every value (defaults and overrides) parses within its declared
  range, and every tunable is a `const volatile` global whose C type holds the
  whole declared range;
- kernel features: every kfunc the object calls and every one the manifest
  requires is in the target kernel's BTF (strong externs must be; `__weak` ones
  the object guards with bpf_ksym_exists() are recorded, not required), and
  the kernel has sched_ext (struct sched_ext_ops);
- compiled with -Werror: the source compiles with warnings as errors.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ... import build
from ...bpf.btf import KIND_DATASEC, KIND_FUNC, KIND_STRUCT, Btf
from ...errors import AiosError, PolicyError
from ...sched.policy import TUNABLE_TYPES, Policy, load_manifest
from .elf import undefined_symbols
from .report import Check, StageReport
from .target import Target

EXIT_VAR = "aios_exit"   # controller.EXIT_VAR: where ops.exit leaves the exit info


def _manifest(policy: Policy, obj_btf: Btf) -> Check:
    crit = "manifest parses; kind sched_ext; its struct_ops map and the exit record are in the object"
    ev: dict[str, Any] = {"manifest": str(policy.folder / "manifest.toml"), "kind": policy.kind,
                          "struct_ops": policy.struct_ops}
    try:
        load_manifest(policy.folder / "manifest.toml")
    except PolicyError as exc:
        return Check("manifest", False, crit, ev, exc.one_line())
    if policy.kind != "sched_ext":
        return Check("manifest", False, crit, ev, f"kind is {policy.kind!r}; only sched_ext policies are verified")
    sections = {}
    for sec in (".struct_ops.link", ".struct_ops", ".bss"):
        if obj_btf.has(sec, KIND_DATASEC):
            sections[sec] = sorted(obj_btf.datasec(sec))
    ev["object_sections"] = sections
    ops = sections.get(".struct_ops.link", []) + sections.get(".struct_ops", [])
    if policy.struct_ops not in ops:
        return Check("manifest", False, crit, ev,
                     f"the object has no struct_ops map {policy.struct_ops!r} (has: {', '.join(ops) or 'none'})")
    if policy.struct_ops not in sections.get(".struct_ops.link", []):
        return Check("manifest", False, crit, ev,
                     f"struct_ops map {policy.struct_ops!r} is not in SEC(\".struct_ops.link\"): without a link "
                     "a crashed loader leaves the scheduler attached")
    if EXIT_VAR not in sections.get(".bss", []):
        return Check("manifest", False, crit, ev,
                     f"the object has no {EXIT_VAR} record: call aios_record_exit() in ops.exit "
                     "(without it an ejection's reason is lost)")
    return Check("manifest", True, crit, ev)


def _type_range(desc: str) -> tuple[int, int] | None:
    if desc == "bool":
        return 0, 1
    if desc[:1] in "us" and desc[1:].isdigit():
        bits = int(desc[1:])
        return (0, (1 << bits) - 1) if desc[0] == "u" else (-(1 << bits - 1), (1 << bits - 1) - 1)
    return None


def _tunables(policy: Policy, overrides: dict[str, Any], obj_btf: Btf) -> tuple[Check, dict[str, Any]]:
    crit = ("every tunable value (default or override) is within its declared [min, max]; every tunable is a "
            "`const volatile` global whose C type holds the declared range")
    values = {n: t.default for n, t in policy.tunables.items()}
    problems: list[str] = []
    per: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in policy.tunables:
            problems.append(f"policy {policy.name} has no tunable {key!r}")
            continue
        try:
            values[key] = policy.tunables[key].parse(raw)
        except PolicyError as exc:
            problems.append(exc.one_line())
            values[key] = raw
    rodata = obj_btf.datasec(".rodata") if obj_btf.has(".rodata", KIND_DATASEC) else {}
    for name, t in policy.tunables.items():
        lo, hi = TUNABLE_TYPES[t.type]
        lo, hi = (t.min if t.min is not None else lo), (t.max if t.max is not None else hi)
        entry: dict[str, Any] = {"type": t.type, "min": lo, "max": hi, "value": values[name]}
        var = rodata.get(name)
        if var is None:
            problems.append(f"tunable {name} is not a `const volatile` global of the object")
        else:
            desc = obj_btf.describe(var.type_id)
            entry["c_type"] = desc
            rng = _type_range(desc)
            if t.type != "str" and rng is not None and lo is not None and not (rng[0] <= lo and hi <= rng[1]):
                problems.append(f"tunable {name}: declared range [{lo}, {hi}] does not fit its C type {desc}")
        per[name] = entry
    return Check("tunables", not problems, crit, {"tunables": per, "overrides": dict(overrides)},
                 "; ".join(problems)), values


def _kfunc_name(sym: str) -> str:
    # libbpf resolves `name___suffix` to the kernel's `name` (CO-RE flavours).
    return sym.rsplit("___", 1)[0] if sym.find("___") > 0 else sym


def _kernel_features(policy: Policy, obj_path: Path, obj_btf: Btf, target: Target) -> Check:
    crit = ("the target kernel's BTF has struct sched_ext_ops, every strong kfunc the object calls and every "
            "kfunc the manifest requires")
    externs = undefined_symbols(obj_path.read_bytes(), str(obj_path))
    funcs = {s: b for s, b in externs.items() if obj_btf.has(s, KIND_FUNC)}
    required = [str(k) for k in policy.requires.get("kfuncs", [])]
    with Btf.parse(target.btf) as kbtf:
        has_scx = kbtf.has("sched_ext_ops", KIND_STRUCT)
        present = {s: kbtf.has(_kfunc_name(s), KIND_FUNC) for s in sorted(set(funcs) | set(required))}
    missing_strong = [s for s, b in funcs.items() if b == "strong" and not present[s]]
    missing_required = [s for s in required if not present[s]]
    ev = {"target_release": target.release, "sched_ext_ops": has_scx,
          "kfuncs": {s: {"binding": funcs.get(s, "manifest"), "kernel_name": _kfunc_name(s), "present": present[s]}
                     for s in present},
          "optional_absent": sorted(s for s, b in funcs.items() if b == "weak" and not present[s])}
    reasons = []
    if not has_scx:
        reasons.append(f"kernel {target.release} has no sched_ext (no struct sched_ext_ops in its BTF)")
    missing = list(dict.fromkeys(missing_strong + missing_required))
    if missing:
        reasons.append(f"kernel {target.release} lacks kfunc(s) {', '.join(_kfunc_name(m) for m in missing)} "
                       "(call what this kernel has, or declare it __weak and guard it with bpf_ksym_exists())")
    return Check("kernel_features", not reasons, crit, ev, "; ".join(reasons))


def _werror(policy: Policy) -> Check:
    crit = "the source compiles with clang -Werror (every warning an error)"
    tmp = Path(tempfile.mkdtemp(prefix="aios-verify-"))
    try:
        clang = build.find_clang()
        version = subprocess.run([clang, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
        ev = {"clang": version[0] if version else clang, "flags": ["-Werror"]}
        try:
            build.compile_bpf(policy.source_path, tmp / "werror.bpf.o", extra_flags=["-Werror"], force=True)
        except AiosError as exc:
            return Check("werror", False, crit, ev, exc.one_line())
        return Check("werror", True, crit, ev)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(policy: Policy, overrides: dict[str, Any], target: Target) -> tuple[StageReport, dict[str, Any]]:
    """The static stage's report, and the resolved tunable values."""
    t0 = time.monotonic()
    obj_path = build.compile_bpf(policy.source_path, policy.object_path)  # a no-op when up to date
    with Btf.parse(obj_path) as obj_btf:
        checks = [_manifest(policy, obj_btf)]
        tun, values = _tunables(policy, overrides, obj_btf)
        checks += [tun, _kernel_features(policy, obj_path, obj_btf, target)]
    checks.append(_werror(policy))
    return StageReport.from_checks("static", checks, time.monotonic() - t0), values
