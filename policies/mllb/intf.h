/* Layouts shared by mllb.bpf.c and Python (mirrored from the object's BTF:
 * src/aios_lab/mllb reads every struct and enum below from BTF, and
 * tests/mllb/test_slots.py checks the two agree). */
#ifndef MLLB_INTF_H
#define MLLB_INTF_H

/* Limits, as an enum so that they are in BTF and user space reads them from
 * the object instead of repeating them. */
enum mllb_limit {
	MLLB_MAX_CPUS = 64,		/* per-CPU DSQ ids are 0..MLLB_MAX_CPUS-1; more CPUs refuse to load */
	MLLB_MAX_NODES = 511,		/* decision-tree nodes per model slot */
	MLLB_MAX_DEPTH = 16,		/* tree depth bound: the BPF loop runs at most this + 1 times */
	MLLB_MODEL_MAGIC = 0x424c4c4d,	/* "MLLB" little-endian: the slot holds a model */
	MLLB_FEATURE_MAX = 1000000000,	/* features are clamped to [0, this] (diffs to [-this, this]) */
};

/* The features of one migration decision, computed in BPF as integers (the
 * model compares them with integer thresholds, so no floating point is ever
 * needed in the kernel). "src" is the CPU the task would leave (its previous
 * CPU at wakeup, the busy CPU whose queue is pulled from at dispatch), "dst"
 * the CPU it would move to. docs/mllb.md explains each. */
enum mllb_feature {
	MLLB_F_SRC_NR_QUEUED = 0,	/* tasks waiting in src's DSQ */
	MLLB_F_DST_NR_QUEUED,		/* tasks waiting in dst's DSQ */
	MLLB_F_SRC_LOAD,		/* src busy fraction over its last window, 0..1024 */
	MLLB_F_DST_LOAD,		/* dst busy fraction, 0..1024 */
	MLLB_F_LOAD_DIFF,		/* src load - dst load, -1024..1024 */
	MLLB_F_NR_DIFF,			/* src queued - dst queued */
	MLLB_F_SRC_IDLE,		/* src is idle (in sched_ext's idle mask): 0/1 */
	MLLB_F_DST_IDLE,		/* dst is idle: 0/1 */
	MLLB_F_SAME_LLC,		/* src and dst share a last-level cache: 0/1 */
	MLLB_F_SAME_NODE,		/* src and dst are on the same NUMA node: 0/1 */
	MLLB_F_TASK_RUNTIME_US,		/* task's average run length per slice (EWMA), us */
	MLLB_F_TASK_SINCE_RAN_US,	/* time since the task last left a CPU (cache hotness), us */
	MLLB_F_TASK_WEIGHT,		/* sched_ext weight, 100 = nice 0 */
	MLLB_F_TASK_WAIT_US,		/* time the task has been runnable without running, us */
	MLLB_F_TASK_RECENT_MIGRATIONS,	/* the task's migrations, halved every 100 ms */
	MLLB_F_SRC_WAIT_EST_US,		/* expected wait before the task would run on src if it stays, us */
	MLLB_F_DST_WAIT_EST_US,		/* expected wait before it would run on dst if it moves (idle dst: its wake-up latency), us */
	MLLB_F_WAIT_GAIN_US,		/* src_wait_est - dst_wait_est: what moving saves, us */
	MLLB_F_DST_IDLE_EST_US,		/* how long dst is expected to stay idle (0 if busy), us */
	MLLB_F_SITE,			/* where the decision is taken: 0 wakeup, 1 idle pull */
	MLLB_NR_FEATURES,
};

enum mllb_site {
	MLLB_SITE_WAKEUP = 0,
	MLLB_SITE_PULL = 1,
};

enum mllb_mode {
	MLLB_MODE_COLLECT = 0,	/* the documented heuristic decides */
	MLLB_MODE_MODEL = 1,	/* the model in the active slot decides */
};

/* One decision, logged when its outcome is known: the task's first run
 * after the decision (wait until it ran, how long it then ran). */
struct mllb_decision {
	u64 ts_ns;		/* when the decision was taken (bpf_ktime_get_ns) */
	u64 wait_after_ns;	/* decision -> the task next started running */
	u64 run_after_ns;	/* length of that run */
	u32 pid;
	s32 src_cpu;
	s32 dst_cpu;
	s32 ran_cpu;		/* CPU it actually ran on */
	u8 site;		/* enum mllb_site */
	u8 migrate;		/* the decision: 1 migrate/pull, 0 stay */
	u8 by_model;		/* 1 when the model decided, 0 the heuristic */
	u8 _pad[5];
	s64 features[MLLB_NR_FEATURES];
};

/* A decision tree node. A leaf has feature < 0 and answers `leaf` (1 means
 * migrate). An inner node goes left when features[feature] <= threshold. */
struct mllb_node {
	s64 threshold;
	s32 feature;
	u32 left;
	u32 right;
	u32 leaf;
};

/* One model slot. There are two (the `model` array map): user space writes
 * the inactive one and then flips model_ctl.active, so a decision never sees
 * a half-written model. */
struct mllb_model {
	u32 magic;		/* MLLB_MODEL_MAGIC when the slot holds a model */
	u32 nr_features;	/* must equal MLLB_NR_FEATURES */
	u32 nr_nodes;		/* 1..MLLB_MAX_NODES */
	u32 max_depth;		/* <= MLLB_MAX_DEPTH */
	u64 version;		/* user space's model version, echoed in stats */
	u64 checksum;		/* first 8 bytes of the model file's sha256 */
	struct mllb_node nodes[MLLB_MAX_NODES];
};

struct mllb_ctl {
	u32 active;		/* slot decisions read: 0 or 1 */
	u32 mode;		/* enum mllb_mode; switchable while running */
	u64 version;		/* version of the model in the active slot */
	u64 swaps;		/* number of flips so far */
};

/* Index of each per-CPU counter in the `stats` map. */
enum mllb_stat {
	MLLB_STAT_WAKE_PREV_IDLE = 0,	/* woken task's previous CPU was idle: stays, no decision */
	MLLB_STAT_WAKE_NO_CANDIDATE,	/* no better CPU to consider: stays, no decision */
	MLLB_STAT_WAKE_STAY,		/* a wakeup decision said stay */
	MLLB_STAT_WAKE_MIGRATE,		/* a wakeup decision said migrate */
	MLLB_STAT_PULL_STAY,		/* an idle CPU decided not to pull */
	MLLB_STAT_PULL_MIGRATE,		/* an idle CPU pulled a task from another CPU's queue */
	MLLB_STAT_LOCAL,		/* a CPU ran a task from its own queue */
	MLLB_STAT_MIGRATIONS,		/* a task started running on a CPU other than its last */
	MLLB_STAT_MODEL_DECISIONS,	/* decisions taken by the model */
	MLLB_STAT_MODEL_FALLBACK,	/* model mode but no valid model in the slot: heuristic decided */
	MLLB_STAT_MODEL_BAD_WALK,	/* the model's walk found no leaf: the task stayed */
	MLLB_STAT_LOGGED,		/* decisions written to the decisions ring */
	MLLB_STAT_LOG_LOST,		/* decisions dropped: ring full */
	MLLB_STAT_FORK_PLACED,		/* a new task was placed (free: no migration, no decision) */
	MLLB_STAT_WAKE_PREEMPT,		/* a short task that stayed was queued first and preempted its CPU's long one */
	MLLB_STAT_KEEP,			/* a task used up its slice with nothing queued on its CPU and got another */
	MLLB_NR_STATS,
};

#endif
