/* mllb's estimators: what each CPU and each task is doing, the estimates
 * drawn from it (load, expected run, wait, wake-up latency, idle time) and
 * the feature vector of one decision (enum mllb_feature, docs/mllb.md).
 *
 * Part of mllb.bpf.c (one object), included after its tunables: reads
 * slice_ns, preempt_run_ns, cpu_llc and cpu_node. The policy (mllb.bpf.c)
 * decides; nothing here does.
 */
#ifndef MLLB_ESTIMATORS_BPF_H
#define MLLB_ESTIMATORS_BPF_H

#define LOAD_WINDOW_NS	10000000ULL	/* idle decay of the per-CPU load signal */
#define MIG_DECAY_NS	100000000ULL	/* recent migrations halve every 100 ms */

/* Per-CPU load signal. Written only by the CPU itself (running/stopping run
 * there), read by every CPU deciding: an unlocked read of a slightly stale
 * value is fine for a heuristic feature. */
struct mllb_cpu {
	u64 last_update_ns;
	u64 run_start_ns;	/* when the current task started running (load signal) */
	u64 curr_from_ns;	/* when its current slice started (run start, or a keep in dispatch) */
	u64 curr_expect_ns;	/* expected length of that slice's run (its task's EWMA, capped at a slice) */
	s64 queued_ns;		/* expected work waiting in this CPU's DSQ; atomic, any CPU adds */
	u64 idle_start_ns;	/* when dispatch found nothing to run, 0 while busy */
	u64 avg_idle_ns;	/* EWMA (1/4) of idle period lengths, like CFS's rq->avg_idle */
	u64 wake_from_ns;	/* when this idle CPU was claimed or kicked for work, 0 if not */
	u64 wake_lat_ns;	/* EWMA (1/4) of claim/kick -> it ran dispatch or a task */
	u32 load;		/* busy fraction, 0..1024, EWMA over stop events */
	u32 running;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MLLB_MAX_CPUS);
	__type(key, u32);
	__type(value, struct mllb_cpu);
} cpu_ctx SEC(".maps");

/* Per-task state. The pending decision lives here until its outcome is
 * known; pending = 1 after the decision, 2 once the task started running. */
struct mllb_task {
	u64 last_stop_ns;
	u64 runtime_ewma_ns;
	u64 runnable_since_ns;
	u64 run_start_ns;
	u64 mig_decay_ns;
	u32 recent_migrations;
	u64 queued_cost_ns;	/* what this task added to queued_ns of queued_cpu */
	s32 last_cpu;
	s32 queued_cpu;		/* DSQ it waits in (counted in queued_ns), -1 if none */
	u32 pending;
	u32 _pad;
	struct mllb_decision dec;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mllb_task);
} task_ctx SEC(".maps");

static __always_inline struct mllb_task *task_ctx_of(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctx, p, 0, 0);
}

static __always_inline struct mllb_cpu *cpu_ctx_of(s32 cpu)
{
	u32 key = cpu;

	return bpf_map_lookup_elem(&cpu_ctx, &key);
}

static __always_inline s64 clamp_pos(s64 v)
{
	if (v < 0)
		return 0;
	return v > MLLB_FEATURE_MAX ? MLLB_FEATURE_MAX : v;
}

static __always_inline s64 clamp_sym(s64 v)
{
	if (v < -MLLB_FEATURE_MAX)
		return -MLLB_FEATURE_MAX;
	return v > MLLB_FEATURE_MAX ? MLLB_FEATURE_MAX : v;
}

/* clang folds a bounds check into the address computation in a way the
 * verifier cannot follow, and drops a mask it can prove redundant; the empty
 * asm hides the value from clang so the mask survives and bounds the index.
 * MLLB_MAX_CPUS is a power of two. */
static __always_inline u32 cpu_index(s32 cpu)
{
	u64 i = (u32)cpu;

	asm volatile("" : "+r"(i));
	return i & (MLLB_MAX_CPUS - 1);
}

static __always_inline u32 llc_of(s32 cpu)
{
	return (u32)cpu < MLLB_MAX_CPUS ? cpu_llc[cpu_index(cpu)] : 0;
}

static __always_inline u32 node_of(s32 cpu)
{
	return (u32)cpu < MLLB_MAX_CPUS ? cpu_node[cpu_index(cpu)] : 0;
}

/* A CPU's busy fraction; an idle CPU's value decays with the time since it
 * last stopped a task, so a long-idle CPU does not look loaded. */
