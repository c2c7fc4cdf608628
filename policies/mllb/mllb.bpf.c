/* mllb: a load balancer whose every migration decision is a classifier.
 *
 * Each CPU has its own dispatch queue (DSQ id = CPU number). A task is
 * queued on the CPU it is assigned to, and it changes CPU only through one
 * of two decisions, both taken by decide():
 *  - at wakeup (select_cpu): the task's previous CPU is busy and another CPU
 *    (idle if possible, else the least queued) is a candidate: move or stay?
 *  - at dispatch, when a CPU finds its own queue empty: the busiest queue it
 *    may take from holds a task: pull it or stay idle?
 * In collect mode a documented heuristic answers (the system runs well
 * without a model) and in model mode a decision tree held in the `model` map
 * answers, evaluated here with integer comparisons in a bounded loop. Both
 * modes can log each decision with its features to the `decisions` ring
 * once its outcome is known: how long the task waited until it next ran,
 * where, and how long that run was. User space trains on those logs
 * (aios-lab train lb) and swaps models in while this runs (double-buffered
 * slots, see struct mllb_ctl). docs/mllb.md has the details.
 *
 * One object in three files: estimators.bpf.h (per-CPU and per-task state,
 * the estimates and the features of a decision), tree.bpf.h (the model's
 * walk) and this file, the policy (heuristic, decide, the callbacks).
 *
 * Where it fails: per-CPU queues without periodic rebalancing rely on idle
 * CPUs being kicked to pull, so a task queued behind a long-running one
 * waits until some CPU goes idle; no vtime (FIFO per CPU), so nice levels
 * only matter through the model's weight feature; at most MLLB_MAX_CPUS.
 */
#include "aios/scx.bpf.h"
#include "intf.h"

/* Tunables and topology, set by the loader before load (rodata). */
const volatile u64 slice_ns = 5000000;
const volatile bool log_decisions = true;
const volatile u64 cache_hot_ns = 500000;	/* heuristic: what a migration costs (CFS: sched_migration_cost) */
/* A woken task whose runs average at most this long, and at most half of
 * what is left of its CPU's current run, is queued first there and preempts
 * (as EEVDF's wakeup preemption would) instead of waiting a slice or being
 * moved: a short task keeps its cache and costs the long one little. */
const volatile u64 preempt_run_ns = 1000000;
const volatile u32 cpu_llc[MLLB_MAX_CPUS];	/* LLC id of each CPU (sysfs cache/index3/id) */
const volatile u32 cpu_node[MLLB_MAX_CPUS];	/* NUMA node of each CPU */

#define IDLE_CAP_NS	100000000ULL	/* one idle period counts at most 100 ms in avg_idle */

AIOS_STATS_MAP(MLLB_NR_STATS);
AIOS_BTF_EXPORT_ENUM(mllb_stat);
AIOS_BTF_EXPORT_ENUM(mllb_feature);
AIOS_BTF_EXPORT_ENUM(mllb_site);
AIOS_BTF_EXPORT_ENUM(mllb_mode);
AIOS_BTF_EXPORT_ENUM(mllb_limit);
struct mllb_decision __aios_btf_decision __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, struct mllb_model);
} model SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct mllb_ctl);
} model_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} decisions SEC(".maps");

static u32 nr_cpus = 1;

#include "estimators.bpf.h"

/* The collect-mode heuristic (docs/mllb.md) is the training label rule
 * applied to the estimates: move when the wait it saves, capped at how long
 * dst would otherwise idle, exceeds cache_hot_ns (CFS's migration cost; x2
 * across LLCs, x4 across nodes). A pull also needs src busy with a queue. */
static __always_inline bool heuristic(const s64 *f)
{
	s64 cost_us = (s64)(cache_hot_ns / 1000), gain = f[MLLB_F_WAIT_GAIN_US];

	if (!f[MLLB_F_SAME_NODE])
		cost_us *= 4;
	else if (!f[MLLB_F_SAME_LLC])
		cost_us *= 2;
	if (f[MLLB_F_SITE] == MLLB_SITE_PULL && (f[MLLB_F_SRC_NR_QUEUED] < 1 || f[MLLB_F_SRC_IDLE]))
		return false;
	if ((f[MLLB_F_SITE] == MLLB_SITE_PULL || f[MLLB_F_DST_IDLE]) && gain > f[MLLB_F_DST_IDLE_EST_US])
		gain = f[MLLB_F_DST_IDLE_EST_US];
	return gain > cost_us;
}

