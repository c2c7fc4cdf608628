"""Traces with known contents, written with the real TraceWriter, for tests
in more than one module (analysis, bench, the CLI, bad inputs, the MCP server,
the installed wheel)."""
from __future__ import annotations

import math
import random
from pathlib import Path

from aios_lab.telemetry.schema import WAIT_HIST_BUCKETS
from aios_lab.telemetry.writer import TraceWriter

S = 1_000_000_000  # ns

# A short schedule on three CPUs, every switch, wakeup and frequency known:
# the Perfetto export is checked event by event against it.
BASE = 5_000_000_000_000  # ns of CLOCK_MONOTONIC: large, as on a machine up for a while

META = {
    "kernel": {"release": "6.12.0-aios", "version": "#1 SMP PREEMPT_DYNAMIC"},
    "host": {"machine": "x86_64", "cpus": 3},
    "start": {"monotonic_ns": BASE, "wall": 1_700_000_000.25},
}

# pid -> (tgid, comm, prio)
TASKS = {
    0: (0, None, 120),          # idle: comm set per CPU below
    100: (100, "app", 120),
    101: (100, "app-worker", 120),
    200: (200, "db", 120),
    201: (200, "db-io", 100),
    300: (300, "dl-task", -1),  # SCHED_DEADLINE reports prio -1: a negative int32
}

# Per CPU: (ts offset, next pid, prev_state of the task switched out).
SCHEDULE = {
    0: [(1_000, 100, 0), (1_500, 101, 256), (2_000, 100, 1), (2_600, 0, 2), (3_100, 300, 0),
        (3_200, 0, 128)],
    1: [(1_200, 200, 0), (1_900, 201, 1), (2_400, 200, 256), (2_900, 0, 1)],
    2: [(1_100, 101, 0), (1_400, 0, 1)],
}

# (ts offset, pid, waker_cpu, target_cpu, weight)
WAKEUPS = [
    (900, 100, 0, 0, 1024 << 10),       # before CPU 0's first switch: swapper/0 runs there
    (1_450, 101, 0, 0, 1024 << 10),     # app (100) runs on CPU 0 then
    (1_800, 201, None, 1, 3121 << 10),  # no waker CPU: shown on the target's; nice -5
    (2_000, 100, 0, 0, 1024),           # same ts as a switch on CPU 0: comes before it
    (2_350, 200, 1, 1, 15),             # unscaled weight of nice 19
    (2_500, 300, None, None, 7),        # no CPU at all: skipped
]

# (interval start offset, cpu, kHz or None)
FREQS = [(0, 0, 2_000_000), (500, 0, 2_000_000), (1_000, 0, None), (1_500, 0, 3_100_000),
         (2_000, 0, 3_100_000), (2_500, 0, 2_000_000), (0, 1, None), (500, 1, 1_200_000),
         (1_000, 1, 1_200_000), (0, 2, None)]


def comm(pid: int, cpu: int) -> str:
    return f"swapper/{cpu}" if pid == 0 else TASKS[pid][1]


def switch_rows() -> list[dict]:
    rows = []
    for cpu, seq in SCHEDULE.items():
        prev = 0
        for off, nxt, state in seq:
            rows.append({
                "ts_ns": BASE + off, "cpu": cpu,
                "prev_pid": prev, "prev_tgid": TASKS[prev][0], "prev_comm": comm(prev, cpu),
                "prev_prio": TASKS[prev][2], "prev_state": state,
                "next_pid": nxt, "next_tgid": TASKS[nxt][0], "next_comm": comm(nxt, cpu),
                "next_prio": TASKS[nxt][2], "next_wait_ns": 10,
            })
            prev = nxt
    return rows


def wakeup_rows() -> list[dict]:
    return [{"ts_ns": BASE + off, "pid": pid, "tgid": TASKS[pid][0], "comm": TASKS[pid][1],
             "target_cpu": target, "prev_cpu": target, "waker_cpu": waker, "weight": weight}
            for off, pid, waker, target, weight in WAKEUPS]