static __always_inline s64 cpu_load(s32 cpu, u64 now)
{
	struct mllb_cpu *c = cpu_ctx_of(cpu);
	u64 idle_for;

	if (!c)
		return 0;
	if (c->running || now <= c->last_update_ns)
		return c->load;
	idle_for = now - c->last_update_ns;
	if (idle_for <= LOAD_WINDOW_NS)
		return c->load;
	return c->load * LOAD_WINDOW_NS / idle_for;
}

static __always_inline u32 recent_migrations(struct mllb_task *tc, u64 now)
{
	/* Halve once per elapsed period; after 32 periods nothing is left. */
	if (tc->recent_migrations && now >= tc->mig_decay_ns + MIG_DECAY_NS) {
		u64 periods = (now - tc->mig_decay_ns) / MIG_DECAY_NS;

		tc->recent_migrations = periods >= 32 ? 0 : tc->recent_migrations >> periods;
		tc->mig_decay_ns += periods * MIG_DECAY_NS;
	}
	if (!tc->recent_migrations)
		tc->mig_decay_ns = now;
	return tc->recent_migrations;
}

/* How long the task is expected to run once it runs: its EWMA, capped at
 * two slices (a slice ends at the first tick after slice_ns, so a CPU-bound
 * task's runs measure between one slice and one slice plus a tick); a task
 * with no history counts as a full slice. */
static __always_inline u64 expected_run(struct mllb_task *tc)
{
	u64 r = tc->runtime_ewma_ns;

	if (!r)
		return slice_ns;
	return r < 2 * slice_ns ? r : 2 * slice_ns;
}

/* EWMA with weight 1/4 whose first sample is taken as it is (starting from 0
 * would read a new task's first 5 ms run as 1.25 ms). */
static __always_inline u64 ewma(u64 avg, u64 sample)
{
	return avg ? (avg * 3 + sample) / 4 : sample;
}

/* An idle cpu was claimed or kicked at now: time how long it takes to act. */
static __always_inline void note_wake(s32 cpu, u64 now)
{
	struct mllb_cpu *c = cpu_ctx_of(cpu);

	if (c && !c->wake_from_ns)
		c->wake_from_ns = now;
}

/* cpu runs dispatch or a task: if it had been woken for work, that took
 * now - wake_from_ns. Under TCG this is milliseconds (the vCPU thread has
 * to be scheduled), on hardware the IPI and idle-state exit. */
static __always_inline void woke(struct mllb_cpu *c, u64 now)
{
	if (!c || !c->wake_from_ns)
		return;
	c->wake_lat_ns = ewma(c->wake_lat_ns, now > c->wake_from_ns ? now - c->wake_from_ns : 0);
	c->wake_from_ns = 0;
}

/* How long before c's CPU can run the next task in its queue: what is left
 * of its current run (its task's expected run length minus what it has run
 * of its current slice) or, if it idles and has been woken for work, what
 * is left of its measured wake-up latency. The second case is a task queued
 * on an idle CPU whose vCPU has not woken yet: under TCG its wait is
 * milliseconds, which an estimate of 0 hid. */
static __always_inline u64 run_left(struct mllb_cpu *c, u64 now)
{
	u64 since;

	if (!c)
		return 0;
	if (c->running) {
		since = now > c->curr_from_ns ? now - c->curr_from_ns : 0;
		return since < c->curr_expect_ns ? c->curr_expect_ns - since : 0;
	}
	if (!c->wake_from_ns)
		return 0;
	since = now > c->wake_from_ns ? now - c->wake_from_ns : 0;
	return since < c->wake_lat_ns ? c->wake_lat_ns - since : 0;
}

/* Expected work waiting in c's queue. */
static __always_inline u64 queued_work(struct mllb_cpu *c)
{
	s64 queued = c ? c->queued_ns : 0;

	return queued > 0 ? queued : 0;
}

/* Expected wait before a task queued at the tail of c's CPU now would run:
 * the rest of the current run plus the work already queued there. */
static __always_inline u64 wait_estimate(struct mllb_cpu *c, u64 now)
{
	return run_left(c, now) + queued_work(c);
}

/* What a task sent to c's idle CPU waits for it to wake: its measured latency. */
static __always_inline u64 wake_latency(struct mllb_cpu *c)
{
	return c ? c->wake_lat_ns : 0;
}

/* How long c's idle CPU is expected to stay idle: its typical idle period,
 * or how long it has already idled if that is longer. 0 for a busy CPU. */