#include "tree.bpf.h"

static __always_inline bool decide(struct mllb_task *tc)
{
	const s64 *f = tc->dec.features;
	struct mllb_model *m;
	struct mllb_ctl *ctl;
	u32 zero = 0, slot;
	int r;

	tc->dec.by_model = 0;
	ctl = bpf_map_lookup_elem(&model_ctl, &zero);
	if (!ctl || ctl->mode != MLLB_MODE_MODEL)
		return heuristic(f);
	slot = ctl->active & 1;
	m = bpf_map_lookup_elem(&model, &slot);
	if (!m || m->magic != MLLB_MODEL_MAGIC || m->nr_features != MLLB_NR_FEATURES) {
		aios_stat_inc(&stats, MLLB_STAT_MODEL_FALLBACK);
		return heuristic(f);
	}
	aios_stat_inc(&stats, MLLB_STAT_MODEL_DECISIONS);
	tc->dec.by_model = 1;
	r = tree_eval(m, f);
	if (r < 0) {
		aios_stat_inc(&stats, MLLB_STAT_MODEL_BAD_WALK);
		return false;
	}
	return r;
}

static __always_inline void note_decision(struct mllb_task *tc, bool migrate)
{
	tc->dec.migrate = migrate;
	tc->pending = 1;
}

/* The CPU a woken task could move to instead of prev: an idle allowed CPU,
 * preferring prev's LLC, else the allowed CPU with the shortest queue if it
 * is shorter than prev's. -1 when there is none. */