def cpu_rows() -> list[dict]:
    return [{"interval_start_ns": BASE + off, "interval_end_ns": BASE + off + 500, "cpu": cpu,
             "busy_ns": 1, "idle_ns": 1, "freq_khz": khz} for off, cpu, khz in FREQS]


def schedule_trace(out: Path, *, switches: bool = True, meta: dict | None = None) -> Path:
    rnd = random.Random(7)
    with TraceWriter(out, META if meta is None else meta) as w:
        if switches:
            rows = switch_rows()
            rnd.shuffle(rows)  # the exporter sorts; it must not rely on file order
            w.append("switches", rows)
        w.append("wakeups", wakeup_rows())
        w.append("cpu_intervals", cpu_rows())
        w.append("processes", [{"ts_ns": BASE, "pid": 100, "ppid": 1, "comm": "app"},
                               {"ts_ns": BASE + 5, "pid": 200, "ppid": 1, "comm": "db"},
                               {"ts_ns": BASE + 9, "pid": 200, "ppid": 42, "comm": "db"}])
    return out


# 4 CPUs with known waits, utilisation and migrations: analyze and compare
# are checked number by number against it.
US = 1_000
# 4 CPUs: 0-1 share LLC 0 on node 0, 2-3 share LLC 1 on node 1.
TOPOLOGY = {"nr_llcs": 2, "nr_nodes": 2, "online_cpus": [0, 1, 2, 3], "llc_level": 3,
            "cpus": [{"cpu": c, "llc": c // 2, "node": c // 2, "core": c} for c in range(4)]}


def wait_hist(waits_ns: list[int]) -> list[int]:
    h = [0] * WAIT_HIST_BUCKETS
    for w in waits_ns:
        h[min(max(int(w).bit_length() - 1, 0), WAIT_HIST_BUCKETS - 1)] += 1
    return h


def metrics_trace(out: Path, *, duration_s: float = 10.0, waits_us: list[int] | None = None,
                switches: bool = True, status: str = "complete", busy: tuple = (0.25, 0.5, 0.75, 1.0),
                migrations: bool = True, freq: bool = False, sample_weight: int = 1) -> Path:
    """A 4-CPU trace of `duration_s` 1-second intervals with known contents.

    Waits: one switch per wait, next_wait_ns = the given waits (default
    1..1000 us), spread round-robin over the CPUs. Utilisation of cpu c is
    busy[c] in every interval; its mean run-queue length is c + 1.
    Migrations: 0->1 x3 (same LLC), 1->2 x2 (across NUMA nodes), 2->3 x1.
    """
    waits = [w * US for w in (waits_us if waits_us is not None else range(1, 1001))]
    end = int(duration_s * S)
    md = {"start": {"monotonic_ns": 0, "wall": 1.7e9}, "end": {"monotonic_ns": end, "wall": 1.7e9 + duration_s},
          "kernel": {"release": "6.12.0-test"}, "topology": TOPOLOGY, "interval_ms": 1000,
          "workload": {"command": ["stress", "--cpu", "4"]}, "policy": None, "ended_by": "command"}
    w = TraceWriter(out, md)
    n_int = int(math.ceil(duration_s))
    w.append("cpu_intervals", [
        {"interval_start_ns": i * S, "interval_end_ns": (i + 1) * S, "cpu": c,
         "busy_ns": int(busy[c] * S), "idle_ns": S - int(busy[c] * S), "switches": 10,
         "rq_len_samples": 10, "rq_len_mean": float(c + 1), "rq_len_max": c + 2,
         "freq_khz": (1_000_000 + 100_000 * i + c) if freq else None}
        for i in range(n_int) for c in range(4)])
    # Three tasks: pid 100 took the waits at even index, 200 the odd ones,
    # 300 waited nothing but migrated the most.
    tasks = {100: waits[0::2], 200: waits[1::2], 300: []}
    w.append("task_intervals", [
        {"interval_start_ns": 0, "interval_end_ns": end, "pid": pid, "tgid": pid, "comm": f"task{pid}",
         "oncpu_ns": S, "wait_ns": sum(ws), "wait_count": len(ws), "wait_max_ns": max(ws, default=0),
         "wait_hist": wait_hist(ws), "wakeups": len(ws), "voluntary_switches": len(ws),
         "involuntary_switches": 0, "migrations": {100: 1, 200: 2, 300: 3}[pid], "last_cpu": 0}
        for pid, ws in tasks.items()])
    if switches:
        step = end // (len(waits) + 1)
        w.append("switches", [
            {"ts_ns": (i + 1) * step, "cpu": i % 4, "prev_pid": 0, "prev_comm": "swapper",
             "prev_prio": 120, "prev_state": 0, "next_pid": 100 if i % 2 == 0 else 200,
             "next_comm": "task", "next_prio": 120, "next_wait_ns": wt, "sample_weight": sample_weight}
            for i, wt in enumerate(waits)])
    if migrations:
        rows = [(0, 1, True, True)] * 3 + [(1, 2, False, False)] * 2 + [(2, 3, True, True)]
        w.append("migrations", [
            {"ts_ns": (k + 1) * S // 2, "pid": 300, "src_cpu": s, "dst_cpu": d, "same_llc": l, "same_node": n}
            for k, (s, d, l, n) in enumerate(rows)])
    return w.close(status)


def garble_pages(f: Path) -> None:
    """Garbage in the first half of a Parquet file; its footer stays valid."""
    data = bytearray(f.read_bytes())
    for i in range(8, len(data) // 2):
        data[i] = (data[i] * 7 + 13) & 0xFF
    f.write_bytes(bytes(data))


# A workload's character from its totals (analysis.profile).

def workload_trace(out: Path, *, busy: float, vol: int, invol: int, wakeups: int, run_ns: int | None = None,
           cpus: int = 2, seconds: int = 4) -> Path:
    """``cpus`` CPUs ``busy`` of the time; two tasks of one process with the
    given switch and wakeup totals; with ``run_ns``, a switch stream where
    each CPU switches every run_ns (task 100 and 200 alternating, idle
    between every fourth)."""
    end = seconds * S
    md = {"start": {"monotonic_ns": 0, "wall": 1.7e9}, "end": {"monotonic_ns": end, "wall": 1.7e9 + seconds},
          "kernel": {"release": "6.12.0-test"}, "interval_ms": 1000}
    w = TraceWriter(out, md)
    w.append("cpu_intervals", [
        {"interval_start_ns": i * S, "interval_end_ns": (i + 1) * S, "cpu": c, "busy_ns": int(busy * S),
         "idle_ns": S - int(busy * S), "switches": 10} for i in range(seconds) for c in range(cpus)])
    w.append("task_intervals", [
        {"interval_start_ns": 0, "interval_end_ns": end, "pid": pid, "tgid": 100, "comm": f"t{pid}",
         "oncpu_ns": int(busy * end * cpus / 2), "wait_ns": 0, "wait_count": 0, "wakeups": wakeups // 2,
         "voluntary_switches": vol // 2, "involuntary_switches": invol // 2, "migrations": 0}
        for pid in (100, 200)])
    if run_ns is not None:
        rows = []
        for c in range(cpus):
            prev = 0
            for k in range(1, 200):
                nxt = 0 if k % 4 == 0 else (100 if k % 2 else 200)
                rows.append({"ts_ns": k * run_ns, "cpu": c, "prev_pid": prev, "prev_comm": "x", "prev_prio": 120,
                             "prev_state": 1, "next_pid": nxt, "next_comm": "x", "next_prio": 120,
                             "next_wait_ns": 1000, "sample_weight": 1})
                prev = nxt
        w.append("switches", rows)
    return w.close("complete")
