/* Layouts shared by freq.bpf.c and Python. User space never redeclares
 * them: aios_lab.sched.kinds.freq_table.slots builds its ctypes types and reads the
 * limits from the object's BTF, and tests/sched/kinds/freq_table/test_layout.py checks that
 * this header, the BTF and aios_lab.dvfs.table agree. */
#ifndef FREQ_INTF_H
#define FREQ_INTF_H

/* BPF gets struct bpf_spin_lock from vmlinux.h; a C compiler reading this
 * header elsewhere (the layout test) gets the same 4 bytes. */
#ifndef __VMLINUX_H__
struct bpf_spin_lock {
	u32 val;
};
#endif

/* Limits, as an enum so that they are in BTF. The table layout must match
 * aios_lab.dvfs.table (UTIL_BUCKETS, RQ_BUCKETS, PERF_MAX). */
enum freq_limit {
	FREQ_UTIL_BUCKETS = 16,		/* utilisation buckets: bucket = min(util >> FREQ_UTIL_SHIFT, 15) */
	FREQ_UTIL_SHIFT = 6,		/* 1024 / 16 = 64 = 1 << 6 */
	FREQ_RQ_BUCKETS = 4,		/* queue-length buckets: 0, 1, 2, 3 or more tasks waiting */
	FREQ_PERF_MAX = 1024,		/* SCX_CPUPERF_ONE: the highest perf level (and utilisation) */
	FREQ_MAX_CPUS = 256,		/* per-CPU DSQ ids are 0..FREQ_MAX_CPUS-1; more CPUs refuse to load */
	FREQ_TABLE_MAGIC = 0x51455246,	/* "FREQ" little-endian: the slot holds a table */
	FREQ_NO_CPU = 0xffffffff,	/* freq_task.queued_cpu of a task waiting in no queue */
	FREQ_COMM_LEN = 16,		/* TASK_COMM_LEN: a program's name, the key of `prog_est` */
	FREQ_MAX_PROGRAMS = 1024,	/* programs `prog_est` keeps a prior for; more are not learned */
};

/* One table slot. There are two (the `table` array map): user space writes
 * the inactive one, reads it back and then flips freq_ctl.active, so a
 * lookup never sees a half-written table. */
struct freq_table {
	u32 magic;		/* FREQ_TABLE_MAGIC when the slot holds a table */
	u32 util_buckets;	/* must equal FREQ_UTIL_BUCKETS */
	u32 rq_buckets;		/* must equal FREQ_RQ_BUCKETS */
	u32 _pad;
	u64 version;		/* the table's version (FreqTable.version), echoed per CPU */
	u32 perf[FREQ_UTIL_BUCKETS][FREQ_RQ_BUCKETS];	/* perf level 1..FREQ_PERF_MAX */
};

struct freq_ctl {
	u32 active;		/* slot lookups read: 0 or 1 */
	u32 _pad;
	u64 version;		/* version of the table in the active slot, 0 = none yet */
	u64 swaps;		/* number of flips so far */
};

/* What the policy last observed and asked for on one CPU (the `cpu_state`
 * array map, key = CPU). Written by that CPU's tick, running and stopping
 * (under its runqueue lock) and by the idle-decay timer (from any CPU), so
 * every write holds `lock`; user space reads without it and uses `seq` to
 * tell a consistent copy from one taken mid-update. */
struct freq_cpu {
	struct bpf_spin_lock lock;	/* held by every BPF write of this entry */
	u32 _pad0;
	u64 seq;		/* odd while a perf update is being written */
	u64 window_start_ns;	/* start of the current utilisation window */
	u64 run_start_ns;	/* start of the running segment not yet counted in busy_ns */
	u64 busy_ns;		/* busy time in the current window, scaled by perf_cur / 1024 */
	u64 util_fp;		/* utilisation EWMA << 10 (fixed point, so it can reach 1024) */
	u64 last_set_ns;	/* when perf was last decided (rate limit of `running`) */
	u64 table_version;	/* version of the table used by the last decision, 0 = no table */
	u64 updates;		/* perf decisions taken on this CPU */
	u32 util;		/* utilisation 0..1024 the last decision was indexed by: util_win,
				 * or util_est when larger and the CPU has work */
	u32 util_bucket;	/* min(util >> 6, 15) */
	u32 nr_queued;		/* tasks waiting for this CPU: its DSQ plus its local DSQ */
	u32 rq_bucket;		/* min(nr_queued, 3) */
	u32 perf;		/* table[util_bucket][rq_bucket], 0 = no table */
	u32 request;		/* value passed to scx_bpf_cpuperf_set(), 0 = none (no table) */
	u32 perf_cur;		/* scx_bpf_cpuperf_cur(cpu) at the decision */
	u32 perf_cap;		/* scx_bpf_cpuperf_cap(cpu) at the decision */
	u32 running;		/* a task of ours is on the CPU (busy time is accruing) */
	u32 util_win;		/* the windowed EWMA (util_fp rounded) at the last decision */
	u32 util_est;		/* EWMA of the utilisation each time the CPU ran out of work */
	u32 _pad;
	u64 queued_est_ns;	/* the estimated next activations of the tasks waiting in its
				 * queue, less what each has run of it (freq_task.queued_est_ns);
				 * any CPU adds to it atomically, outside `lock` */
};

