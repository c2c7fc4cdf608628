"""Cell kinds: what one cell of a sweep runs. Registered types, looked up by name.

A kind declares its parameters (name -> Param: default, type, help), the
ones its folder is keyed by (`layout`), what it asks an executor for
(`resources`), and `run(params, rep, out)`, which does the work, writes
its artifacts (traces, tables) under `out` and returns flat metrics.
`provenance(params, out)` adds what the kind knows about where it ran
(the VM's kernel and QEMU for vm-bench), beside the host and git revision
every cell records.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ...variants import Variants
from ..errors import CellError



@dataclass(frozen=True)
class Param:
    default: Any            # None: required
    type: type
    help: str
    choices: tuple = ()


class CellKind:
    name: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[dict[str, Param]]
    layout: ClassVar[tuple[str, ...]] = ()
    # Modules a cell imports: the local executor imports them once in the
    # driver before forking the cells' processes, which then start with them
    # instead of importing them anew (a second or more per cell on a busy machine).
    preload: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        """`params` with the kind's defaults filled in, each checked; CellError when one is wrong."""
        unknown = set(params) - set(cls.params)
        if unknown:
            raise CellError(f"{cls.name}: unknown parameter(s) {', '.join(sorted(unknown))}",
                            hint=f"{cls.name} takes {', '.join(cls.params)}")
        out: dict[str, Any] = {}
        for key, p in cls.params.items():
            if key not in params:
                if p.default is None:
                    raise CellError(f"{cls.name}: parameter {key} is required ({p.help})")
                out[key] = p.default
                continue
            v = params[key]
            if p.type is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, p.type) or (p.type is int and isinstance(v, bool)):
                raise CellError(f"{cls.name}: parameter {key}={v!r} must be {p.type.__name__} ({p.help})")
            if p.choices and v not in p.choices:
                raise CellError(f"{cls.name}: parameter {key}={v!r} is not one of "
                                f"{', '.join(map(str, p.choices))}")
            out[key] = v
        cls.check(out)
        return out

    @classmethod
    def check(cls, params: dict[str, Any]) -> None:
        """Checks across parameters, or against the project (a trace exists ...)."""

    @classmethod
    def resources(cls, params: dict[str, Any]) -> dict[str, float]:
        """What one cell needs: num_cpus (host cores), memory (bytes)."""
        return {"num_cpus": 1}

    def run(self, params: dict[str, Any], rep: int, out: Path) -> dict[str, Any]:
        raise NotImplementedError

    def provenance(self, params: dict[str, Any], out: Path) -> dict[str, Any]:
        return {}


def _load_builtin() -> None:
    from . import dvfs, vm_bench  # noqa: F401  (registers them)


KINDS: Variants[type[CellKind]] = Variants("cell kind", CellError, "kinds:", _load_builtin)
register, names, get = KINDS.register, KINDS.names, KINDS.get