static __always_inline u64 idle_estimate(struct mllb_cpu *c, u64 now)
{
	u64 idle_for;

	if (!c || c->running)
		return 0;
	idle_for = c->idle_start_ns && now > c->idle_start_ns ? now - c->idle_start_ns : 0;
	return idle_for > c->avg_idle_ns ? idle_for : c->avg_idle_ns;
}

/* Whether a woken task staying on a CPU would preempt there
 * (preempt_run_ns); run_left is run_left() of that CPU. */
static __always_inline bool preempts(struct mllb_task *tc, u64 run_left)
{
	u64 r = tc->runtime_ewma_ns;

	return r && r <= preempt_run_ns && run_left > 2 * r;
}

static __always_inline void account_queued(struct mllb_task *tc, s32 cpu)
{
	struct mllb_cpu *c;

	if (tc->queued_cpu >= 0) {
		c = cpu_ctx_of(tc->queued_cpu);
		if (c)
			__sync_fetch_and_add(&c->queued_ns, -(s64)tc->queued_cost_ns);
		tc->queued_cpu = -1;
	}
	if (cpu < 0)
		return;
	c = cpu_ctx_of(cpu);
	if (!c)
		return;
	tc->queued_cost_ns = expected_run(tc);
	tc->queued_cpu = cpu;
	__sync_fetch_and_add(&c->queued_ns, (s64)tc->queued_cost_ns);
}

/* Fill tc->dec for a decision about moving p from src to dst; src_wait and
 * dst_wait are the wait estimates of staying and of moving. */
static __always_inline void fill_features(struct mllb_task *tc, struct task_struct *p, s32 src, s32 dst,
					  u32 site, u64 now, const struct cpumask *idle,
					  u64 src_wait, u64 dst_wait, u64 dst_idle)
{
	s64 *f = tc->dec.features;
	s64 src_nr = scx_bpf_dsq_nr_queued(src), dst_nr = scx_bpf_dsq_nr_queued(dst);
	s64 src_load = cpu_load(src, now), dst_load = cpu_load(dst, now);

	f[MLLB_F_SRC_NR_QUEUED] = clamp_pos(src_nr);
	f[MLLB_F_DST_NR_QUEUED] = clamp_pos(dst_nr);
	f[MLLB_F_SRC_LOAD] = clamp_pos(src_load);
	f[MLLB_F_DST_LOAD] = clamp_pos(dst_load);
	f[MLLB_F_LOAD_DIFF] = clamp_sym(src_load - dst_load);
	f[MLLB_F_NR_DIFF] = clamp_sym(src_nr - dst_nr);
	f[MLLB_F_SRC_IDLE] = idle && bpf_cpumask_test_cpu(src, idle);
	f[MLLB_F_DST_IDLE] = idle && bpf_cpumask_test_cpu(dst, idle);
	f[MLLB_F_SAME_LLC] = llc_of(src) == llc_of(dst);
	f[MLLB_F_SAME_NODE] = node_of(src) == node_of(dst);
	f[MLLB_F_TASK_RUNTIME_US] = clamp_pos(tc->runtime_ewma_ns / 1000);
	f[MLLB_F_TASK_SINCE_RAN_US] = tc->last_stop_ns && now > tc->last_stop_ns ?
				       clamp_pos((now - tc->last_stop_ns) / 1000) : 0;
	f[MLLB_F_TASK_WEIGHT] = clamp_pos(p->scx.weight);
	f[MLLB_F_TASK_WAIT_US] = tc->runnable_since_ns && now > tc->runnable_since_ns ?
				  clamp_pos((now - tc->runnable_since_ns) / 1000) : 0;
	f[MLLB_F_TASK_RECENT_MIGRATIONS] = recent_migrations(tc, now);
	f[MLLB_F_SRC_WAIT_EST_US] = clamp_pos(src_wait / 1000);
	f[MLLB_F_DST_WAIT_EST_US] = clamp_pos(dst_wait / 1000);
	f[MLLB_F_WAIT_GAIN_US] = clamp_sym((s64)(src_wait / 1000) - (s64)(dst_wait / 1000));
	f[MLLB_F_DST_IDLE_EST_US] = clamp_pos(dst_idle / 1000);
	f[MLLB_F_SITE] = site;
	tc->dec.ts_ns = now;
	tc->dec.pid = p->pid;
	tc->dec.src_cpu = src;
	tc->dec.dst_cpu = dst;
	tc->dec.ran_cpu = -1;
	tc->dec.site = site;
	tc->dec.wait_after_ns = 0;
	tc->dec.run_after_ns = 0;
}

#endif /* MLLB_ESTIMATORS_BPF_H */
