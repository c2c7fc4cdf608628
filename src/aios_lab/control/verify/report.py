"""The verifier's report: every stage, every check, and its raw evidence.

A report is plain data (dataclasses -> dict -> JSON) so that it can be
hashed and stored with a registry entry; nothing in it is prose that a
program would have to parse back. Each check names the written criterion it
applied (docs/verifier.md) and carries the measurements it judged.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = 1
STAGES = ("static", "verifier", "liveness", "performance")
KERNEL_STAGES = ("verifier", "liveness", "performance")


@dataclass
class Check:
    name: str
    passed: bool
    criterion: str
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str = ""          # why it failed, one line; empty when passed


@dataclass
class StageReport:
    stage: str
    passed: bool
    seconds: float
    checks: list[Check] = field(default_factory=list)
    # Set when the stage could not run at all (an earlier stage failed).
    skipped: str = ""

    @property
    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.passed), None)

    @classmethod
    def from_checks(cls, stage: str, checks: list[Check], seconds: float) -> "StageReport":
        return cls(stage, all(c.passed for c in checks) and bool(checks), round(seconds, 3), checks)

    @classmethod
    def from_dict(cls, d: dict) -> "StageReport":
        return cls(d["stage"], d["passed"], d["seconds"], [Check(**c) for c in d["checks"]], d.get("skipped", ""))


@dataclass
class VerifyReport:
    policy: str
    tunables: dict[str, Any]
    artifacts: dict[str, str]       # sha256 of source, manifest, object
    target: dict[str, Any]          # kernel release, BTF sha256, where the kernel stages ran
    stages: list[StageReport] = field(default_factory=list)
    schema: int = SCHEMA

    @property
    def passed(self) -> bool:
        return bool(self.stages) and all(s.passed for s in self.stages)

    def failure(self) -> tuple[str, Check] | None:
        """(stage, check) of the first failed check, or None."""
        for s in self.stages:
            c = s.first_failure
            if c is not None:
                return s.stage, c
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        fail = self.failure()
        d["failed_stage"] = fail[0] if fail else None
        d["failed_check"] = fail[1].name if fail else None
        d["reason"] = fail[1].reason if fail else ""
        return d

    def samples(self) -> list:
        """The report's raw measurements as registry samples
        (control.verification.samples: what a verify run keeps)."""
        from ..verification import samples

        return samples(self.to_dict())

    def digest(self) -> str:
        """sha256 of the canonical JSON: what the registry stores the report under."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
