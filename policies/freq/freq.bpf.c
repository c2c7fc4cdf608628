/* freq: a simple scheduler that sets each CPU's performance target from a
 * learned frequency table held in a BPF map.
 *
 * Scheduling is deliberately plain: every CPU has its own FIFO dispatch
 * queue (DSQ id = CPU number); a woken task goes straight to an idle CPU
 * when scx_bpf_select_cpu_dfl() finds one, otherwise it is queued on its
 * CPU and an idle CPU is kicked; a CPU whose own queue is empty takes the
 * head of the longest other queue. Per-CPU queues are what give the table
 * its second input, the number of tasks waiting for a CPU.
 *
 * Frequency: each CPU measures its frequency-invariant utilisation on the
 * capacity scale 0..1024: the time a task of ours ran in a window of
 * window_ns, each running stretch scaled by scx_bpf_cpuperf_cur()/1024 (the
 * CPU's current perf level relative to its highest, 1024 where the kernel
 * has no frequency invariance), divided by the window; windows are folded
 * into an EWMA with weight 1/4 per elapsed window (a CPU idle for n windows
 * decays by (3/4)^n). That EWMA lags a burst by a few windows, so, like the
 * kernel's util_est, each time a CPU runs out of work (a task stops, not
 * runnable, and nothing is queued) the larger of the EWMA and the current
 * window's busy fraction so far is folded into util_est: up at once, down by
 * 1/4 of the difference. While the CPU has work, util = max(EWMA, util_est);
 * an idle CPU uses the EWMA alone. On every tick of a CPU, and on every
 * `running` at most once per running_min_ns, the policy reads
 *     perf = table[active slot][min(util >> 6, 15)][min(nr_queued, 3)]
 * and calls scx_bpf_cpuperf_set(cpu, ceil(perf x cap / 1024 / 1.25)) with
 * cap = scx_bpf_cpuperf_cap(cpu): schedutil (the governor that reads this
 * target) reads it on the capacity scale and multiplies by 1.25 again, so
 * the CPU ends at `perf`/1024 of its own highest frequency. The table is
 * double-buffered like mllb's model (freq_ctl); with no valid table the
 * perf target is left as it is (FREQ_STAT_NO_TABLE).
 * What it observed and asked for is kept per CPU in `cpu_state`.
 *
 * Per task (task-local storage `task_est`, struct freq_task): the length of
 * each activation (run time from a wakeup until it sleeps) and an estimate
 * of the next one by the kernel's util_est rule (up at once, down by 1/4),
 * the per-task signal of dvfs.task_signal; each CPU keeps the sum of the
 * estimates of the tasks waiting in its queue (freq_cpu.queued_est_ns).
 * A new task starts from its program's prior (`prog_est`, keyed by its comm
 * when it entered sched_ext: a fork's is its parent's): the util_est rule
 * over the first activations of earlier tasks of that program, the
 * simulator's `program` prior (dvfs.task_signal).
 * Memory: one struct freq_task (80 bytes) plus the kernel's local-storage
 * element per task this policy schedules, created in init_task, deleted in
 * exit_task (TASK_INIT - TASK_EXIT entries live). The table is still
 * indexed by (utilisation, queue length): tables over the per-task state
 * (FreqTable.state = "task") are trained and judged in the simulator only.
 *
 * Where it fails: utilisation counts only sched_ext tasks (RT and deadline
 * tasks are invisible to it); an idle CPU gets no tick, so a timer every
 * window_ns decays its utilisation and re-applies the table (see
 * decay_timer_fn); the target only matters
 * under schedutil with a cpufreq driver (none in a QEMU guest, so there it
 * changes no frequency); at most FREQ_MAX_CPUS CPUs.
 */
#include "aios/scx.bpf.h"
#include "intf.h"

/* Tunables, set by the loader before load (rodata). */
const volatile u64 slice_ns = 5000000;
const volatile u64 window_ns = 8000000;		/* utilisation window: two ticks at HZ=250 */
const volatile u64 running_min_ns = 1000000;	/* `running` decides at most once per this */

/* An EWMA step per elapsed window; past this many windows the old value has
 * decayed below 1% ((3/4)^16) and is dropped. */
