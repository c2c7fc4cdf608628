/* Scheduler telemetry records shared by bpf/telemetry.bpf.c and Python.
 *
 * Python never re-declares these: aios_lab.telemetry.bpf_collector builds
 * ctypes types from the object's BTF, and tests/telemetry/test_bpf_collector.py checks
 * that mirror against the host C compiler reading this header. Only whole
 * integers (no bitfields, no bool) so every compiler agrees on the layout.
 */
#ifndef AIOS_TELEMETRY_H
#define AIOS_TELEMETRY_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define AIOS_WAIT_HIST_BUCKETS 32	/* = schema.WAIT_HIST_BUCKETS */
#define AIOS_COMM_LEN 16
#define AIOS_MAX_TASKS 16384		/* default task map size; user space may resize */
#define AIOS_MAX_CPUS 1024		/* default cpu map size; user space sets nr_cpus */

/* Indexes of the `drops` map: every record or update the BPF side could not
 * make is counted here, so user space can report loss instead of hiding it. */
enum aios_telemetry_drop {
	AIOS_DROP_MIGRATION_RING = 0,	/* bpf_ringbuf_reserve failed on migration_ring */
	AIOS_DROP_WAKEUP_RING,		/* bpf_ringbuf_reserve failed on wakeup_ring */
	AIOS_DROP_TASK_MAP_FULL,	/* an event found no task_stats slot (map full) */
	AIOS_DROP_UNPAIRED_SWITCH,	/* a CPU's previous task left without a sched_switch
					 * naming it as prev: its run is not credited */
	AIOS_DROP_SWITCH_RING,		/* bpf_ringbuf_reserve failed on switch_ring */
	AIOS_NR_DROPS,
};

/* aios_task_stats.flags */
enum aios_task_flag {
	AIOS_TASK_EXITING = 1,		/* sched_process_exit seen: no new work */
	AIOS_TASK_EXITED = 2,		/* sched_process_free seen: counters are final */
	AIOS_TASK_ASLEEP = 4,		/* left its CPU to sleep (or is new): its next
					 * switch-in ends a sleep, counted as a wakeup */
};

/* Cumulative per-task counters (task_stats map, keyed by pid = thread id).
 * User space turns them into per-interval deltas. */
struct aios_task_stats {
	__u32 pid;
	__u32 tgid;
	__u64 start_ns;			/* p->start_time: tells a reused pid apart */
	__u64 cgroup_id;		/* cgroup v2 (default hierarchy) kernfs id */
	char comm[AIOS_COMM_LEN];
	__u64 oncpu_ns;			/* completed runs only; see oncpu_since_ns */
	__u64 oncpu_since_ns;		/* switch-in time while on a CPU, 0 when off */
	__u64 last_switch_out_ns;
	__u64 last_run_ns;		/* length of the last completed on-CPU run */
	__u64 wait_since_ns;		/* start of the current run-queue wait, 0 if none
					 * (kernels without sched_info only) */
	__u64 wait_since_clock;		/* the raw rq clock it was stamped from (same) */
	__u64 run_delay_ns;		/* the kernel's sched_info.run_delay as of our
					 * last look, the wait it was then owed included */
	__u64 wait_ns;
	__u64 wait_count;
	__u64 wait_max_ns[2];		/* per interval epoch, slot = epoch & 1 */
	__u32 wait_max_epoch[2];
	__u32 wait_hist[AIOS_WAIT_HIST_BUCKETS];	/* log2 buckets, see schema.py */
	__u64 wakeups;			/* sleeps ended (switch-ins after a voluntary
					 * switch-out) + first runs of new tasks */
	__u64 voluntary_switches;
	__u64 involuntary_switches;
	__u64 migrations;
	__u64 weight;			/* p->se.load.weight as the kernel keeps it */
	__s32 last_cpu;			/* -1 until seen on a CPU */
	__s32 nice;			/* p->static_prio - 120 */
	__u32 flags;			/* enum aios_task_flag */
	__u32 ident_epoch;		/* 1 + the epoch comm/cgroup_id were last read in */
};

/* Event streams sampled by windows (see bpf/telemetry.bpf.c): index of
 * aios_cpu_stats.stream. */
enum aios_stream_kind {
	AIOS_STREAM_SWITCHES = 0,
	AIOS_STREAM_WAKEUPS,
	AIOS_NR_STREAMS,
};

#define AIOS_WINDOW_SHIFT 24		/* sampling windows of 2^24 ns (16.8 ms) */

