"""Policies are data: a folder with BPF source and a manifest.toml.

The CLI discovers them under ``policies/`` (and any folder listed in
AIOS_LAB_POLICY_PATH, which tests use for their deliberately broken policies);
nothing about a particular policy is hard-wired in code.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import build, paths
from .errors import PolicyError

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


# [model] kinds: a decision tree walked in BPF (mllb), or a frequency table
# looked up in BPF (freq, aios_lab.dvfs).
MODEL_KINDS = ("tree", "freq-table")


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


def _require(data: dict, key: str, where: Path) -> Any:
    if key not in data:
        raise PolicyError(f"{where}: missing required key {key!r}")
    return data[key]


def load_manifest(path: Path) -> Policy:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path} is not valid TOML: {exc}") from None
    folder = Path(path).parent
    tunables = {}
    for name, spec in data.get("tunables", {}).items():
        ttype = spec.get("type")
        if ttype not in TUNABLE_TYPES:
            raise PolicyError(f"{path}: tunable {name} has unknown type {ttype!r}",
                              hint=f"use one of {', '.join(TUNABLE_TYPES)}")
        tunables[name] = Tunable(name, ttype, spec.get("default"), spec.get("help", ""), spec.get("min"),
                                 spec.get("max"), spec.get("max_len"))
        tunables[name].parse(tunables[name].default)  # a bad default is a manifest bug
    stats = None
    if "stats" in data:
        s = data["stats"]
        stats = StatsSpec(_require(s, "map", path), _require(s, "enum", path), s.get("prefix", ""),
                          dict(s.get("help", {})))
    model = None
    if "model" in data:
        m = data["model"]
        kind = _require(m, "kind", path)
        if kind not in MODEL_KINDS:
            raise PolicyError(f"{path}: [model] kind {kind!r} is unknown", hint=f"use one of {', '.join(MODEL_KINDS)}")
        model = ModelSpec(kind, _require(m, "slots_map", path), _require(m, "ctl_map", path),
                          _require(m, "features_enum", path) if kind == "tree" else m.get("features_enum", ""),
                          m.get("feature_prefix", ""), m.get("decisions_ring"), m.get("state_map"))
    topology = {str(k): str(v) for k, v in data.get("topology", {}).items()}
    unknown = set(topology) - {"llc", "node"}
    if unknown:
        raise PolicyError(f"{path}: [topology] knows llc and node, not {', '.join(sorted(unknown))}")
    pol = Policy(
        name=_require(data, "name", path), kind=_require(data, "kind", path),
        summary=data.get("summary", ""), optimises=data.get("optimises", ""), folder=folder,
        source=_require(data, "source", path), struct_ops=data.get("struct_ops", ""),
        ops_name=data.get("ops_name", data.get("name", "")), tunables=tunables, stats=stats,
        requires=dict(data.get("requires", {})), test_only=bool(data.get("test_only", False)),
        topology=topology, model=model)
    if pol.kind == "sched_ext" and not pol.struct_ops:
        raise PolicyError(f"{path}: a sched_ext policy needs struct_ops = \"<map name>\"")
    if not pol.source_path.exists():
        raise PolicyError(f"{path}: source {pol.source} does not exist")
    return pol


def search_path() -> list[Path]:
    dirs = [paths.project_root() / "policies"]
    extra = os.environ.get("AIOS_LAB_POLICY_PATH", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
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