#define MAX_DECAY_STEPS 16
#define UTIL_FP_SHIFT	10

AIOS_STATS_MAP(FREQ_NR_STATS);
AIOS_BTF_EXPORT_ENUM(freq_stat);
AIOS_BTF_EXPORT_ENUM(freq_limit);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, struct freq_table);
} table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct freq_ctl);
} table_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FREQ_MAX_CPUS);
	__type(key, u32);
	__type(value, struct freq_cpu);
} cpu_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct freq_task);
} task_est SEC(".maps");

/* Per program (comm), the prior of a new task's first activation: struct freq_prior. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FREQ_MAX_PROGRAMS);
	__type(key, char[FREQ_COMM_LEN]);
	__type(value, struct freq_prior);
} prog_est SEC(".maps");

static u32 nr_cpus = 1;

static __always_inline struct freq_task *task_of(struct task_struct *p)
{
	struct freq_task *tc = bpf_task_storage_get(&task_est, p, 0, 0);

	if (!tc)
		aios_stat_inc(&stats, FREQ_STAT_NO_TASK_STATE);
	return tc;
}

static __always_inline struct freq_cpu *cpu_of(s32 cpu)
{
	u32 key = cpu;

	return bpf_map_lookup_elem(&cpu_state, &key);
}

/* clang can fold a clamp into the address computation in a way the verifier
 * cannot follow; the empty asm hides the value from clang so the mask below
 * survives and bounds the index. Both bucket counts are powers of two and
 * the value is clamped first, so the mask changes nothing. */
static __always_inline u32 bounded(u32 v, u32 mask)
{
	u64 i = v;

	asm volatile("" : "+r"(i));
	return i & mask;
}

/* Count the running stretch up to now into the window's busy time, at the
 * CPU's current perf level cur (0..1024): a CPU at half speed did half the
 * work. Called with c->lock held (no kfunc calls there: cur is read before). */
static __always_inline void account_busy(struct freq_cpu *c, u64 cur, u64 now)
{
	if (!c->running || now <= c->run_start_ns)
		return;
	if (cur > FREQ_PERF_MAX)
		cur = FREQ_PERF_MAX;
	c->busy_ns += (now - c->run_start_ns) * cur / FREQ_PERF_MAX;
	c->run_start_ns = now;
}

static __always_inline u64 perf_cur(s32 cpu)
{
	return scx_bpf_cpuperf_cur(cpu);
}

/* Close the window once window_ns has passed: its busy fraction (0..1024)
 * enters the EWMA once per elapsed window, so a long idle gap decays the
 * utilisation as much as that many empty windows would. `aligned` (the
 * idle-decay timer, on a CPU with nothing running) keeps the window grid:
 * the next window starts at the last boundary, not at now, so a CPU idling
 * decays exactly one step per window_ns as the simulator's does. A running
 * CPU restarts its window at now (the busy time up to now is counted).
 * Called with c->lock held. Returns the number of windows closed. */
static __always_inline u64 roll_window(struct freq_cpu *c, u64 cur, u64 now, bool aligned)
{
	u64 elapsed, sample, periods, fp;
	int i;

	account_busy(c, cur, now);
	if (!c->window_start_ns || now < c->window_start_ns) {
		c->window_start_ns = now;
		c->busy_ns = 0;
		return 0;
	}
	elapsed = now - c->window_start_ns;
	if (elapsed < window_ns || !elapsed)
		return 0;
	sample = c->busy_ns * FREQ_PERF_MAX / elapsed;
	if (sample > FREQ_PERF_MAX)
		sample = FREQ_PERF_MAX;
	sample <<= UTIL_FP_SHIFT;
	periods = window_ns ? elapsed / window_ns : 1;
	fp = c->util_fp;
	for (i = 0; i < MAX_DECAY_STEPS; i++) {
		if (i >= periods)
			break;
		fp = (fp * 3 + sample) / 4;
	}
	if (periods > MAX_DECAY_STEPS)
		fp = sample;
	c->util_fp = fp;
	if (aligned && !c->running && periods <= MAX_DECAY_STEPS && window_ns)
		c->window_start_ns = now - elapsed % window_ns;
	else
		c->window_start_ns = now;
	c->busy_ns = 0;
	return periods;
}