static __always_inline s32 wake_candidate(struct task_struct *p, s32 prev, const struct cpumask *idle)
{
	s32 best_idle = -1, best_busy = -1, cpu;
	s64 best_nr = scx_bpf_dsq_nr_queued(prev);
	u32 prev_llc = llc_of(prev);
	struct bpf_iter_num it;

	aios_for(cpu, 0, nr_cpus, it) {
		s64 nr;

		if (cpu == prev || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		if (bpf_cpumask_test_cpu(cpu, idle)) {
			if (best_idle < 0 || (llc_of(cpu) == prev_llc && llc_of(best_idle) != prev_llc))
				best_idle = cpu;
			continue;
		}
		nr = scx_bpf_dsq_nr_queued(cpu);
		if (nr < best_nr) {
			best_nr = nr;
			best_busy = cpu;
		}
	}
	bpf_iter_num_destroy(&it);
	return best_idle >= 0 ? best_idle : best_busy;
}

/* Send a woken task to cpu: straight to its local DSQ if cpu is idle (and
 * claimed here), else through enqueue to cpu's queue. */
static __always_inline s32 place_on(struct task_struct *p, s32 cpu, u64 now)
{
	if (scx_bpf_test_and_clear_cpu_idle(cpu)) {
		note_wake(cpu, now);
		aios_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return cpu;
}

s32 BPF_STRUCT_OPS(mllb_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	const struct cpumask *idle;
	struct mllb_cpu *prev_ctx, *cand_ctx;
	struct mllb_task *tc;
	u64 now = bpf_ktime_get_ns(), src_wait, dst_wait, left;
	bool migrate, dst_idle;
	s32 cand;

	tc = task_ctx_of(p);
	if (tc)
		tc->runnable_since_ns = now;
	if (scx_bpf_test_and_clear_cpu_idle(prev_cpu)) {
		aios_stat_inc(&stats, MLLB_STAT_WAKE_PREV_IDLE);
		note_wake(prev_cpu, now);
		aios_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		return prev_cpu;
	}
	if (!tc)
		return prev_cpu;
	idle = scx_bpf_get_idle_cpumask();
	cand = wake_candidate(p, prev_cpu, idle);
	/* Placing a new task is not a migration: the kernel does not count it
	 * and there is no cache to lose, so it goes to the best CPU unasked. */
	if (wake_flags & SCX_WAKE_FORK) {
		scx_bpf_put_idle_cpumask(idle);
		aios_stat_inc(&stats, MLLB_STAT_FORK_PLACED);
		return cand < 0 ? prev_cpu : place_on(p, cand, now);
	}
	if (cand < 0) {
		scx_bpf_put_idle_cpumask(idle);
		aios_stat_inc(&stats, MLLB_STAT_WAKE_NO_CANDIDATE);
		return prev_cpu;
	}
	/* Staying means the tail of prev's queue, or its head if the task is
	 * short enough to preempt there; moving, the tail of cand's. */
	dst_idle = bpf_cpumask_test_cpu(cand, idle);
	prev_ctx = cpu_ctx_of(prev_cpu);
	left = run_left(prev_ctx, now);
	src_wait = preempts(tc, left) ? 0 : left + queued_work(prev_ctx);
	cand_ctx = cpu_ctx_of(cand);
	dst_wait = dst_idle ? wake_latency(cand_ctx) : wait_estimate(cand_ctx, now);
	fill_features(tc, p, prev_cpu, cand, MLLB_SITE_WAKEUP, now, idle, src_wait, dst_wait,
		      dst_idle ? idle_estimate(cand_ctx, now) : 0);
	scx_bpf_put_idle_cpumask(idle);
	migrate = decide(tc);
	note_decision(tc, migrate);
	if (!migrate) {
		aios_stat_inc(&stats, MLLB_STAT_WAKE_STAY);
		return prev_cpu;
	}
	aios_stat_inc(&stats, MLLB_STAT_WAKE_MIGRATE);
	return place_on(p, cand, now);
}

void BPF_STRUCT_OPS(mllb_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct mllb_task *tc = task_ctx_of(p);
	s32 cpu = scx_bpf_task_cpu(p), other;
	u64 now = bpf_ktime_get_ns();

	if (tc && !tc->runnable_since_ns)
		tc->runnable_since_ns = now;
	/* A short woken task goes first on its busy CPU and preempts the long
	 * one there (preempt_run_ns); per-CPU kthreads get here without a
	 * select_cpu, so this is the one place that sees every wakeup. */
	if (tc && (enq_flags & SCX_ENQ_WAKEUP) && preempts(tc, run_left(cpu_ctx_of(cpu), now))) {
		account_queued(tc, cpu);
		aios_dsq_insert(p, cpu, slice_ns, enq_flags | SCX_ENQ_HEAD);
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
		aios_stat_inc(&stats, MLLB_STAT_WAKE_PREEMPT);
		return;
	}
	if (tc)
		account_queued(tc, cpu);
	aios_dsq_insert(p, cpu, slice_ns, enq_flags);
	/* Wake the task's CPU if it idles; if it is busy, wake an idle CPU so
	 * that its dispatch can decide whether to pull. */
	if (scx_bpf_test_and_clear_cpu_idle(cpu)) {
		note_wake(cpu, now);
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		return;
	}
	other = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (other >= 0) {
		note_wake(other, now);
		scx_bpf_kick_cpu(other, SCX_KICK_IDLE);
	}
}

/* The queue an idle CPU would pull from: the longest one whose head may run
 * here, preferring this CPU's LLC on ties. */
static __always_inline s32 pull_victim(s32 self)
{
	s32 best = -1, cpu;
	s64 best_score = 0;
	u32 self_llc = llc_of(self);
	struct bpf_iter_num it;

	aios_for(cpu, 0, nr_cpus, it) {
		s64 score;

		if (cpu == self)
			continue;
		score = scx_bpf_dsq_nr_queued(cpu) * 2;
		if (!score)
			continue;
		if (llc_of(cpu) == self_llc)
			score++;
		if (score > best_score) {
			best_score = score;
			best = cpu;
		}
	}
	bpf_iter_num_destroy(&it);
	return best;
}

/* prev used up its slice and nothing waits on cpu, so the kernel keeps it
 * running (SCX_RQ_BAL_KEEP) with no stopping/running pair in between: this
 * is the one place that sees its next slice start. Giving it slice_ns
 * (instead of the kernel's SCX_SLICE_DFL refill) keeps what a task queued
 * here next waits to at most a slice, and restarting curr_from_ns keeps
 * run_left() honest; without it a long run looked finished (0 us left)
 * while tasks queued behind it waited milliseconds. The CPU is not going
 * idle, so it pulls nothing: that would only swap which task waits. */
static __always_inline void keep_running(struct mllb_cpu *c, struct task_struct *prev)
{
	struct mllb_task *tc = task_ctx_of(prev);
	u64 now = bpf_ktime_get_ns();

	prev->scx.slice = slice_ns;
	if (!c)
		return;
	if (tc && now > c->curr_from_ns)
		tc->runtime_ewma_ns = ewma(tc->runtime_ewma_ns, now - c->curr_from_ns);
	c->curr_from_ns = now;
	c->curr_expect_ns = tc ? expected_run(tc) : slice_ns;
	aios_stat_inc(&stats, MLLB_STAT_KEEP);
}

/* c's CPU found nothing to run and prev does not want it: it idles from now. */
static __always_inline void mark_idle(struct mllb_cpu *c)
{
	if (c && !c->idle_start_ns)
		c->idle_start_ns = bpf_ktime_get_ns();
}

void BPF_STRUCT_OPS(mllb_dispatch, s32 cpu, struct task_struct *prev)
{
	struct mllb_cpu *self = cpu_ctx_of(cpu);
	const struct cpumask *idle;
	struct task_struct *p;
	struct mllb_task *tc;
	bool migrate;
	s32 victim;
	u64 now = bpf_ktime_get_ns();

	woke(self, now);
	if (aios_dsq_move_to_local(cpu)) {
		aios_stat_inc(&stats, MLLB_STAT_LOCAL);
		return;
	}
	if (prev && (prev->scx.flags & SCX_TASK_QUEUED)) {
		keep_running(self, prev);
		return;
	}
	victim = pull_victim(cpu);
	if (victim < 0 || !aios_has_dsq_peek())
		goto idle;
	p = scx_bpf_dsq_peek(victim);
	if (!p || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
		goto idle;
	tc = task_ctx_of(p);
	if (!tc)
		goto idle;
	idle = scx_bpf_get_idle_cpumask();
	/* p heads victim's queue: staying, it runs when victim's current run
	 * ends; pulled, it runs here now, on a CPU that would otherwise idle
	 * for about idle_estimate(). */
	fill_features(tc, p, victim, cpu, MLLB_SITE_PULL, now, idle, run_left(cpu_ctx_of(victim), now), 0,
		      idle_estimate(self, now));
	scx_bpf_put_idle_cpumask(idle);
	migrate = decide(tc);
	note_decision(tc, migrate);
	if (migrate && aios_dsq_move_to_local(victim)) {
		aios_stat_inc(&stats, MLLB_STAT_PULL_MIGRATE);
		return;
	}
	aios_stat_inc(&stats, MLLB_STAT_PULL_STAY);
idle:
	mark_idle(self);
}

void BPF_STRUCT_OPS(mllb_running, struct task_struct *p)
{
	struct mllb_task *tc = task_ctx_of(p);
	s32 cpu = scx_bpf_task_cpu(p);
	struct mllb_cpu *c = cpu_ctx_of(cpu);
	u64 now = bpf_ktime_get_ns();

	if (c) {
		woke(c, now);
		if (c->idle_start_ns) {
			u64 gap = now > c->idle_start_ns ? now - c->idle_start_ns : 0;

			if (gap > IDLE_CAP_NS)
				gap = IDLE_CAP_NS;
			c->avg_idle_ns = ewma(c->avg_idle_ns, gap);
			c->idle_start_ns = 0;
		}
		c->run_start_ns = now;
		c->curr_from_ns = now;
		c->running = 1;
		c->curr_expect_ns = tc ? expected_run(tc) : slice_ns;
	}
	if (!tc)
		return;
	account_queued(tc, -1);
	if (tc->last_cpu >= 0 && tc->last_cpu != cpu) {
		aios_stat_inc(&stats, MLLB_STAT_MIGRATIONS);
		recent_migrations(tc, now);
		tc->recent_migrations++;
	}
	tc->last_cpu = cpu;
	tc->run_start_ns = now;
	tc->runnable_since_ns = 0;
	if (tc->pending == 1) {
		tc->dec.wait_after_ns = now > tc->dec.ts_ns ? now - tc->dec.ts_ns : 0;
		tc->dec.ran_cpu = cpu;
		tc->pending = 2;
	}
}

void BPF_STRUCT_OPS(mllb_stopping, struct task_struct *p, bool runnable)
{
	struct mllb_task *tc = task_ctx_of(p);
	struct mllb_cpu *c = cpu_ctx_of(scx_bpf_task_cpu(p));
	u64 now = bpf_ktime_get_ns();
	struct mllb_decision *e;
	u64 from = 0;

	if (c) {
		u64 ran = now > c->run_start_ns ? now - c->run_start_ns : 0;
		u64 period = now > c->last_update_ns ? now - c->last_update_ns : 0;
		u64 sample = period ? ran * 1024 / period : 1024;

		if (sample > 1024)
			sample = 1024;
		c->load = (c->load * 3 + sample) / 4;
		c->last_update_ns = now;
		c->running = 0;
		from = c->curr_from_ns;
	}
	if (!tc)
		return;
	/* One sample per slice: a kept run (keep_running) was sampled there. */
	if (from < tc->run_start_ns)
		from = tc->run_start_ns;
	if (now > from)
		tc->runtime_ewma_ns = ewma(tc->runtime_ewma_ns, now - from);
	tc->last_stop_ns = now;
	tc->runnable_since_ns = runnable ? now : 0;
	if (tc->pending != 2)
		return;
	tc->pending = 0;
	if (!log_decisions)
		return;
	tc->dec.run_after_ns = now > tc->run_start_ns ? now - tc->run_start_ns : 0;
	e = bpf_ringbuf_reserve(&decisions, sizeof(*e), 0);
	if (!e) {
		aios_stat_inc(&stats, MLLB_STAT_LOG_LOST);
		return;
	}
	__builtin_memcpy(e, &tc->dec, sizeof(*e));
	bpf_ringbuf_submit(e, 0);
	aios_stat_inc(&stats, MLLB_STAT_LOGGED);
}

s32 BPF_STRUCT_OPS(mllb_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	struct mllb_task *tc;

	tc = bpf_task_storage_get(&task_ctx, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tc)
		return -12;	/* -ENOMEM: sched_ext refuses the task rather than run it blind */
	tc->last_cpu = -1;
	tc->queued_cpu = -1;
	return 0;
}

/* A task leaving sched_ext while queued (class change) takes its expected
 * work out of its queue's estimate. */
void BPF_STRUCT_OPS(mllb_disable, struct task_struct *p)
{
	struct mllb_task *tc = task_ctx_of(p);

	if (tc)
		account_queued(tc, -1);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(mllb_init)
{
	struct bpf_iter_num it;
	s32 cpu, err = 0;

	nr_cpus = scx_bpf_nr_cpu_ids();
	if (nr_cpus > MLLB_MAX_CPUS) {
		aios_error("mllb supports at most %d CPUs, this machine has %u", MLLB_MAX_CPUS, nr_cpus);
		return -22;
	}
	aios_for(cpu, 0, nr_cpus, it) {
		err = scx_bpf_create_dsq(cpu, node_of(cpu));
		if (err)
			break;
	}
	bpf_iter_num_destroy(&it);
	return err;
}

void BPF_STRUCT_OPS(mllb_exit, struct scx_exit_info *ei)
{
	aios_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops mllb_ops = {
	.select_cpu	= (void *)mllb_select_cpu,
	.enqueue	= (void *)mllb_enqueue,
	.dispatch	= (void *)mllb_dispatch,
	.running	= (void *)mllb_running,
	.stopping	= (void *)mllb_stopping,
	.init_task	= (void *)mllb_init_task,
	.disable	= (void *)mllb_disable,
	.init		= (void *)mllb_init,
	.exit		= (void *)mllb_exit,
	.name		= "mllb",
};
