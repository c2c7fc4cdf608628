"""The trace format, version 2: one directory, Parquet tables + metadata.json.

This module is the single source of the column names and types; the writer
enforces them and docs/trace-format.md documents them. Times are nanoseconds
of CLOCK_MONOTONIC (bpf_ktime_get_ns) unless a column says otherwise;
metadata.json maps them to wall-clock time.

Bump SCHEMA_VERSION on any incompatible change (a removed or retyped column,
or rows that change meaning); adding a nullable column is compatible.
Version 2 (issue 20): the switch and wakeup streams may be sampled; each row
carries sample_weight, the events it stands for, and cpu_intervals says per
CPU and interval what the streams kept. A version-1 trace reads as version 2
with every sample_weight null (= 1: nothing was sampled but by
--wakeup-sample, which version 1 did not record per row).
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2
METADATA_FILE = "metadata.json"

# Log2 buckets of run-queue wait: bucket i counts waits in [2^i, 2^(i+1)) ns,
# bucket 0 also holds 0 ns; the last bucket holds everything above.
WAIT_HIST_BUCKETS = 32

TASK_INTERVALS = pa.schema([
    pa.field("interval_start_ns", pa.int64(), nullable=False),
    pa.field("interval_end_ns", pa.int64(), nullable=False),
    pa.field("pid", pa.int32(), nullable=False),
    pa.field("tgid", pa.int32(), nullable=False),
    pa.field("comm", pa.string()),
    pa.field("cgroup_id", pa.uint64()),
    pa.field("oncpu_ns", pa.int64()),           # time on a CPU during the interval
    pa.field("wait_ns", pa.int64()),            # total run-queue wait (wakeup/preempt -> on CPU)
    pa.field("wait_count", pa.int64()),         # number of waits that ended in the interval
    pa.field("wait_p50_ns", pa.int64()),        # from the log2 histogram (bucket upper bound)
    pa.field("wait_p99_ns", pa.int64()),
    pa.field("wait_max_ns", pa.int64()),
    pa.field("wait_hist", pa.list_(pa.uint32())),  # WAIT_HIST_BUCKETS log2 buckets
    pa.field("wakeups", pa.int64()),
    pa.field("voluntary_switches", pa.int64()),   # switched out while not runnable (slept/blocked)
    pa.field("involuntary_switches", pa.int64()), # switched out while still runnable (preempted)
    pa.field("migrations", pa.int64()),
    pa.field("last_cpu", pa.int32()),
    pa.field("weight", pa.int32()),             # se.load.weight as the kernel has it (64-bit: nice 0 = 1024 << 10)
    pa.field("nice", pa.int32()),
], metadata={"aios.table": "task_intervals", "aios.schema_version": str(SCHEMA_VERSION)})

CPU_INTERVALS = pa.schema([
    pa.field("interval_start_ns", pa.int64(), nullable=False),
    pa.field("interval_end_ns", pa.int64(), nullable=False),
    pa.field("cpu", pa.int32(), nullable=False),
    pa.field("busy_ns", pa.int64()),            # non-idle time on the CPU
    pa.field("idle_ns", pa.int64()),            # time running the idle task
    pa.field("switches", pa.int64()),
    pa.field("migrations_in", pa.int64()),
    pa.field("migrations_out", pa.int64()),
    pa.field("rq_len_samples", pa.int64()),     # nr_running sampled at each context switch
    pa.field("rq_len_mean", pa.float64()),
    pa.field("rq_len_max", pa.int32()),
    pa.field("freq_khz", pa.int64()),           # null where the kernel exposes no frequency
    # What the sampled streams kept on this CPU (null: stream off, or version 1):
    pa.field("switch_records", pa.int64()),     # switches rows; / switches = the stream's rate
    pa.field("wakeup_events", pa.int64()),      # wakeups fired on this CPU (the waker's)
    pa.field("wakeup_records", pa.int64()),     # wakeups rows written for them
], metadata={"aios.table": "cpu_intervals", "aios.schema_version": str(SCHEMA_VERSION)})

MIGRATIONS = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),
    pa.field("pid", pa.int32(), nullable=False),
    pa.field("tgid", pa.int32()),
    pa.field("comm", pa.string()),
    pa.field("src_cpu", pa.int32()),
    pa.field("dst_cpu", pa.int32()),
    pa.field("src_nr_running", pa.int32()),
    pa.field("dst_nr_running", pa.int32()),
    pa.field("src_load", pa.int64()),           # rq->cfs.avg.load_avg of the source CPU
    pa.field("dst_load", pa.int64()),
    pa.field("same_llc", pa.bool_()),           # from sysfs topology, at write time
    pa.field("same_node", pa.bool_()),
    pa.field("runtime_ns", pa.int64()),         # task's on-CPU time in its last run (cache footprint proxy)
    pa.field("since_last_ran_ns", pa.int64()),  # ts - last time the task left a CPU (cache hotness)
    pa.field("weight", pa.int32()),
    pa.field("nr_migrations", pa.int64()),      # task's migrations so far (se.nr_migrations)
], metadata={"aios.table": "migrations", "aios.schema_version": str(SCHEMA_VERSION)})

WAKEUPS = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),
    pa.field("pid", pa.int32(), nullable=False),
    pa.field("tgid", pa.int32()),
    pa.field("comm", pa.string()),
    pa.field("target_cpu", pa.int32()),         # CPU the task was woken onto
    pa.field("prev_cpu", pa.int32()),           # CPU it last ran on
    pa.field("waker_cpu", pa.int32()),
    pa.field("target_nr_running", pa.int32()),
    pa.field("since_last_ran_ns", pa.int64()),
    pa.field("weight", pa.int32()),
    pa.field("sample_weight", pa.int32()),      # wakeups this row stands for; null = 1 (version 1)
], metadata={"aios.table": "wakeups", "aios.schema_version": str(SCHEMA_VERSION)})

# One row per context switch (sched_switch), the raw event stream that
# per-CPU timelines (Perfetto's CPU tracks) and exact wait percentiles need.
# Added after version 1 was first written: a trace without the file reads as
# an empty table (see OPTIONAL_TABLES), so older traces stay valid.
SWITCHES = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),
    pa.field("cpu", pa.int32(), nullable=False),
    pa.field("prev_pid", pa.int32(), nullable=False),
    pa.field("prev_tgid", pa.int32()),
    pa.field("prev_comm", pa.string()),
    pa.field("prev_prio", pa.int32()),          # kernel prio (p->prio): 120 = nice 0 CFS/EXT
    pa.field("prev_state", pa.int64()),         # ftrace encoding: 0 R, 1 S, 2 D, ..., 256 R+ (preempted)
    pa.field("next_pid", pa.int32(), nullable=False),
    pa.field("next_tgid", pa.int32()),
    pa.field("next_comm", pa.string()),
    pa.field("next_prio", pa.int32()),
    pa.field("next_wait_ns", pa.int64()),       # run-queue wait this switch ended; null if not seen begin
    pa.field("sample_weight", pa.int32()),      # switches this row stands for; null = 1 (version 1)
], metadata={"aios.table": "switches", "aios.schema_version": str(SCHEMA_VERSION)})

# The attached sched_ext policy's own per-CPU counters (its stats map), in
# long form because every policy has its own set; empty when none is attached.
POLICY_STATS = pa.schema([
    pa.field("interval_start_ns", pa.int64(), nullable=False),
    pa.field("interval_end_ns", pa.int64(), nullable=False),
    pa.field("cpu", pa.int32(), nullable=False),
    pa.field("policy", pa.string(), nullable=False),
    pa.field("stat", pa.string(), nullable=False),
    pa.field("value", pa.int64()),              # increase during the interval
], metadata={"aios.table": "policy_stats", "aios.schema_version": str(SCHEMA_VERSION)})

# Sampled from /proc with psutil: needs no root and no BPF.
PROCESSES = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),
    pa.field("pid", pa.int32(), nullable=False),
    pa.field("ppid", pa.int32()),
    pa.field("comm", pa.string()),
    pa.field("cpu_user_s", pa.float64()),
    pa.field("cpu_system_s", pa.float64()),
    pa.field("rss_bytes", pa.int64()),
    pa.field("num_threads", pa.int32()),
    pa.field("ctx_voluntary", pa.int64()),
    pa.field("ctx_involuntary", pa.int64()),
    pa.field("last_cpu", pa.int32()),
], metadata={"aios.table": "processes", "aios.schema_version": str(SCHEMA_VERSION)})

# Migration decisions logged by a learning load balancer (policies/mllb) with
# their features and outcome; what `aios-lab train lb` learns from. The
# feature columns are f_<name> for each member of the policy's
# enum mllb_feature (MLLB_F_<NAME>, lower-cased), in enum order.
LB_FEATURES = [
    "src_nr_queued", "dst_nr_queued", "src_load", "dst_load", "load_diff", "nr_diff",
    "src_idle", "dst_idle", "same_llc", "same_node", "task_runtime_us", "task_since_ran_us",
    "task_weight", "task_wait_us", "task_recent_migrations", "src_wait_est_us",
    "dst_wait_est_us", "wait_gain_us", "dst_idle_est_us", "site",
]
LB_DECISIONS = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),   # when the decision was taken
    pa.field("pid", pa.int32(), nullable=False),
    pa.field("src_cpu", pa.int32()),
    pa.field("dst_cpu", pa.int32()),
    pa.field("ran_cpu", pa.int32()),                 # CPU the task next ran on
    pa.field("site", pa.string()),                   # "wakeup" or "pull"
    pa.field("migrate", pa.bool_()),                 # the decision
    pa.field("by_model", pa.bool_()),                # model (true) or heuristic (false)
    pa.field("wait_after_ns", pa.int64()),           # decision -> task next on a CPU
    pa.field("run_after_ns", pa.int64()),            # length of that run
    *[pa.field(f"f_{n}", pa.int64()) for n in LB_FEATURES],
], metadata={"aios.table": "lb_decisions", "aios.schema_version": str(SCHEMA_VERSION)})

TABLES: dict[str, pa.Schema] = {
    "task_intervals": TASK_INTERVALS,
    "cpu_intervals": CPU_INTERVALS,
    "migrations": MIGRATIONS,
    "wakeups": WAKEUPS,
    "policy_stats": POLICY_STATS,
    "processes": PROCESSES,
    "lb_decisions": LB_DECISIONS,
    "switches": SWITCHES,
}

# Tables added to version 1 after it was first written. A trace that lacks
# one of these files is still a version-1 trace: the table reads as empty.
OPTIONAL_TABLES = frozenset({"switches"})


def table_file(name: str) -> str:
    return f"{name}.parquet"