/* ceil(perf x cap / 1024 / 1.25), clamped to 1..1024. schedutil reads the
 * target as utilisation on the capacity scale: it asks for 1.25 x max_freq
 * x target / cap (map_util_perf, then get_next_freq with max = the CPU's
 * capacity). A table value is a share of the CPU's own highest frequency,
 * so it is scaled by the capacity (1024 on symmetric machines; less on the
 * small cores of a big.LITTLE system) and divided by the headroom. The same
 * integer formula as aios_lab.dvfs.table.cpuperf_request. */
static __always_inline u32 headroom_request(u32 perf, u32 cap)
{
	u64 r;

	if (cap < 1 || cap > FREQ_PERF_MAX)
		cap = FREQ_PERF_MAX;
	r = ((u64)perf * cap * 4 + 5 * FREQ_PERF_MAX - 1) / (5 * FREQ_PERF_MAX);
	if (r < 1)
		return 1;
	return r > FREQ_PERF_MAX ? FREQ_PERF_MAX : r;
}

/* Tasks waiting for cpu: its own DSQ plus its local DSQ (tasks placed there
 * directly). Errors (negative) count as none. */
static __always_inline u32 queued_on(s32 cpu)
{
	s32 own = scx_bpf_dsq_nr_queued(cpu);
	s32 local = scx_bpf_dsq_nr_queued(SCX_DSQ_LOCAL_ON | (u64)cpu);

	return (own > 0 ? own : 0) + (local > 0 ? local : 0);
}

/* The table in the active slot, or NULL when it holds none. */
static __always_inline struct freq_table *active_table(void)
{
	struct freq_table *t;
	struct freq_ctl *ctl;
	u32 zero = 0, slot;

	ctl = bpf_map_lookup_elem(&table_ctl, &zero);
	if (!ctl)
		return NULL;
	slot = ctl->active & 1;
	t = bpf_map_lookup_elem(&table, &slot);
	if (!t || t->magic != FREQ_TABLE_MAGIC || t->util_buckets != FREQ_UTIL_BUCKETS ||
	    t->rq_buckets != FREQ_RQ_BUCKETS)
		return NULL;
	return t;
}

/* The windowed EWMA, rounded out of fixed point, at most 1024. */
static __always_inline u32 util_win(const struct freq_cpu *c)
{
	u64 util = (c->util_fp + (1 << (UTIL_FP_SHIFT - 1))) >> UTIL_FP_SHIFT;

	return util > FREQ_PERF_MAX ? FREQ_PERF_MAX : util;
}

/* Record a decision in c from its (already rolled) util_fp, the queue
 * length nr and table t (NULL: none). Called with c->lock held. Returns the
 * request, 0 when there is no table; *clamped says a table value was out
 * of range. */
static __always_inline u32 decide(struct freq_cpu *c, struct freq_table *t, u32 nr, u32 cur, u32 cap,
				  bool *clamped)
{
	u32 util, ub, rb, perf;

	util = util_win(c);
	c->util_win = util;
	/* util_est counts while the CPU has work, as the kernel's does while
	 * its tasks are enqueued (dvfs.sim: table_util). */
	if ((c->running || nr) && c->util_est > util)
		util = c->util_est;
	ub = util >> FREQ_UTIL_SHIFT;
	if (ub > FREQ_UTIL_BUCKETS - 1)
		ub = FREQ_UTIL_BUCKETS - 1;
	rb = nr < FREQ_RQ_BUCKETS - 1 ? nr : FREQ_RQ_BUCKETS - 1;
	c->util = util;
	c->util_bucket = ub;
	c->nr_queued = nr;
	c->rq_bucket = rb;
	c->perf_cur = cur;
	c->perf_cap = cap;
	c->updates++;
	if (!t) {
		c->table_version = 0;
		c->perf = 0;
		c->request = 0;
		return 0;
	}
	perf = t->perf[bounded(ub, FREQ_UTIL_BUCKETS - 1)][bounded(rb, FREQ_RQ_BUCKETS - 1)];
	/* User space checks every value; a value out of range would make the
	 * kernel eject us (perf > 1024 is an error), so clamp anyway. */
	if (perf < 1 || perf > FREQ_PERF_MAX) {
		perf = perf < 1 ? 1 : FREQ_PERF_MAX;
		*clamped = true;
	}
	c->table_version = t->version;
	c->perf = perf;
	c->request = headroom_request(perf, cap);
	return c->request;
}

