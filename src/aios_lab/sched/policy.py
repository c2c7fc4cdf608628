"""Policies are data: a folder with BPF source and a manifest.toml.

The CLI discovers them under ``policies/`` (and any folder listed in
AIOS_LAB_POLICY_PATH, which tests use for their deliberately broken policies);
nothing about a particular policy is hard-wired in code.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import build, paths
from ..errors import PolicyError, SetupError
from ..safe_read import load_toml
from . import kinds

TUNABLE_TYPES = {"u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1), "s32": (-(2**31), 2**31 - 1),
                 "s64": (-(2**63), 2**63 - 1), "bool": (0, 1), "str": (None, None)}


@dataclass(frozen=True)
class Tunable:
    name: str
    type: str
    default: Any
    help: str
    min: int | None = None
    max: int | None = None
    max_len: int | None = None

    def parse(self, text: str | int | bool) -> Any:
        """Check a user-supplied value (from the CLI or a config) and convert it."""
        if self.type == "str":
            value = str(text)
            if self.max_len is not None and len(value.encode()) > self.max_len:
                raise PolicyError(f"tunable {self.name}: {value!r} is longer than {self.max_len} bytes")
            return value
        if self.type == "bool":
            if isinstance(text, bool):
                return text
            low = str(text).lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise PolicyError(f"tunable {self.name}: {text!r} is not a boolean", hint="use true or false")
        try:
            value = int(text, 0) if isinstance(text, str) else int(text)
        except ValueError:
            raise PolicyError(f"tunable {self.name}: {text!r} is not an integer") from None
        lo, hi = TUNABLE_TYPES[self.type]
        lo = self.min if self.min is not None else lo
        hi = self.max if self.max is not None else hi
        if not lo <= value <= hi:
            raise PolicyError(f"tunable {self.name}={value} is outside [{lo}, {hi}]")
        return value


@dataclass(frozen=True)
class StatsSpec:
    map: str
    enum: str
    prefix: str
    help: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """Where a learning policy keeps its model (the manifest's [model] table)."""
    kind: str
    slots_map: str
    ctl_map: str
    features_enum: str = ""         # tree: the enum naming the features, in order
    feature_prefix: str = ""
    decisions_ring: str | None = None
    state_map: str | None = None    # freq-table: per-CPU observations user space reads
    # Any other key of the [model] table, for a kind that needs its own.
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Policy:
    name: str
    kind: str
    summary: str
    optimises: str
    folder: Path
    source: str
    struct_ops: str
    ops_name: str
    tunables: dict[str, Tunable]
    stats: StatsSpec | None
    requires: dict[str, Any]
    test_only: bool = False
    # rodata arrays filled from sysfs before load: {"llc": var, "node": var}
    topology: dict[str, str] = field(default_factory=dict)
    model: ModelSpec | None = None

    @property
    def source_path(self) -> Path:
        return self.folder / self.source

    @property
    def object_path(self) -> Path:
        return build.object_path(self.source_path)

    def resolve_tunables(self, overrides: dict[str, str] | None = None) -> dict[str, Any]:
        values = {n: t.default for n, t in self.tunables.items()}
        for key, raw in (overrides or {}).items():
            if key not in self.tunables:
                known = ", ".join(sorted(self.tunables)) or "none"
                raise PolicyError(f"policy {self.name} has no tunable {key!r}", hint=f"known: {known}")
            values[key] = self.tunables[key].parse(raw)
        return values


_MISSING = object()
_TOML_NAMES = {str: "string", int: "integer", bool: "boolean", dict: "table", list: "array"}


def _get(data: dict, key: str, where: Path, types: type | tuple, default: Any = _MISSING,
         section: str = "") -> Any:
    """data[key], of one of `types`; PolicyError naming file and field when
    it is missing (no default) or of the wrong type (TOML has real types:
    `test_only = "no"` is a string, not false)."""
    field_name = f"{section}.{key}" if section else key
    if key not in data:
        if default is _MISSING:
            raise PolicyError(f"{where}: missing required key {field_name!r}")
        return default
    v = data[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        v = None  # bool is an int subclass; a boolean is never an integer or a string here
    if v is None or not isinstance(v, types):
        names = " or ".join(_TOML_NAMES[t] for t in (types if isinstance(types, tuple) else (types,)))
        raise PolicyError(f"{where}: {field_name} = {data[key]!r} is not a {names}",
                          hint="fix the manifest")
    return v


def _tunable(path: Path, name: str, spec: Any) -> Tunable:
    sec = f"tunables.{name}"
    if not isinstance(spec, dict):
        raise PolicyError(f"{path}: [{sec}] is not a table", hint="e.g. [tunables.slice_ns] type = \"u64\"")
    ttype = _get(spec, "type", path, str, section=sec)
    if ttype not in TUNABLE_TYPES:
        raise PolicyError(f"{path}: tunable {name} has unknown type {ttype!r}",
                          hint=f"use one of {', '.join(TUNABLE_TYPES)}")
    default = _get(spec, "default", path, (str, int, bool), section=sec)
    lo = _get(spec, "min", path, int, None, section=sec)
    hi = _get(spec, "max", path, int, None, section=sec)
    if lo is not None and hi is not None and lo > hi:
        raise PolicyError(f"{path}: tunable {name} has min {lo} > max {hi}")
    t = Tunable(name, ttype, default, _get(spec, "help", path, str, "", section=sec), lo, hi,
                _get(spec, "max_len", path, int, None, section=sec))
    try:
        t.parse(default)  # a bad default is a manifest bug
    except PolicyError as e:
        raise PolicyError(f"{path}: default of {e}", hint="fix the manifest") from None
    return t


def load_manifest(path: Path) -> Policy:
    # Bounded, non-blocking, depth-limited (safe_read); errors are PolicyError.
    data = load_toml(path, error=PolicyError, what="manifest")
    folder = Path(path).parent
    tunables = {name: _tunable(path, name, spec)
                for name, spec in _get(data, "tunables", path, dict, {}).items()}
    stats = None
    if "stats" in data:
        s = _get(data, "stats", path, dict)
        stats = StatsSpec(_get(s, "map", path, str, section="stats"), _get(s, "enum", path, str, section="stats"),
                          _get(s, "prefix", path, str, "", section="stats"),
                          {str(k): str(v) for k, v in _get(s, "help", path, dict, {}, section="stats").items()})
    model = None
    if "model" in data:
        m = _get(data, "model", path, dict)
        kind = _get(m, "kind", path, str, section="model")
        try:
            required = kinds.get(kind).required_keys  # the kinds registered in sched.kinds
        except PolicyError as e:
            raise PolicyError(f"{path}: {e}", hint=e.hint) from None

        def opt(key: str, default: Any = None) -> Any:
            return _get(m, key, path, str, _MISSING if key in required else default, section="model")
        known = ("kind", "slots_map", "ctl_map", "features_enum", "feature_prefix", "decisions_ring", "state_map")
        model = ModelSpec(kind, opt("slots_map", _MISSING), opt("ctl_map", _MISSING), opt("features_enum", ""),
                          opt("feature_prefix", ""), opt("decisions_ring"), opt("state_map"),
                          {k: v for k, v in m.items() if k not in known})
    topology = {str(k): str(v) for k, v in _get(data, "topology", path, dict, {}).items()}
    unknown = set(topology) - {"llc", "node"}
    if unknown:
        raise PolicyError(f"{path}: [topology] knows llc and node, not {', '.join(sorted(unknown))}")
    name = _get(data, "name", path, str)
    requires = _get(data, "requires", path, dict, {})
    pol = Policy(
        name=name, kind=_get(data, "kind", path, str),
        summary=_get(data, "summary", path, str, ""), optimises=_get(data, "optimises", path, str, ""),
        folder=folder, source=_get(data, "source", path, str), struct_ops=_get(data, "struct_ops", path, str, ""),
        ops_name=_get(data, "ops_name", path, str, name), tunables=tunables, stats=stats,
        requires=dict(requires), test_only=_get(data, "test_only", path, bool, False),
        topology=topology, model=model)
    if pol.kind == "sched_ext" and not pol.struct_ops:
        raise PolicyError(f"{path}: a sched_ext policy needs struct_ops = \"<map name>\"")
    if not pol.source_path.is_file() or Path(pol.source).is_absolute() or ".." in Path(pol.source).parts:
        raise PolicyError(f"{path}: source {pol.source} is not a file in the policy's folder")
    return pol


def search_path() -> list[Path]:
    dirs = [paths.project_root() / "policies"]
    extra = os.environ.get("AIOS_LAB_POLICY_PATH", "")
    for p in extra.split(os.pathsep):
        if p and not Path(p).is_dir():
            raise SetupError(f"AIOS_LAB_POLICY_PATH names {p}, which is not a folder",
                             hint="list folders that hold NAME/manifest.toml, separated by ':'")
        if p:
            dirs.append(Path(p))
    return dirs


def discover() -> dict[str, Policy]:
    found: dict[str, Policy] = {}
    for base in search_path():
        if not base.is_dir():
            continue
        for manifest in sorted(base.glob("*/manifest.toml")):
            pol = load_manifest(manifest)
            if pol.name in found:
                raise PolicyError(f"two policies are named {pol.name!r}: {found[pol.name].folder} and {pol.folder}")
            found[pol.name] = pol
    return found


def get(name: str) -> Policy:
    pols = discover()
    if name not in pols:
        raise PolicyError(f"no policy named {name!r}",
                          hint=f"known: {', '.join(sorted(pols)) or 'none'} (see `aios-lab policy list`)")
    return pols[name]
