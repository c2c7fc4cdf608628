"""What a sweep folder holds: progress, failures, results (through duckdb), traces."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SweepError
from .layout import SweepDir


@dataclass
class Status:
    name: str
    kind: str
    total: int
    done: int
    failed: dict[str, dict]                   # hash -> failure record (not since finished)
    running: list[dict]                       # staging folders of a live driver: cell + where
    driver_running: bool
    revisions: list[str] = field(default_factory=list)   # git revisions the results came from
    last_run: dict | None = None

    @property
    def pending(self) -> int:
        return self.total - self.done - len(self.failed)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "total": self.total, "done": self.done,
                "failed": len(self.failed), "pending": self.pending, "running": self.running,
                "driver_running": self.driver_running, "revisions": self.revisions,
                "failures": [{"cell": f["cell"]["hash"], "error": f.get("error"), "attempts": f.get("attempts")}
                             for f in self.failed.values()],
                "last_run": self.last_run}


def status(sd: SweepDir) -> Status:
    plan = sd.load_plan()
    cells = sd.cells()
    by_hash = {c.hash: c for c in cells}
    done, revs = 0, set()
    for c in cells:
        res = sd.result(c)
        if res is not None:
            done += 1
            git = (res.get("provenance") or {}).get("git") or {}
            revs.add((git.get("revision") or "unknown")[:12] + ("+dirty" if git.get("dirty") else ""))
    failed = {h: f for h, f in sd.failures().items() if h in by_hash and not sd.is_done(by_hash[h])}
    live = sd.is_locked()
    running = []
    if live:  # without a live driver, staging folders are leftovers, not cells in flight
        for d in sd.staging_dirs():
            cell = by_hash.get(d.name.split("-")[0])
            try:
                where = json.loads((d / "worker.json").read_text())
            except (OSError, ValueError):
                where = {}
            if cell is not None:
                running.append({"cell": cell.label(), "hash": cell.hash, **where})
    runs = sd.runs()
    return Status(plan["spec"]["sweep"]["name"], plan["spec"]["sweep"]["kind"], len(cells), done, failed,
                  running, live, sorted(revs), runs[-1] if runs else None)


def results_frame(sd: SweepDir, memory_limit: str = "1GB"):
    """One row per finished cell: its key parameters (from the folder names,
    read by duckdb's Hive partitioning), rep, hash, host, git revision, wall
    time and its scalar metrics. A pandas DataFrame."""
    import duckdb
    import pandas as pd

    plan = sd.load_plan()
    if not plan["cells"]:
        raise SweepError("the plan has no cells")
    layout = list(plan["cells"][0]["layout"])
    if not any(sd.root.joinpath("cells").rglob("result.json")):
        raise SweepError(f"{sd.root}: no cell has finished yet", hint="run it: aios-lab sweep run DIR")
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    cols = ", ".join(f'"{k}"' for k in layout + ["rep"])
    df = con.execute(
        f"SELECT {cols}, cell.hash AS hash, provenance.host.hostname AS host, "
        "provenance.git.revision AS git_revision, wall_s, to_json(metrics) AS metrics "
        "FROM read_json_auto(?, hive_partitioning = true, union_by_name = true, maximum_object_size = 67108864) "
        f"ORDER BY {cols}", [sd.results_glob()]).df()
    metrics = [json.loads(m) for m in df.pop("metrics")]
    flat = pd.DataFrame([{k: v for k, v in m.items() if isinstance(v, (int, float, str, bool)) and k not in df}
                         for m in metrics], index=df.index)
    return pd.concat([df, flat], axis=1)


def summarise(df, by: list[str], metrics: list[str] | None = None):
    """Mean, sd and n of each numeric metric per group of `by`."""
    missing = [b for b in by if b not in df.columns]
    if missing:
        raise SweepError(f"no column {', '.join(missing)} in the results",
                         hint=f"columns: {', '.join(map(str, df.columns))}")
    num = [c for c in df.select_dtypes("number").columns if c not in by and c not in ("rep",)]
    if metrics:
        bad = [m for m in metrics if m not in num]
        if bad:
            raise SweepError(f"no numeric metric {', '.join(bad)}", hint=f"metrics: {', '.join(num)}")
        num = metrics
    g = df.groupby(by)[num].agg(["mean", "std", "count"])
    return g


def traces(sd: SweepDir, by: list[str], where: dict[str, str] | None = None) -> list[tuple[str, Path]]:
    """(label, trace folder) of every finished cell with a trace, labelled by
    its `by` parameters, keeping those matching `where` (parameter -> value)."""
    out: list[tuple[str, Path]] = []
    for cell, res in sd.results():
        params = {**cell.params, "rep": cell.rep}
        bad = [b for b in by + list(where or {}) if b not in params]
        if bad:
            raise SweepError(f"the cells have no parameter {', '.join(bad)}",
                             hint=f"parameters: {', '.join(params)}")
        if any(str(params[k]) != str(v) for k, v in (where or {}).items()):
            continue
        trace = sd.cell_dir(cell) / ((res.get("metrics") or {}).get("trace") or "trace")
        if (trace / "metadata.json").is_file():
            out.append((",".join(str(params[b]) for b in by), trace))
    return out


def describe_failures(st: Status) -> list[str]:
    return [f"{f['cell']['hash']} ({' '.join(f'{k}={v}' for k, v in _key(f['cell']).items())}): "
            f"{f.get('error')} after {f.get('attempts')} attempt(s)" for f in st.failed.values()]


def _key(cell: dict[str, Any]) -> dict[str, Any]:
    return {**{k: cell["params"][k] for k in cell["layout"]}, "rep": cell["rep"]}