/* Observe cpu, look its state up in the active table and set its perf
 * target. Called with cpu's runqueue locked (tick, running), which is also
 * the only CPU scx_bpf_cpuperf_set() accepts there. The kfuncs are called
 * outside c->lock (the verifier allows none under a BPF spin lock). */
static __always_inline void update_perf(s32 cpu, u64 now, u32 stat)
{
	struct freq_cpu *c = cpu_of(cpu);
	struct freq_table *t;
	u32 nr, cur, cap, req;
	bool clamped = false;

	if (!c)
		return;
	cur = perf_cur(cpu);
	cap = scx_bpf_cpuperf_cap(cpu);
	nr = queued_on(cpu);
	t = active_table();
	bpf_spin_lock(&c->lock);
	__sync_fetch_and_add(&c->seq, 1);	/* odd: user space retries */
	roll_window(c, cur, now, false);
	c->last_set_ns = now;
	req = decide(c, t, nr, cur, cap, &clamped);
	__sync_fetch_and_add(&c->seq, 1);	/* even: consistent again */
	bpf_spin_unlock(&c->lock);
	if (clamped)
		aios_stat_inc(&stats, FREQ_STAT_CLAMPED);
	if (!req) {
		aios_stat_inc(&stats, FREQ_STAT_NO_TABLE);
		return;
	}
	scx_bpf_cpuperf_set(cpu, req);
	aios_stat_inc(&stats, stat);
}

/* Idle decay. An idle CPU gets no tick (nohz) and no callback of ours, so
 * nothing would close its windows: its utilisation, and its perf target,
 * would stay where its last task left them, holding a shared cpufreq
 * policy's frequency up (schedutil takes the max over its CPUs). The
 * simulator the tables are trained on (dvfs.sim) closes every CPU's window
 * every window_ns, busy or not. So a timer fires every window_ns and, for
 * each CPU with no task of ours running, closes its elapsed windows (on the
 * window grid: one (3/4) step per window) and re-applies the table for the
 * decayed utilisation and the CPU's queue (0 while it idles).
 *
 * scx_bpf_cpuperf_set() may target any CPU from here: with no runqueue
 * lock held it takes that CPU's lock itself (kernel/sched/ext.c,
 * scx_locked_rq() == NULL). It is called after c->lock is dropped; if the
 * CPU's own callbacks decided in between (seq moved), their request may
 * have been overwritten by ours, so theirs is set again. */
struct decay_timer_val {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct decay_timer_val);
} decay_timer SEC(".maps");

#define FREQ_CLOCK_MONOTONIC 1

static __always_inline void decay_idle(s32 cpu, struct freq_table *t, u64 now)
{
	struct freq_cpu *c = cpu_of(cpu);
	u32 nr, cur, cap, req = 0, old_req = 0;
	u64 seq = 0, closed = 0;
	bool clamped = false, redo = false;

	if (!c || c->running)	/* unlocked peek: skip busy CPUs cheaply */
		return;
	cur = perf_cur(cpu);
	cap = scx_bpf_cpuperf_cap(cpu);
	nr = queued_on(cpu);
	bpf_spin_lock(&c->lock);
	if (!c->running && c->updates) {
		old_req = c->request;
		__sync_fetch_and_add(&c->seq, 1);
		closed = roll_window(c, cur, now, true);
		if (closed)
			req = decide(c, t, nr, cur, cap, &clamped);
		__sync_fetch_and_add(&c->seq, 1);
	}
	seq = c->seq;
	bpf_spin_unlock(&c->lock);
	if (clamped)
		aios_stat_inc(&stats, FREQ_STAT_CLAMPED);
	/* Nothing closed, no table, or the same target as before: no call. */
	if (!closed || !req || req == old_req)
		return;
	scx_bpf_cpuperf_set(cpu, req);
	aios_stat_inc(&stats, FREQ_STAT_IDLE_DECAY);
	/* A task started there meanwhile and decided: make its request win. */
	bpf_spin_lock(&c->lock);
	if (c->seq != seq && !(c->seq & 1)) {
		redo = true;
		req = c->request;
	}
	bpf_spin_unlock(&c->lock);
	if (redo && req)
		scx_bpf_cpuperf_set(cpu, req);
}

