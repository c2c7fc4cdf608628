"""A sweep spec (TOML) and the cells it expands to.

    [sweep]
    name = "governors"
    kind = "dvfs-sim"          # a registered cell kind (sweep.cells)
    repeat = 2                 # runs of every grid point (rep = 0 .. repeat-1)
    seed = 7                   # shuffles the order; recorded in the plan
    retries = 1                # extra attempts for a cell that fails

    [grid]                     # every combination of these lists is a cell
    governor = ["schedutil", "ondemand"]
    trace = ["bursty-1", "frames-1"]

    [fixed]                    # the same for every cell
    cluster = "gs101:big"

    [[exclude]]                # drop grid points matching every key given
    governor = "ondemand"
    trace = "frames-1"

    [resources]                # override the kind's requests (Ray: num_cpus, memory, custom)
    num_cpus = 1

A cell's identity is its content hash: sha256 over the canonical JSON of
its kind, its full parameters (grid, fixed and the kind's defaults) and its
repetition. The code revision is recorded in each result but not hashed,
so a sweep resumes across commits and a mixed sweep shows in its results.
The order is shuffled (seeded, recorded) so that drift over the hours a
sweep runs (other tenants, thermal state, a node's age) is spread over the
parameters instead of confounding the one that happens to run last.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cells
from .errors import SweepError

SECTIONS = {"sweep", "grid", "fixed", "exclude", "resources"}
SWEEP_KEYS = {"name", "kind", "repeat", "seed", "retries"}
SCALAR = (str, int, float, bool)


@dataclass(frozen=True)
class Cell:
    kind: str
    params: dict[str, Any]
    rep: int
    layout: tuple[str, ...]           # the parameters its folder is keyed by, in order

    @property
    def hash(self) -> str:
        return cell_hash(self.kind, self.params, self.rep)

    @property
    def key(self) -> dict[str, Any]:
        """The parameters that name its folder (then rep)."""
        return {k: self.params[k] for k in self.layout}

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.key.items()) + f" rep={self.rep}"

    def to_dict(self) -> dict:
        return {"hash": self.hash, "kind": self.kind, "params": self.params, "rep": self.rep,
                "layout": list(self.layout)}

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        c = cls(d["kind"], dict(d["params"]), int(d["rep"]), tuple(d["layout"]))
        if "hash" in d and d["hash"] != c.hash:
            raise SweepError(f"cell {c.label()}: recorded hash {d['hash']} does not match its content "
                             f"({c.hash}); the plan was edited by hand",
                             hint="plan the sweep again from its spec")
        return c


def cell_hash(kind: str, params: dict, rep: int) -> str:
    canon = json.dumps({"kind": kind, "params": params, "rep": rep}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


@dataclass
class SweepSpec:
    name: str
    kind: str
    grid: dict[str, list]
    fixed: dict[str, Any] = field(default_factory=dict)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1
    seed: int | None = None
    retries: int = 1

    @classmethod
    def load(cls, path: Path | str) -> "SweepSpec":
        from ..safe_read import load_toml

        # The guarded reader: a FIFO or device is refused at once (a plain
        # read would block on a FIFO forever), size and nesting are bounded.
        path = Path(path)
        doc = load_toml(path, error=SweepError, what="sweep spec")
        return cls.from_dict(doc, where=str(path))

    @classmethod
    def from_dict(cls, doc: dict, where: str = "sweep spec") -> "SweepSpec":
        unknown = set(doc) - SECTIONS
        if unknown:
            raise SweepError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}",
                             hint=f"sections are {', '.join(sorted(SECTIONS))}")
        head = doc.get("sweep")
        if not isinstance(head, dict) or "kind" not in head:
            raise SweepError(f"{where}: needs a [sweep] table with kind = \"...\"",
                             hint=f"kinds: {', '.join(cells.names())}")
        bad = set(head) - SWEEP_KEYS
        if bad:
            raise SweepError(f"{where}: unknown [sweep] key(s) {', '.join(sorted(bad))}",
                             hint=f"keys are {', '.join(sorted(SWEEP_KEYS))}")
        grid = doc.get("grid", {})
        if not isinstance(grid, dict):
            raise SweepError(f"{where}: [grid] must be a table of lists")
        for k, v in grid.items():
            if not isinstance(v, list) or not v or not all(isinstance(x, SCALAR) for x in v):
                raise SweepError(f"{where}: grid.{k} must be a non-empty list of strings or numbers")
            if len(set(map(repr, v))) != len(v):
                raise SweepError(f"{where}: grid.{k} lists a value twice")
        fixed = doc.get("fixed", {})
        if not isinstance(fixed, dict) or not all(isinstance(x, SCALAR) for x in fixed.values()):
            raise SweepError(f"{where}: [fixed] must be a table of strings or numbers")
        both = set(grid) & set(fixed)
        if both:
            raise SweepError(f"{where}: {', '.join(sorted(both))} both in [grid] and [fixed]")
        exclude = doc.get("exclude", [])
        if not isinstance(exclude, list) or not all(isinstance(e, dict) and e for e in exclude):
            raise SweepError(f"{where}: [[exclude]] entries must be non-empty tables")
        for e in exclude:
            if set(e) - set(grid):
                raise SweepError(f"{where}: an [[exclude]] names {', '.join(sorted(set(e) - set(grid)))}, "
                                 "not in [grid]")
        repeat, retries, seed = head.get("repeat", 1), head.get("retries", 1), head.get("seed")
        if not isinstance(repeat, int) or repeat < 1:
            raise SweepError(f"{where}: sweep.repeat must be an integer >= 1")
        if not isinstance(retries, int) or retries < 0:
            raise SweepError(f"{where}: sweep.retries must be an integer >= 0")
        if seed is not None and not isinstance(seed, int):
            raise SweepError(f"{where}: sweep.seed must be an integer")
        res = doc.get("resources", {})
        if not isinstance(res, dict):
            raise SweepError(f"{where}: [resources] must be a table")
        spec = cls(name=str(head.get("name", "sweep")), kind=str(head["kind"]), grid=grid, fixed=fixed,
                   exclude=exclude, resources=res, repeat=repeat, seed=seed, retries=retries)
        cells.get(spec.kind)  # an unknown kind fails here, before anything is written
        return spec

    def to_dict(self) -> dict:
        return {"sweep": {"name": self.name, "kind": self.kind, "repeat": self.repeat, "seed": self.seed,
                          "retries": self.retries},
                "grid": self.grid, "fixed": self.fixed, "exclude": self.exclude, "resources": self.resources}


def _excluded(point: dict, exclude: list[dict]) -> bool:
    return any(all(point.get(k) == v for k, v in e.items()) for e in exclude)


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell of the grid, in grid order (not yet shuffled); parameters
    checked by the cell kind, so a typo fails the plan, not the 300th cell."""
    kind = cells.get(spec.kind)
    keys = list(spec.grid)
    # The folder is keyed by the kind's own layout parameters (always, so a
    # vm-bench folder says its kernel even when one kernel is swept), then by
    # the other swept ones in spec order; fixed ones are in each cell's JSON.
    layout = tuple(k for k in kind.layout) + tuple(k for k in keys if k not in kind.layout)
    out: list[Cell] = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        point = dict(zip(keys, values))
        if _excluded(point, spec.exclude):
            continue
        params = kind.validate({**spec.fixed, **point})
        for rep in range(spec.repeat):
            out.append(Cell(spec.kind, params, rep, layout))
    if not out:
        raise SweepError("the sweep has no cells: every grid point is excluded")
    return out


def order(cells_: list[Cell], seed: int) -> list[Cell]:
    shuffled = list(cells_)
    random.Random(seed).shuffle(shuffled)
    return shuffled