/* One CPU's state of one sampled stream. Written only by that CPU. */
struct aios_stream {
	__u64 seen;			/* events of the stream on this CPU (cumulative) */
	__u64 recorded;			/* records reserved for them (cumulative) */
	__u64 window;			/* current window: ts >> AIOS_WINDOW_SHIFT */
	__u32 count;			/* events in the current window so far */
	__u32 shift;			/* this window is recorded with probability 2^-shift */
	__u32 on;			/* whether this window is recorded */
	__u32 _pad;
};

/* Cumulative per-CPU counters (cpu_stats array, indexed by CPU). */
struct aios_cpu_stats {
	__u64 busy_ns;			/* completed stretches only; see last_switch_ns */
	__u64 idle_ns;
	__u64 last_switch_ns;		/* 0 until the first switch seen on this CPU */
	__u32 curr_pid;			/* pid switched in last; 0 = the idle task */
	__u32 _pad;
	__u64 rq_addr;			/* this CPU's struct rq, learnt at its switches */
	__u64 switches;
	__u64 rq_len_samples;		/* rq->nr_running sampled at every switch */
	__u64 rq_len_sum;
	__u32 rq_len_max[2];		/* per interval epoch, slot = epoch & 1 */
	__u32 rq_max_epoch[2];
	struct aios_stream stream[AIOS_NR_STREAMS];
	__u64 clock_off;		/* ktime - rq->clock, read at clock_window's first switch */
	__u64 clock_window;		/* ktime >> AIOS_WINDOW_SHIFT then; 0 = not yet read */
	/* Atomics written from other CPUs too (the CPU that migrates a task is
	 * often neither end): a cache line of their own, so that they do not
	 * pull this CPU's hot fields away from it (the struct is a multiple of
	 * 64 bytes, so neighbouring CPUs' entries do not share lines either). */
	__u64 migrations_in __attribute__((aligned(64)));
	__u64 migrations_out;
} __attribute__((aligned(64)));

/* One record of the migration_ring ring buffer. */
struct aios_migration_event {
	__u64 ts_ns;
	__u32 pid;
	__u32 tgid;
	char comm[AIOS_COMM_LEN];
	__s32 src_cpu;			/* task_cpu(p) at the tracepoint */
	__s32 dst_cpu;
	__s32 src_nr_running;		/* rq->nr_running; -1 unknown */
	__s32 dst_nr_running;
	__s64 src_load;			/* rq->cfs.avg.load_avg; -1 unknown */
	__s64 dst_load;
	__s64 runtime_ns;		/* last completed on-CPU run; -1 unknown */
	__s64 since_last_ran_ns;	/* ts - last switch-out; -1 unknown */
	__u64 weight;
	__u64 nr_migrations;		/* p->se.nr_migrations (before this one) */
};

/* One record of the wakeup_ring ring buffer. */
struct aios_wakeup_event {
	__u64 ts_ns;
	__u32 pid;
	__u32 tgid;
	char comm[AIOS_COMM_LEN];
	__s32 target_cpu;		/* task_cpu(p): where it was enqueued */
	__s32 prev_cpu;			/* CPU it last ran on; -1 unknown / new task */
	__s32 waker_cpu;
	__s32 target_nr_running;	/* -1 unknown */
	__s64 since_last_ran_ns;	/* -1 unknown */
	__u64 weight;
	__u32 is_new;			/* 1 for sched_wakeup_new (fork) */
	__u32 sample_weight;		/* wakeups this record stands for (1 = not sampled) */
};

/* One record of the switch_ring ring buffer: a sched_switch as ftrace
 * reports it, plus the run-queue wait the switch ended. */
struct aios_switch_event {
	__u64 ts_ns;
	__u32 cpu;
	__u32 prev_pid;
	__u32 prev_tgid;
	__u32 next_pid;
	__u32 next_tgid;
	__s32 prev_prio;		/* p->prio: 120 = nice 0 (fair and ext) */
	__s32 next_prio;
	__u32 sample_weight;		/* switches this record stands for (1 = not sampled) */
	__s64 prev_state;		/* ftrace's encoding, see schema.SWITCHES */
	__s64 next_wait_ns;		/* -1: the wait's start was not seen */
	char prev_comm[AIOS_COMM_LEN];
	char next_comm[AIOS_COMM_LEN];
};

#endif /* AIOS_TELEMETRY_H */
