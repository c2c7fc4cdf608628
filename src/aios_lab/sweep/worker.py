"""Run one cell into a folder: the same code on every executor and node.

The folder ends with result.json (metrics, provenance, timing) when the
cell succeeded, or error.json (the exception and its traceback) when it
failed; worker.json, written first, says where it runs (host, pid), which
`sweep status` shows for cells in flight.
"""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path

from ..atomic import write_json_atomic
from . import cells, provenance
from .spec import Cell


def execute(cell: Cell, out: Path, attempt: int = 1) -> bool:
    """Run `cell` with `out` as its folder; True when it succeeded. Never raises
    for the cell's own failure: that is written to error.json."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    where = {"hostname": socket.gethostname(), "pid": os.getpid(), "attempt": attempt, "started": started}
    write_json_atomic(out / "worker.json", where)
    write_json_atomic(out / "cell.json", cell.to_dict())
    t0 = time.monotonic()
    try:
        kind = cells.get(cell.kind)()
        metrics = kind.run(cell.params, cell.rep, out)
        prov = {**provenance.record(), **kind.provenance(cell.params, out)}
        # The key parameters are not repeated at the top: the folder names carry
        # them (duckdb's hive_partitioning), and the cell's JSON has them all.
        result = {"cell": cell.to_dict(), "status": "ok", "attempt": attempt, "started": started,
                  "finished": time.time(), "wall_s": round(time.monotonic() - t0, 4), "metrics": metrics,
                  "provenance": prov}
        json.dumps(result)  # a metric JSON cannot hold fails here, as the cell's failure
    except Exception as exc:  # the cell's failure is data: the driver decides on retries
        write_json_atomic(out / "error.json", {
            "type": type(exc).__name__, "message": exc.one_line() if hasattr(exc, "one_line") else str(exc),
            "traceback": traceback.format_exc(limit=20), "attempt": attempt, "hostname": where["hostname"],
            "wall_s": round(time.monotonic() - t0, 3)})
        return False
    write_json_atomic(out / "result.json", result)
    return True