static int decay_timer_fn(void *map, int *key, struct bpf_timer *timer)
{
	struct bpf_iter_num it;
	struct freq_table *t = active_table();
	u64 now = bpf_ktime_get_ns();
	s32 cpu;

	aios_for(cpu, 0, nr_cpus, it) {
		decay_idle(cpu, t, now);
	}
	bpf_iter_num_destroy(&it);
	bpf_timer_start(timer, window_ns, 0);
	return 0;
}

/* Move tc's estimate out of the queue it was counted in and, for cpu !=
 * FREQ_NO_CPU, into cpu's: the estimate less what the activation has run,
 * at least a tenth of it (dvfs.task_signal.TaskSignals.remaining). */
static __always_inline void account_queued(struct freq_task *tc, u32 cpu)
{
	struct freq_cpu *c;
	u64 est, left;

	if (tc->queued_cpu != FREQ_NO_CPU) {
		c = cpu_of(tc->queued_cpu);
		if (c)
			__sync_fetch_and_sub(&c->queued_est_ns, tc->queued_est_ns);
		tc->queued_cpu = FREQ_NO_CPU;
		tc->queued_est_ns = 0;
	}
	if (cpu == FREQ_NO_CPU)
		return;
	c = cpu_of(cpu);
	if (!c)
		return;
	est = tc->est_ns;
	left = est > tc->act_ns ? est - tc->act_ns : 0;
	if (left < est / 10)
		left = est / 10;
	tc->queued_est_ns = left;
	tc->queued_cpu = cpu;
	__sync_fetch_and_add(&c->queued_est_ns, left);
}

s32 BPF_STRUCT_OPS(freq_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle) {
		aios_stat_inc(&stats, FREQ_STAT_DIRECT);
		aios_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return cpu;
}

void BPF_STRUCT_OPS(freq_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 cpu = scx_bpf_task_cpu(p), other;
	struct freq_task *tc = task_of(p);

	if (tc)
		account_queued(tc, cpu);
	aios_stat_inc(&stats, FREQ_STAT_QUEUED);
	aios_dsq_insert(p, cpu, slice_ns, enq_flags);
	/* Wake the task's CPU if it idles; if it is busy, wake an idle CPU so
	 * that its dispatch takes the task instead of leaving it waiting. */
	if (scx_bpf_test_and_clear_cpu_idle(cpu)) {
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		return;
	}
	other = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (other >= 0)
		scx_bpf_kick_cpu(other, SCX_KICK_IDLE);
}

/* The longest queue other than self's, or -1 when all are empty. */
static __always_inline s32 busiest_other(s32 self)
{
	struct bpf_iter_num it;
	s32 best = -1, cpu;
	s32 best_nr = 0;

	aios_for(cpu, 0, nr_cpus, it) {
		s32 nr;

		if (cpu == self)
			continue;
		nr = scx_bpf_dsq_nr_queued(cpu);
		if (nr > best_nr) {
			best_nr = nr;
			best = cpu;
		}
	}
	bpf_iter_num_destroy(&it);
	return best;
}

void BPF_STRUCT_OPS(freq_dispatch, s32 cpu, struct task_struct *prev)
{
	s32 victim;

	if (aios_dsq_move_to_local(cpu)) {
		aios_stat_inc(&stats, FREQ_STAT_LOCAL);
		return;
	}
	/* Only tasks allowed on this CPU are moved; if the head of the
	 * busiest queue is not, the task waits for its own CPU's dispatch. */
	victim = busiest_other(cpu);
	if (victim >= 0 && aios_dsq_move_to_local(victim))
		aios_stat_inc(&stats, FREQ_STAT_STOLEN);
}

