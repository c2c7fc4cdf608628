#!/usr/bin/env python3
"""Where the telemetry's BPF time goes: tel_wakeup cut down step by step.

Builds variants of bpf/telemetry.bpf.c in a scratch folder (the source is
edited there, never in the tree), loads each in turn as the collector's
object and runs the overhead benchmark's hackbench under it with
kernel.bpf_stats_enabled, interleaved over rounds; prints the kernel's
run time per tel_wakeup run (median over rounds) for:

    empty      tel_wakeup returns at once: the floor (the tracepoint's BPF
               trampoline and bpf_stats' own two clock reads)
    time       the task's pid read and bpf_ktime_get_ns() only
    stream     time + the per-CPU stream sampling, no per-task entry
    entry      time + the per-task hash entry (lookup, start time check,
               wakeups++, wait start), no stream
    storage    the whole program with the per-task entry in task-local
               storage instead of the pid-keyed hash
    full       the program as shipped

Usage (root): .venv/bin/python benchmarks/telemetry_bpf_cost.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "bpf" / "telemetry.bpf.c"

ENTRY = """	ts = task_entry(p, pid);
	if (ts) {
		ts->wakeups++;"""
STREAM = """	if (!wakeup_events)
		return 0;
	if (ignore_tgid"""
PID = """	if (!pid)
		return 0;
	ts = task_entry(p, pid);"""
STORE_MAP = """struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct aios_task_stats);
} task_store SEC(".maps");

/* epoch[0]: the interval number"""

# variant -> [(text in the source, its replacement)]
VARIANTS: dict[str, list[tuple[str, str]]] = {
    "empty": [("\treturn on_wake(p, 0);", "\treturn 0;")],
    "time": [(PID, PID.replace("if (!pid)", "if (pid)"))],
    "stream": [(ENTRY, ENTRY.replace("task_entry(p, pid)", "NULL"))],
    "entry": [(STREAM, STREAM.replace("if (!wakeup_events)", "if (1)"))],
    "storage": [("/* epoch[0]: the interval number", STORE_MAP),
                (ENTRY, ENTRY.replace("task_entry(p, pid)",
                                      "bpf_task_storage_get(&task_store, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE)"))],
    "full": [],
}


def build_variants(tmp: Path) -> dict[str, Path]:
    from aios_lab import build

    text = SRC.read_text()
    out = {}
    for name, edits in VARIANTS.items():
        src = text
        for old, new in edits:
            if old not in src:
                raise SystemExit(f"variant {name}: the source no longer has {old.strip()[:40]!r}; update this script")
            src = src.replace(old, new, 1)
        path = SRC.parent / f".cost-{name}.bpf.c"   # beside the original: its includes resolve
        try:
            path.write_text(src)
            build.compile_bpf(path, tmp / f"{name}.bpf.o")
        finally:
            path.unlink(missing_ok=True)
            path.with_suffix(".d").unlink(missing_ok=True)
        out[name] = tmp / f"{name}.bpf.o"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from aios_lab.bpf.object import BpfStats
    from aios_lab.telemetry.bpf_collector import BpfCollector, object_path

    tmp = Path(tempfile.mkdtemp(prefix="aios-bpfcost-"))
    shipped = tmp / "shipped.bpf.o"
    shutil.copy(object_path(), shipped)
    objs = build_variants(tmp)
    per_run: dict[str, list[float]] = {k: [] for k in objs}
    try:
        with BpfStats():
            for r in range(args.rounds):
                for name, obj in objs.items():
                    shutil.copy(obj, object_path())
                    with BpfCollector(wakeup_events=True, switch_events=True, stream_budget=2000) as col:
                        col.start()
                        hb = subprocess.Popen(["hackbench", "-p", "-g", "8", "-f", "20", "-l", "2000"],
                                              stdout=subprocess.DEVNULL)
                        while hb.poll() is None:
                            col.poll(100)
                        st = col._live().program("tel_wakeup").run_stats()
                        per_run[name].append(st["run_time_ns"] / max(1, st["run_cnt"]))
                print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.0f}" for k, v in per_run.items()), flush=True)
    finally:
        shutil.copy(shipped, object_path())
        shutil.rmtree(tmp, ignore_errors=True)
    floor = statistics.median(per_run["empty"])
    print("\ntel_wakeup, ns per run (median over rounds; hackbench -p -g 8 -f 20 -l 2000):")
    for k, v in per_run.items():
        m = statistics.median(v)
        print(f"  {k:8} {m:6.0f}  above the empty program: {m - floor:5.0f}  {[round(x) for x in v]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