/* Per task (the `task_est` task-local storage map): created when the task
 * enters sched_ext under this policy (ops.init_task), deleted when it leaves
 * (ops.exit_task), so there is one entry per task the policy schedules.
 * An activation is the task's run time from a wakeup until it sleeps again
 * (stopping while not runnable); preemptions inside it do not end it.
 * Only the task's own CPU writes it (running, stopping, enqueue of the task
 * itself), so it has no lock; user space reads it by pidfd. */
struct freq_task {
	u64 run_start_ns;	/* its sum_exec_runtime when it last started running */
	u64 act_ns;		/* run time of the current activation so far */
	u64 est_ns;		/* the next activation's estimate: util_est of the lengths (up at
				 * once, down by 1/4 of the gap), as dvfs.task_signal's util_est rule */
	u64 last_ns;		/* the last complete activation's length */
	u64 activations;	/* complete activations */
	u64 queued_est_ns;	/* what it added to queued_cpu's queued_est_ns */
	u32 queued_cpu;		/* the CPU whose queue it waits in, FREQ_NO_CPU if none */
	u32 _pad;
	u64 prior_ns;		/* the estimate it started with: its program's prior, 0 if none */
	char prog[FREQ_COMM_LEN];	/* its program (comm) when it entered sched_ext: for a forked
					 * task its parent's, as dvfs.activation names tasks */
};

/* A program's prior (the `prog_est` hash map, key = the comm, NUL-padded):
 * the util_est rule over the first activations of the tasks that started as
 * that program, what a new task of it is estimated as before it has run
 * (dvfs.task_signal's `program` prior). Any CPU updates it without a lock:
 * two first activations ending at once may lose one of the two updates. */
struct freq_prior {
	u64 est_ns;		/* the rule over the first activations so far */
	u64 tasks;		/* first activations folded in */
};

/* Index of each per-CPU counter in the `stats` map. Python reads the names
 * from this enum in BTF; descriptions live in manifest.toml. */
enum freq_stat {
	FREQ_STAT_DIRECT = 0,		/* woken task placed straight on an idle CPU's local DSQ */
	FREQ_STAT_QUEUED,		/* task queued on its CPU's DSQ */
	FREQ_STAT_LOCAL,		/* a CPU ran a task from its own DSQ */
	FREQ_STAT_STOLEN,		/* a CPU with an empty DSQ took a task from another CPU's */
	FREQ_STAT_TICK_SET,		/* perf set from ops.tick */
	FREQ_STAT_RUNNING_SET,		/* perf set from ops.running */
	FREQ_STAT_RATE_LIMITED,		/* ops.running skipped: perf was decided less than running_min_ns ago */
	FREQ_STAT_NO_TABLE,		/* no valid table in the active slot: perf left as it was */
	FREQ_STAT_CLAMPED,		/* a table value outside 1..1024 was clamped (never, if user space checked) */
	FREQ_STAT_IDLE_DECAY,		/* perf set by the timer for an idle CPU whose utilisation decayed */
	FREQ_STAT_TASK_INIT,		/* per-task state created (a task entered sched_ext) */
	FREQ_STAT_TASK_EXIT,		/* per-task state deleted (a task left); live = TASK_INIT - TASK_EXIT */
	FREQ_STAT_NO_TASK_STATE,	/* a task of ours had no per-task state (never, unless init_task failed) */
	FREQ_STAT_PRIOR_USED,		/* a new task started with its program's prior as its estimate */
	FREQ_STAT_PRIOR_FULL,		/* a program's first prior was not kept: prog_est is full */
	FREQ_NR_STATS,
};

#endif