void BPF_STRUCT_OPS(freq_running, struct task_struct *p)
{
	s32 cpu = scx_bpf_task_cpu(p);
	struct freq_cpu *c = cpu_of(cpu);
	struct freq_task *tc = task_of(p);
	u64 now = bpf_ktime_get_ns();

	u64 cur, last;

	if (tc) {
		account_queued(tc, FREQ_NO_CPU);	/* it runs: no longer waiting */
		tc->run_start_ns = p->se.sum_exec_runtime;
	}
	if (!c)
		return;
	cur = perf_cur(cpu);
	bpf_spin_lock(&c->lock);
	__sync_fetch_and_add(&c->seq, 1);
	/* The idle gap before this task enters the window as not busy. */
	roll_window(c, cur, now, false);
	c->running = 1;
	c->run_start_ns = now;
	last = c->last_set_ns;
	__sync_fetch_and_add(&c->seq, 1);
	bpf_spin_unlock(&c->lock);
	if (last && now - last < running_min_ns) {
		aios_stat_inc(&stats, FREQ_STAT_RATE_LIMITED);
		return;
	}
	update_perf(cpu, now, FREQ_STAT_RUNNING_SET);
}

void BPF_STRUCT_OPS(freq_tick, struct task_struct *p)
{
	update_perf(scx_bpf_task_cpu(p), bpf_ktime_get_ns(), FREQ_STAT_TICK_SET);
}

/* util_est's update when cpu runs out of work (kernel/sched/fair.c
 * util_est_update: a larger sample is taken at once, a smaller one moves the
 * estimate down by 1/4 of the difference). The sample is the larger of the
 * EWMA and the busy fraction of the window so far, which has the burst that
 * just ended in it. Called with c->lock held, after account_busy(). */
static __always_inline void util_est_update(struct freq_cpu *c, u64 now)
{
	u64 sample = util_win(c), part;
	u32 est = c->util_est;

	if (c->window_start_ns && now > c->window_start_ns) {
		part = c->busy_ns * FREQ_PERF_MAX / (now - c->window_start_ns);
		if (part > sample)
			sample = part;
	}
	if (sample > FREQ_PERF_MAX)
		sample = FREQ_PERF_MAX;
	if (sample >= est)
		c->util_est = sample;
	else
		c->util_est = est - (est - (u32)sample) / 4;
}

/* A task's first activation is complete: fold it into its program's prior
 * by the util_est rule (up at once, down by 1/4), as for a task's own. */
static __always_inline void learn_prior(struct freq_task *tc)
{
	struct freq_prior *pr = bpf_map_lookup_elem(&prog_est, tc->prog);
	struct freq_prior fresh = { .est_ns = tc->act_ns, .tasks = 1 };

	if (!pr) {
		if (bpf_map_update_elem(&prog_est, tc->prog, &fresh, BPF_NOEXIST) == -7 /* -E2BIG */)
			aios_stat_inc(&stats, FREQ_STAT_PRIOR_FULL);
		return;
	}
	if (tc->act_ns >= pr->est_ns)
		pr->est_ns = tc->act_ns;
	else
		pr->est_ns -= (pr->est_ns - tc->act_ns) / 4;
	pr->tasks++;
}

void BPF_STRUCT_OPS(freq_stopping, struct task_struct *p, bool runnable)
{
	s32 cpu = scx_bpf_task_cpu(p);
	struct freq_cpu *c = cpu_of(cpu);
	struct freq_task *tc = task_of(p);
	bool out_of_work;

	u64 cur, now = bpf_ktime_get_ns();

	if (tc) {
		/* The task's own run time (sum_exec_runtime, brought up to date
		 * before ops.stopping), not the wall clock: interrupt time is not
		 * the task's, and under TCG it is a large share of a busy CPU. */
		u64 ran = p->se.sum_exec_runtime;

		if (ran > tc->run_start_ns)
			tc->act_ns += ran - tc->run_start_ns;
		if (!runnable) {	/* it sleeps: the activation is complete */
			if (!tc->activations)
				learn_prior(tc);
			tc->last_ns = tc->act_ns;
			if (!tc->activations || tc->act_ns >= tc->est_ns)
				tc->est_ns = tc->act_ns;
			else
				tc->est_ns -= (tc->est_ns - tc->act_ns) / 4;
			tc->activations++;
			tc->act_ns = 0;
		}
	}
	if (!c)
		return;
	cur = perf_cur(cpu);
	out_of_work = !runnable && !queued_on(cpu);
	bpf_spin_lock(&c->lock);
	__sync_fetch_and_add(&c->seq, 1);
	account_busy(c, cur, now);
	c->running = 0;
	if (out_of_work)
		util_est_update(c, now);
	__sync_fetch_and_add(&c->seq, 1);
	bpf_spin_unlock(&c->lock);
}

