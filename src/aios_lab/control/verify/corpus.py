"""A corpus of policies with the verdict `aios-lab verify` must reach on each.

Each case names a policy (and tunables), and either `expect = "pass"` or the
stage/check that must fail first with a regular expression for its reason.
`judge` classes a report: caught, missed (a bad policy passed), caught at the
wrong place, passed, or falsely rejected (a good policy failed).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...safe_read import load_toml
from . import Case
from .report import VerifyReport


@dataclass(frozen=True)
class CorpusCase:
    name: str
    policy: str
    expect: str                  # "pass" or "stage/check"
    reason: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return self.expect != "pass"

    @property
    def stage(self) -> str | None:
        """The stage a bad case must fail at; None for a good one."""
        return self.expect.split("/", 1)[0] if self.bad else None

    def case(self, stages: tuple[str, ...] | None = None) -> Case:
        return Case(self.policy, dict(self.overrides), *(() if stages is None else (stages,)))


def load(path: Path) -> list[CorpusCase]:
    data = load_toml(path, error=InputError, what="verifier corpus")
    out = []
    for i, c in enumerate(data.get("case", [])):
        if not isinstance(c, dict) or not isinstance(c.get("policy"), str) or not isinstance(c.get("expect"), str):
            raise InputError(f"{path}: case {i + 1} needs policy and expect strings")
        out.append(CorpusCase(str(c.get("name", c["policy"])), c["policy"], c["expect"], str(c.get("reason", "")),
                              {str(k): str(v) for k, v in c.get("set", {}).items()}))
    return out


def judge(case: CorpusCase, report: VerifyReport) -> str:
    """caught | missed | wrong-place | passed | falsely-rejected. A bad case
    whose stage was not run must pass the stages that were (the slower
    policy is correct and live: only its performance is bad)."""
    fail = report.failure()
    if not case.bad:
        return "passed" if report.passed else "falsely-rejected"
    if case.stage not in {s.stage for s in report.stages}:
        return "passed" if report.passed else "wrong-place"
    if fail is None:
        return "missed"
    stage, check = fail
    if f"{stage}/{check.name}" != case.expect or not re.search(case.reason, check.reason, re.I):
        return "wrong-place"
    return "caught"
