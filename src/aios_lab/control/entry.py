"""What a registry entry is, and its key.

An entry is four blobs: the built BPF object, the manifest, the tunable
values (canonical JSON) and the model (absent for policies that learn
nothing). Its key is the sha256 of a fixed text naming those four digests, so
the same object with the same manifest, tunables and model is the same entry
wherever and whenever it was submitted, and any change to any of them is a
new one. The parent, the author and the time are facts about an entry, not
part of its identity: re-submitting the same content finds the entry that
exists.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PolicyError, RegistryError
from .store import sha256

KEY_DOMAIN = "aios-lab-policy-v1"
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
HEX_PREFIX_RE = re.compile(r"^[0-9a-f]{4,64}$")
REF_RE = re.compile(r"^(?P<base>[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})(?:~(?P<back>\d{1,6}))?$")

RUN_KINDS = ("verify", "benchmark", "deploy")
# A run's verdict: a verifier's pass/fail, a benchmark's comparison, or
# error when the run itself broke (the VM died) and says nothing about the policy.
# A deploy run (control.rollout): pass when the canary window held, ejected or
# breached when it rolled back by itself, rolled-back when someone asked,
# quarantined after repeated failures.
VERDICTS = ("pass", "fail", "better", "no-worse", "worse", "error", "ejected", "breached", "rolled-back",
            "quarantined")


def tunables_bytes(values: dict[str, Any]) -> bytes:
    """The canonical spelling of tunable values: sorted keys, no spaces, so
    that the same values always hash the same."""
    for k, v in values.items():
        if not isinstance(k, str) or not isinstance(v, (bool, int, str)):
            raise RegistryError(f"tunable {k!r} = {v!r}: values are integers, booleans or strings")
    return (json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def entry_key(object_digest: str, manifest_digest: str, tunables_digest: str, model_digest: str | None) -> str:
    text = (f"{KEY_DOMAIN}\nobject {object_digest}\nmanifest {manifest_digest}\n"
            f"tunables {tunables_digest}\nmodel {model_digest or '-'}\n")
    return sha256(text.encode())


@dataclass(frozen=True)
class Parts:
    """What a submit stores, before it is stored."""
    name: str
    kind: str
    object: bytes
    manifest: bytes
    tunables: dict[str, Any]
    model: bytes | None = None
    source: bytes | None = None

    def key(self) -> str:
        return entry_key(sha256(self.object), sha256(self.manifest), sha256(tunables_bytes(self.tunables)),
                         sha256(self.model) if self.model is not None else None)


def parts_from_folder(folder: Path | str, sets: dict[str, str] | None = None, model: Path | str | None = None,
                      build: bool = True) -> Parts:
    """A policy folder (NAME/manifest.toml + source) as registry parts: its
    object built (a no-op when up to date) or, with build=False, read as
    built; tunables are the manifest's defaults with `sets` applied (checked
    against their ranges); `model` a file for a policy with a [model]."""
    from .. import build as b
    from ..sched.policy import load_manifest
    from .elf import check_bpf_object
    from .store import file_bytes

    manifest_path = Path(folder) / "manifest.toml"
    if not manifest_path.is_file():
        raise PolicyError(f"{folder} has no manifest.toml", hint="give a policy folder, e.g. policies/fifo")
    pol = load_manifest(manifest_path)
    if not NAME_RE.match(pol.name):
        raise PolicyError(f"{manifest_path}: name {pol.name!r} is not a plain name (letters, digits, _ . -)")
    tunables = pol.resolve_tunables(sets)
    if build:
        b.compile_bpf(pol.source_path, pol.object_path)
    elif not pol.object_path.is_file():
        raise PolicyError(f"policy {pol.name} is not built ({pol.object_path} is missing)",
                          hint="run `aios-lab build`, or submit without --no-build")
    obj = file_bytes(pol.object_path, "object")
    check_bpf_object(obj, f"object {pol.object_path}")
    if model is not None and pol.model is None:
        raise PolicyError(f"policy {pol.name} has no [model] in its manifest, so it takes no model")
    return Parts(pol.name, pol.kind, obj, file_bytes(manifest_path, "manifest"), tunables,
                 file_bytes(model, "model") if model is not None else None,
                 file_bytes(pol.source_path, "source"))


@dataclass(frozen=True)
class Author:
    kind: str     # person | agent
    name: str     # the user name, or the agent's client name
    uid: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "uid": self.uid}


@dataclass(frozen=True)
class Entry:
    hash: str
    name: str
    kind: str
    parent: str | None
    object: str
    manifest: str
    tunables: str
    model: str | None
    source: str | None
    object_size: int
    author: Author
    created_ns: int

    @classmethod
    def from_row(cls, r) -> "Entry":
        return cls(r["hash"], r["name"], r["kind"], r["parent"], r["object"], r["manifest"], r["tunables"],
                   r["model"], r["source"], r["object_size"], Author(r["author_kind"], r["author_name"],
                                                                     r["author_uid"]), r["created_ns"])

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["author"] = self.author.to_dict()
        d["blobs"] = {k: d.pop(k) for k in ("object", "manifest", "tunables", "model", "source")}
        return d


@dataclass(frozen=True)
class Sample:
    """One measured value: the stage that took it (a verifier stage, a
    benchmark), the arm (the candidate, eevdf, the deployed policy), the
    metric, which run of the repeats, the value and its unit."""
    stage: str
    metric: str
    run_index: int
    value: float
    unit: str
    arm: str = "candidate"

    def __post_init__(self) -> None:
        for f in ("stage", "metric", "unit", "arm"):
            v = getattr(self, f)
            if not isinstance(v, str) or not v or len(v) > 128:
                raise RegistryError(f"sample {f} {v!r} must be a non-empty string of at most 128 characters")
        if isinstance(self.run_index, bool) or not isinstance(self.run_index, int) or self.run_index < 0:
            raise RegistryError(f"sample run_index {self.run_index!r} must be an integer >= 0")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise RegistryError(f"sample {self.metric} value {self.value!r} must be a finite number")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(samples: list[Sample]) -> list[dict[str, Any]]:
    """Per (stage, arm, metric, unit): how many samples, their median, min and max."""
    import statistics

    groups: dict[tuple, list[float]] = {}
    for s in samples:
        groups.setdefault((s.stage, s.arm, s.metric, s.unit), []).append(s.value)
    return [{"stage": k[0], "arm": k[1], "metric": k[2], "unit": k[3], "n": len(v),
             "median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in sorted(groups.items())]


@dataclass(frozen=True)
class Run:
    id: int
    entry: str
    kind: str
    verdict: str
    platform: dict[str, Any]
    started_ns: int
    author: Author
    reports: dict[str, str] = field(default_factory=dict)  # name -> blob digest

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["author"] = self.author.to_dict()
        return d


@dataclass(frozen=True)
class Ref:
    """A reference to an entry: a hash prefix or a policy name (its newest
    entry), optionally `~N` for the N-th ancestor along parent links."""
    base: str
    back: int = 0

    def __str__(self) -> str:
        return f"{self.base}~{self.back}" if self.back else self.base

    @property
    def may_be_hash(self) -> bool:
        return bool(HEX_PREFIX_RE.match(self.base))


def parse_ref(text: str) -> Ref:
    m = REF_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise RegistryError(f"{text!r} is not a registry reference",
                            hint="give a hash (at least 4 hex digits), a policy name, or either with ~N "
                                 "for its N-th ancestor, e.g. fifo~1")
    return Ref(m.group("base"), int(m.group("back") or 0))