s32 BPF_STRUCT_OPS(freq_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	struct freq_prior *pr;
	struct freq_task *tc;

	tc = bpf_task_storage_get(&task_est, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tc)
		return -12;	/* -ENOMEM: sched_ext refuses the task rather than run it unaccounted */
	tc->queued_cpu = FREQ_NO_CPU;
	/* Its program: for a fork, still the parent's name (the child has not
	 * exec'd yet), which is what a new task is known by before it runs. */
	bpf_probe_read_kernel_str(tc->prog, sizeof(tc->prog), p->comm);
	pr = bpf_map_lookup_elem(&prog_est, tc->prog);
	if (pr && pr->est_ns) {
		tc->est_ns = tc->prior_ns = pr->est_ns;
		aios_stat_inc(&stats, FREQ_STAT_PRIOR_USED);
	}
	aios_stat_inc(&stats, FREQ_STAT_TASK_INIT);
	return 0;
}

/* The task leaves sched_ext (it exits, or the scheduler is unloaded): its
 * estimate leaves its queue's sum and its storage is freed now, not when the
 * task_struct is, so the live entries are exactly the tasks we schedule. */
void BPF_STRUCT_OPS(freq_exit_task, struct task_struct *p, struct scx_exit_task_args *args)
{
	struct freq_task *tc = bpf_task_storage_get(&task_est, p, 0, 0);

	if (!tc)
		return;
	account_queued(tc, FREQ_NO_CPU);
	bpf_task_storage_delete(&task_est, p);
	aios_stat_inc(&stats, FREQ_STAT_TASK_EXIT);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(freq_init)
{
	struct decay_timer_val *dt;
	struct bpf_iter_num it;
	s32 cpu, err = 0;
	u32 zero = 0;

	nr_cpus = scx_bpf_nr_cpu_ids();
	if (nr_cpus > FREQ_MAX_CPUS) {
		aios_error("freq supports at most %d CPUs, this machine has %u", FREQ_MAX_CPUS, nr_cpus);
		return -22;
	}
	aios_for(cpu, 0, nr_cpus, it) {
		err = scx_bpf_create_dsq(cpu, -1);
		if (err)
			break;
	}
	bpf_iter_num_destroy(&it);
	if (err)
		return err;
	dt = bpf_map_lookup_elem(&decay_timer, &zero);
	if (!dt)
		return -2;
	err = bpf_timer_init(&dt->timer, &decay_timer, FREQ_CLOCK_MONOTONIC);
	if (err)
		return err;
	err = bpf_timer_set_callback(&dt->timer, decay_timer_fn);
	if (err)
		return err;
	return bpf_timer_start(&dt->timer, window_ns, 0);
}

void BPF_STRUCT_OPS(freq_exit, struct scx_exit_info *ei)
{
	struct decay_timer_val *dt;
	u32 zero = 0;

	dt = bpf_map_lookup_elem(&decay_timer, &zero);
	if (dt)
		bpf_timer_cancel(&dt->timer);
	aios_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops freq_ops = {
	.select_cpu	= (void *)freq_select_cpu,
	.enqueue	= (void *)freq_enqueue,
	.dispatch	= (void *)freq_dispatch,
	.running	= (void *)freq_running,
	.tick		= (void *)freq_tick,
	.stopping	= (void *)freq_stopping,
	.init_task	= (void *)freq_init_task,
	.exit_task	= (void *)freq_exit_task,
	.init		= (void *)freq_init,
	.exit		= (void *)freq_exit,
	.name		= "freq",
};
