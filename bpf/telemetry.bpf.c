/* telemetry: per-task and per-CPU scheduler telemetry, plus migration and
 * wakeup event streams.
 *
 * What it records (tp_btf programs, no kprobes, no sched_ext needed):
 *  - task_stats (HASH keyed by pid = thread id): on-CPU time, run-queue wait
 *    (sum, count, per-interval max, log2 histogram), wakeups, voluntary and
 *    involuntary switches, migrations, last CPU, load weight, nice, comm,
 *    tgid, cgroup v2 id. All counters are cumulative; user space diffs them.
 *    "Wait" runs from being queued (woken, new, or switched out while still
 *    runnable: preempted, yielded) until the next switch-in. Where the
 *    kernel keeps sched_info (CONFIG_SCHED_INFO: run_delay, last_queued),
 *    each wait is read from it at the switch-in, the run_delay the kernel
 *    adds there, and no wakeup hook touches the task's entry (the entry's
 *    cache misses were most of the wakeup program's cost); without it the
 *    wait starts at the sched_wakeup tracepoints, as before. Either way a
 *    wait whose switch finds the rq clock stale (clock_is_stale: after a
 *    preempting wakeup __schedule skips its update) is timed by ktime: the
 *    kernel's run_delay counts such a wait as 0, ours does not.
 *    A wakeup is counted when it ends a sleep, at the switch-in after a
 *    voluntary switch-out (or a new task's first): a wakeup of a task
 *    still on its CPU or still queued changes nothing and is not counted.
 *  - cpu_stats (ARRAY indexed by CPU): busy and idle time (idle = pid 0 on
 *    the CPU), switches, migrations in/out, rq->nr_running sampled at every
 *    switch (sum, count, per-interval max).
 *  - migration_ring / wakeup_ring (ring buffers): one record per
 *    sched_migrate_task / sched_wakeup(_new), with run-queue length and load
 *    of the CPUs involved. Wakeup records can be turned off (wakeup_events).
 *  - switch_ring (ring buffer, switch_events): one record per sched_switch,
 *    the raw stream per-CPU timelines and exact wait percentiles need.
 *  - Time: switches are timed by the rq clock the scheduler has just
 *    updated (rq->clock, sched_clock) plus a per-CPU offset to ktime
 *    (CLOCK_MONOTONIC, which user space reads) taken with one
 *    bpf_ktime_get_ns() at the CPU's first switch of each 2^24 ns window:
 *    a ktime read was a sixth of the switch program's cost. A switch whose
 *    clock update was skipped (above) reads ktime itself and never sets
 *    the offset (a stale clock would skew a whole window). The two clocks
 *    drift by parts per million; a timestamp is the time __schedule read
 *    the clock, a microsecond or so before the tracepoint, and a CPU's
 *    switch times never go back (a resync that would is held at +1 ns).
 *    Across CPUs, times agree to within about that microsecond. Wakeups
 *    are timed the same way by the woken task's rq clock (ttwu has just
 *    updated it) and the waking CPU's offset; migrations by
 *    bpf_ktime_get_ns().
 *  - Every ring notifies the reader only when a quarter full (a wakeup per
 *    record would switch the reader in, which records a switch, which wakes
 *    it); the reader otherwise drains on its own timer, in bulk.
 *
 * Sampled streams. The switch and wakeup streams can be far more than a
 * reader can keep (hackbench: ~100,000 switches per CPU-second), so with
 * stream_budget set each CPU records them by whole windows of 2^24 ns: at a
 * new window it picks the smallest shift such that the previous window's
 * events >> shift fit the budget, and records the whole window with
 * probability 2^-shift (each record carries sample_weight = 2^shift). Whole
 * windows keep a CPU's switch chain intact within each (timelines); the
 * weights keep totals and distributions estimated from the stream unbiased.
 * The per-task and per-CPU maps above see every event whatever the rate;
 * aios_cpu_stats.stream counts events seen and records made per CPU.
 *  - drops (PERCPU_ARRAY): reserve failures per ring, events that found
 *    the task map full, and unpaired switches (below). Nothing is lost
 *    silently.
 *
 * Exit protocol (so no interval loses data): sched_process_free, which the
 * kernel fires only after the dead task's final switch-out, marks the entry
 * AIOS_TASK_EXITED; user space delivers that entry's last delta and then
 * deletes it. Entries are never deleted here.
 *
 * Per-interval maxima: user space bumps epoch[0] at each snapshot; maxima go
 * to slot (epoch & 1) and are reset when a new epoch first touches the slot,
 * so the previous interval's slot stays readable until the next snapshot.
 *
 * Known blind spots:
 *  - time before the first switch we see is unknown: a task running when we
 *    attach has no switch-in time, a CPU that has not switched has no busy/
 *    idle split, and waits that began before attach are not measured;
 *  - a run or idle stretch still in progress is not in the map; user space
 *    adds it from oncpu_since_ns / last_switch_ns at read time;
 *  - the switch stream is not always paired: on our 6.18 host a few tasks
 *    are switched in by sched_switch but leave without one naming them as
 *    prev. We notice when a CPU's next prev is not the task we last put
 *    there, end that task's run uncredited and count AIOS_DROP_UNPAIRED_SWITCH;
 *    the CPU's busy/idle split follows the tracepoint's prev;
 *  - a pid reused within one interval resets its entry (the old task's last
 *    unread delta is lost); with pid_max >= 32768 that needs a fork storm;
 *  - per-task updates are plain (not atomic): the scheduler serialises a
 *    task's events under its rq/pi locks, so races are rare and cost counts,
 *    never memory safety;
 *  - a CPU's struct rq is learnt at its own switches (p->se.cfs_rq->rq, see
 *    aios_task_rq), so events naming a CPU that has not switched yet carry
 *    nr_running/load -1 (null in the tables);
 *  - rq->nr_running counts tasks of every class on that rq, including the
 *    running one; under sched_ext, tasks parked in BPF-side queues are not
 *    on any rq and do not show;
 *  - weight is p->se.load.weight as the kernel stores it: on 64-bit kernels
 *    scaled up by 2^10 (nice 0 = 1048576), not the 1024 of the nice table.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "aios/core_fixes.bpf.h"
#include "aios/telemetry.h"

char _license[] SEC("license") = "GPL";

#define AIOS_EEXIST 17
#define TASK_RUNNING 0

/* Tunable, set from Python before load: wakeups are the most frequent event. */
const volatile bool wakeup_events = true;
/* Record one wakeup event in wakeup_sample (chosen at random, so the stream
 * stays an unbiased sample): the per-task wakeup counts and wait histograms
 * are aggregated in maps from every wakeup regardless, only the event stream
 * is thinned. 1 records all of them. */
const volatile u32 wakeup_sample = 1;
/* The collector's own process: its wakeups and migrations are not recorded
 * as events (they are still aggregated), or draining the rings would feed
 * the rings, a loop that swamps slow machines (measured under TCG). */
const volatile s32 ignore_tgid = 0;
/* Take run-queue waits from the kernel's sched_info (set by user space when
 * the running kernel's task_struct has it). Otherwise tel_wakeup must see
 * every wakeup to start the wait clock. */
const volatile bool kernel_waits = false;
/* One record per context switch: the heaviest stream, so it can be off. */
const volatile bool switch_events = false;
/* Records per window (2^AIOS_WINDOW_SHIFT ns) per CPU per sampled stream;
 * 0 records every event. */
const volatile u32 stream_budget = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIOS_MAX_TASKS);
	__type(key, u32);
	__type(value, struct aios_task_stats);
} task_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIOS_MAX_CPUS);
	__type(key, u32);
	__type(value, struct aios_cpu_stats);
} cpu_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} migration_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} wakeup_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} switch_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AIOS_NR_DROPS);
	__type(key, u32);
	__type(value, u64);
} drops SEC(".maps");

/* epoch[0]: the interval number, bumped by user space at each snapshot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} epoch SEC(".maps");

/* Template for new task entries. Never written: a .bss map value can be
 * passed to bpf_map_update_elem, a 300-byte stack struct would crowd the
 * 512-byte stack. It also anchors struct aios_task_stats in BTF. */
struct aios_task_stats zero_task = {};

/* Anchor the types only user space reads, so clang emits them into BTF. */
enum aios_telemetry_drop __aios_btf_drop __attribute__((unused));
enum aios_task_flag __aios_btf_flag __attribute__((unused));
enum aios_stream_kind __aios_btf_stream __attribute__((unused));
struct aios_cpu_stats __aios_btf_cpu __attribute__((unused));
struct aios_migration_event __aios_btf_mig __attribute__((unused));
struct aios_wakeup_event __aios_btf_wake __attribute__((unused));
struct aios_switch_event __aios_btf_switch __attribute__((unused));

static __always_inline void drop(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&drops, &idx);

	if (v)
		(*v)++;
}

static __always_inline u32 cur_epoch(void)
{
	u32 zero = 0, *e = bpf_map_lookup_elem(&epoch, &zero);

	return e ? *e : 0;
}

static __always_inline u32 log2_u64(u64 v)
{
	u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

/* Another CPU's rq, as that CPU's last switch recorded it (NULL before). */
static __always_inline struct rq *cpu_rq(s32 cpu)
{
	u32 key = cpu;
	struct aios_cpu_stats *cs = bpf_map_lookup_elem(&cpu_stats, &key);

	return cs ? (struct rq *)cs->rq_addr : NULL;
}

static __always_inline s32 rq_nr_running(s32 cpu)
{
	struct rq *rq = cpu_rq(cpu);

	return rq ? (s32)BPF_CORE_READ(rq, nr_running) : -1;
}

static __always_inline s64 rq_load(s32 cpu)
{
	struct rq *rq = cpu_rq(cpu);

	return rq ? (s64)BPF_CORE_READ(rq, cfs.avg.load_avg) : -1;
}

/* The kernel's run-queue wait total for p so far (0 without sched_info). */
static __always_inline u64 kernel_run_delay(struct task_struct *p)
{
	return kernel_waits ? aios_task_run_delay(p) : 0;
}

/* The task's entry, created (zeroed, identity filled) on first sight;
 * *made says whether it was created by this call. */
static struct aios_task_stats *task_entry_made(struct task_struct *p, u32 pid, bool *made)
{
	u64 start = p->start_time;
	struct aios_task_stats *ts = bpf_map_lookup_elem(&task_stats, &pid);
	long err;

	if (ts && ts->start_ns == start)
		return ts;
	if (ts) /* pid reused by a new task: start over */
		err = bpf_map_update_elem(&task_stats, &pid, &zero_task, BPF_EXIST);
	else
		err = bpf_map_update_elem(&task_stats, &pid, &zero_task, BPF_NOEXIST);
	if (err && err != -AIOS_EEXIST) {
		drop(AIOS_DROP_TASK_MAP_FULL);
		return NULL;
	}
	ts = bpf_map_lookup_elem(&task_stats, &pid);
	if (!ts)
		return NULL;
	if (ts->start_ns != start) {
		ts->pid = pid;
		ts->tgid = p->tgid;
		ts->last_cpu = -1;
		ts->start_ns = start;
		/* Waits are counted from here on (one queued now is, in full). */
		ts->run_delay_ns = kernel_run_delay(p);
		*made = true;
	}
	return ts;
}

static __always_inline struct aios_task_stats *task_entry(struct task_struct *p, u32 pid)
{
	bool made = false;

	return task_entry_made(p, pid, &made);
}

/* Fields that can change while the task lives (exec, renice, cgroup move),
 * read at the task's first switch-in of each interval: the cgroup id is four
 * dependent loads, often cache misses, and was read at every switch-in. A
 * row's comm and cgroup are therefore those of its interval's first run. */
static __always_inline void refresh_identity(struct aios_task_stats *ts, struct task_struct *p,
					     u32 ep)
{
	if (ts->ident_epoch == ep + 1)
		return;
	ts->ident_epoch = ep + 1;
	/* comm is NUL-padded (set with strscpy_pad): a plain copy is a string. */
	__builtin_memcpy(ts->comm, p->comm, sizeof(ts->comm));
	ts->cgroup_id = p->cgroups->dfl_cgrp->kn->id;
	ts->weight = p->se.load.weight;
	ts->nice = p->static_prio - 120;
}

static __always_inline void record_wait(struct aios_task_stats *ts, u64 wait, u32 ep)
{
	u32 b = wait ? log2_u64(wait) : 0;
	u32 s = ep & 1;

	if (b >= AIOS_WAIT_HIST_BUCKETS)
		b = AIOS_WAIT_HIST_BUCKETS - 1;
	ts->wait_ns += wait;
	ts->wait_count++;
	ts->wait_hist[b & (AIOS_WAIT_HIST_BUCKETS - 1)]++;
	if (ts->wait_max_epoch[s] != ep) {
		ts->wait_max_epoch[s] = ep;
		ts->wait_max_ns[s] = 0;
	}
	if (wait > ts->wait_max_ns[s])
		ts->wait_max_ns[s] = wait;
}

/* The task ran after a sleep (or is new and ran): that is a wakeup. */
static __always_inline void end_sleep(struct aios_task_stats *ts)
{
	if (ts->flags & AIOS_TASK_ASLEEP) {
		ts->wakeups++;
		ts->flags &= ~AIOS_TASK_ASLEEP;
	}
}

/* The wait that ends as `next` is switched in, from the kernel's sched_info:
 * what run_delay gained since our last look (waits on other CPUs' queues
 * before a migration, which the kernel adds at the dequeue) plus what the
 * kernel is about to add, rq_clock - last_queued (sched_info_arrive runs
 * right after this tracepoint, with the same rq clock). When that clock
 * is stale (see clock_is_stale) the kernel adds 0 for a wait that lasted
 * from the enqueue to now: stale_owed, measured by ktime, is counted
 * instead, so our waits are the kernel's run_delay plus what it misses.
 * -1 when the entry was made at this switch-in: the wait may have begun
 * before we attached, as the wakeup-hook path did not measure either. */
static __always_inline s64 kernel_wait(struct aios_task_stats *ts, struct task_struct *next,
				       u64 rq_clock, u64 queued, s64 stale_owed, bool fresh)
{
	u64 run_delay = aios_task_run_delay(next);
	u64 owed = queued && rq_clock > queued ? rq_clock - queued : 0;
	u64 seen = ts->run_delay_ns;

	/* What the kernel's run_delay will read after sched_info_arrive. */
	ts->run_delay_ns = run_delay + owed;
	if (fresh || run_delay < seen)
		return -1;
	return run_delay - seen + (stale_owed >= 0 ? (u64)stale_owed : owed);
}

/* A wait the kernel has counted and we have not: a switch-in this host's
 * kernel did not trace (our 6.18 host hides a few) ends a wait that run_delay
 * holds, and our next look, at the task's next switch-in, would count it;
 * for a task's last run there is none. So where p is known to be running
 * (its switch-out, its exit) any run_delay beyond ours is such a wait.
 * (CI: a spinner's waits fell 2.4 ms, one slice, short of its run_delay.) */
static __always_inline void catch_up_waits(struct aios_task_stats *ts, struct task_struct *p, u32 ep)
{
	/* 0 on the wakeup-hook path, where run_delay_ns stays 0 too. */
	u64 run_delay = kernel_run_delay(p);

	if (run_delay > ts->run_delay_ns) {
		record_wait(ts, run_delay - ts->run_delay_ns, ep);
		ts->run_delay_ns = run_delay;
	}
}

/* Whether this switch's rq clock stopped at `next`'s enqueue. A wakeup that
 * preempts the running task (an idle CPU's idle task included) sets
 * RQCF_REQ_SKIP, and __schedule then skips its clock update: the clock
 * still reads the enqueue's update, rq_clock == last_queued, and the
 * kernel's sched_info counts the whole wait as 0 (CI: a sleeper's 51 waits
 * all 0 ns). The flag itself is reset to RQCF_UPDATED before the pick
 * (since 6.7), so the equality is the only trace of the skip we can see. */
static __always_inline bool clock_is_stale(u64 rq_clock, u64 queued)
{
	return queued && rq_clock == queued;
}

/* Now, for a switch on this CPU: rq_clock (the rq's sched_clock, fresh in
 * __schedule unless the update was skipped) moved to ktime's base by this
 * CPU's offset, re-read at its first switch of each window; `fresh`, a
 * ktime read already made (the clock is stale), or ktime itself without
 * an rq clock. A stale clock never sets the offset. */
static __always_inline u64 switch_now(struct aios_cpu_stats *cs, u64 rq_clock, u64 fresh)
{
	u64 now;

	if (fresh)
		now = fresh;
	else if (!rq_clock)
		return bpf_ktime_get_ns();
	else
		now = rq_clock + cs->clock_off;
	if (!fresh && (!cs->clock_window || now >> AIOS_WINDOW_SHIFT != cs->clock_window)) {
		now = bpf_ktime_get_ns();
		cs->clock_off = now - rq_clock;
		cs->clock_window = now >> AIOS_WINDOW_SHIFT;
	}
	/* The offset read at a resync carries the time since the rq clock's
	 * update (the pick, ~1 us): never let that step this CPU's switches
	 * out of order (the stream's per-CPU chains and timelines rely on it). */
	return now > cs->last_switch_ns ? now : cs->last_switch_ns + 1;
}

/* Now, for a wakeup of p seen on the CPU of cs: p's rq clock (its new rq's,
 * updated by ttwu before the tracepoint) on ktime's base; *clock is that raw
 * clock (0 when ktime was read instead), kept to tell a stale switch. */
static __always_inline u64 wake_now(struct aios_cpu_stats *cs, struct task_struct *p,
				    u64 *clock)
{
	struct rq *rq = aios_task_rq(p);
	u64 rq_clock = rq ? rq->clock : 0;

	*clock = 0;
	if (!rq_clock || !cs->clock_window)
		return bpf_ktime_get_ns();
	*clock = rq_clock;
	return rq_clock + cs->clock_off;
}

/* Per-CPU part of a switch. Returns the pid this CPU ran according to our
 * previous switch when that is not the tracepoint's prev (0 otherwise). */
static __always_inline u32 cpu_switch(struct aios_cpu_stats *cs, struct rq *rq,
				      u32 prev_pid, u32 next_pid, u64 now, u32 ep)
{
	u32 nr, s = ep & 1, unpaired = 0;

	if (cs->last_switch_ns && cs->curr_pid != prev_pid)
		unpaired = cs->curr_pid ? cs->curr_pid : (u32)-1;
	if (cs->last_switch_ns && now > cs->last_switch_ns) {
		if (prev_pid)
			cs->busy_ns += now - cs->last_switch_ns;
		else
			cs->idle_ns += now - cs->last_switch_ns;
	}
	cs->last_switch_ns = now;
	cs->curr_pid = next_pid;
	cs->switches++;

	if (!rq) {
		rq = (struct rq *)cs->rq_addr;
		if (!rq)
			return unpaired;
		nr = BPF_CORE_READ(rq, nr_running);
	} else {
		cs->rq_addr = (u64)rq;
		nr = rq->nr_running;	/* a BTF pointer: a direct load */
	}
	/* Sampled after the pick: counts next (running) plus the queued. */
	cs->rq_len_samples++;
	cs->rq_len_sum += nr;
	if (cs->rq_max_epoch[s] != ep) {
		cs->rq_max_epoch[s] = ep;
		cs->rq_len_max[s] = 0;
	}
	if (nr > cs->rq_len_max[s])
		cs->rq_len_max[s] = nr;
	return unpaired;
}

/* prev_state as the sched_switch tracepoint prints it (the kernel's
 * __trace_sched_switch_state): a preempted task is TASK_REPORT_MAX (0x100,
 * "R+"); otherwise one bit, 1 << (fls(state & TASK_REPORT) - 1), with
 * TASK_IDLE reported as 0x80 ("I") and an RT-lock wait as "D". */
#define AIOS_TASK_REPORT	0x7f
#define AIOS_TASK_IDLE		0x402	/* TASK_UNINTERRUPTIBLE | TASK_NOLOAD */
#define AIOS_TASK_RTLOCK_WAIT	0x1000
static __always_inline s64 ftrace_prev_state(bool preempt, struct task_struct *prev)
{
	long st;
	u32 s, bit = 0x40;

	if (preempt)
		return 0x100;
	st = aios_task_state(prev);
	if (st == AIOS_TASK_IDLE)
		return 0x80;
	if (st == AIOS_TASK_RTLOCK_WAIT)
		return 0x2;
	s = ((u32)st | (u32)prev->exit_state) & AIOS_TASK_REPORT;
	if (!s)
		return 0;
	/* Highest set bit of 7: a bounded loop the verifier unrolls. */
	for (int i = 0; i < 7; i++) {
		if (s & bit)
			return bit;
		bit >>= 1;
	}
	return 0;
}

/* The weight of this event's record in stream k on this CPU, 0 when it is
 * not recorded (see "Sampled streams" above). */
static __always_inline u32 stream_sample(struct aios_cpu_stats *cs, u32 k, u64 now)
{
	struct aios_stream *st;
	u64 w = now >> AIOS_WINDOW_SHIFT;
	u32 c, shift = 0;

	if (k >= AIOS_NR_STREAMS)
		return 0;
	st = &cs->stream[k];
	st->seen++;
	if (!stream_budget)
		return 1;
	if (st->window != w) {
		c = st->window + 1 == w ? st->count : 0;
		for (int i = 0; i < 24; i++) {
			if ((c >> shift) <= stream_budget)
				break;
			shift++;
		}
		st->window = w;
		st->count = 0;
		st->shift = shift;
		st->on = !(bpf_get_prandom_u32() & ((1u << shift) - 1));
	}
	st->count++;
	return st->on ? 1u << (st->shift & 31) : 0;
}

/* Submit, waking the reader only when this record takes the ring past a
 * quarter full. Waking it on every record above the mark (as we first did)
 * queued an irq_work per record while a starved reader lagged: ~4 us per
 * switch under hackbench, 15x the program's own cost. The reader also
 * drains on its own timer, so one wakeup per crossing is enough. */
static __always_inline void submit(void *ring, void *e, u64 size)
{
	u64 avail = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	u64 mark = bpf_ringbuf_query(ring, BPF_RB_RING_SIZE) / 4;

	bpf_ringbuf_submit(e, avail >= mark && avail < mark + size + 8 ?
			   BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void emit_switch(struct aios_cpu_stats *cs, u32 cpu, u64 now, bool preempt,
					struct task_struct *prev, u32 prev_pid,
					struct task_struct *next, u32 next_pid, s64 next_wait)
{
	u32 weight = stream_sample(cs, AIOS_STREAM_SWITCHES, now);
	struct aios_switch_event *e;

	if (!weight)
		return;
	e = bpf_ringbuf_reserve(&switch_ring, sizeof(*e), 0);
	if (!e) {
		drop(AIOS_DROP_SWITCH_RING);
		return;
	}
	cs->stream[AIOS_STREAM_SWITCHES].recorded++;
	e->ts_ns = now;
	e->cpu = cpu;
	e->prev_pid = prev_pid;
	e->prev_tgid = prev->tgid;
	e->next_pid = next_pid;
	e->next_tgid = next->tgid;
	e->prev_prio = prev->prio;
	e->next_prio = next->prio;
	e->sample_weight = weight;
	e->prev_state = ftrace_prev_state(preempt, prev);
	e->next_wait_ns = next_wait;
	__builtin_memcpy(e->prev_comm, prev->comm, sizeof(e->prev_comm));
	__builtin_memcpy(e->next_comm, next->comm, sizeof(e->next_comm));
	submit(&switch_ring, e, sizeof(*e));
}

SEC("tp_btf/sched_switch")
int BPF_PROG(tel_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u32 cpu = bpf_get_smp_processor_id();
	u32 prev_pid = prev->pid, next_pid = next->pid;
	u32 ep = cur_epoch();
	struct aios_cpu_stats *cs = bpf_map_lookup_elem(&cpu_stats, &cpu);
	struct rq *rq = aios_task_rq(prev);	/* prev is still on this CPU's rq */
	/* A BTF pointer: direct loads. __schedule updated the clock before the pick. */
	u64 rq_clock = rq ? rq->clock : 0, now, queued = 0, since = 0, fresh = 0;
	struct aios_task_stats *ts, *nts = NULL;
	s64 next_wait = -1, stale_owed = -1;
	bool made = false, sched_info = false;
	u32 unpaired;

	if (!cs)
		return 0;
	if (next_pid) {
		nts = task_entry_made(next, next_pid, &made);
		sched_info = kernel_waits && rq_clock && aios_has_sched_info(next);
		/* The rq clock the wait now ending was stamped from. */
		if (sched_info)
			since = queued = aios_task_last_queued(next);
		else if (nts && nts->wait_since_ns)
			since = nts->wait_since_clock;
		/* One ktime read, on these switches only: it times both the
		 * switch and a wait the stale clock would count as 0. */
		if (clock_is_stale(rq_clock, since))
			fresh = bpf_ktime_get_ns();
		if (fresh && sched_info)
			stale_owed = cs->clock_window && fresh > queued + cs->clock_off ?
				     fresh - (queued + cs->clock_off) : 0;
	}
	now = switch_now(cs, rq_clock, fresh);
	unpaired = cpu_switch(cs, rq, prev_pid, next_pid, now, ep);
	if (unpaired) {
		/* The task we last switched in here left unseen (some kernels
		 * do not trace every switch; our 6.18 host hides a few tasks).
		 * We do not know when: end its run without crediting time. */
		drop(AIOS_DROP_UNPAIRED_SWITCH);
		ts = bpf_map_lookup_elem(&task_stats, &unpaired);
		if (ts && ts->last_cpu == (s32)cpu)
			ts->oncpu_since_ns = 0;
	}

	if (prev_pid) {
		ts = task_entry(prev, prev_pid);
		if (ts) {
			if (ts->oncpu_since_ns && now > ts->oncpu_since_ns) {
				ts->last_run_ns = now - ts->oncpu_since_ns;
				ts->oncpu_ns += ts->last_run_ns;
			}
			ts->oncpu_since_ns = 0;
			ts->last_switch_out_ns = now;
			/* A renice during this run (or between fork and exec) is
			 * seen here even if the task never runs again. */
			ts->weight = prev->se.load.weight;
			ts->nice = prev->static_prio - 120;
			/* Still asleep by our count, yet it ran: its switch-in
			 * was not traced (our 6.18 host hides a few), so the
			 * sleep it ended is counted here, and the wait too. */
			end_sleep(ts);
			catch_up_waits(ts, prev, ep);
			/* The kernel's own nvcsw/nivcsw rule: a switch is voluntary
			 * when not a preemption and the task left TASK_RUNNING (it
			 * is dequeued); otherwise it stays runnable and waits. */
			if (!preempt && aios_task_state(prev) != TASK_RUNNING) {
				ts->voluntary_switches++;
				ts->flags |= AIOS_TASK_ASLEEP;
				ts->wait_since_ns = 0;
			} else {
				ts->involuntary_switches++;
				ts->wait_since_ns = now;
				ts->wait_since_clock = rq_clock;
			}
		}
	}
	if (next_pid) {
		ts = nts;
		if (ts) {
			if (sched_info) {
				next_wait = kernel_wait(ts, next, rq_clock, queued, stale_owed, made);
				if (next_wait >= 0)
					record_wait(ts, next_wait, ep);
			} else if (ts->wait_since_ns) {
				/* A wake stamped by ktime (no rq clock or offset yet)
				 * just after __schedule read the clock: ktime times it. */
				u64 end = now > ts->wait_since_ns ? now : bpf_ktime_get_ns();

				next_wait = end > ts->wait_since_ns ? end - ts->wait_since_ns : 0;
				record_wait(ts, next_wait, ep);
			}
			end_sleep(ts);
			ts->wait_since_ns = 0;
			ts->oncpu_since_ns = now;
			ts->last_cpu = cpu;
			refresh_identity(ts, next, ep);
		}
	}
	if (switch_events)
		emit_switch(cs, cpu, now, preempt, prev, prev_pid, next, next_pid, next_wait);
	return 0;
}

static __always_inline int on_wake(struct task_struct *p, u32 is_new)
{
	u32 pid = p->pid, cpu = bpf_get_smp_processor_id(), weight;
	struct aios_cpu_stats *cs = bpf_map_lookup_elem(&cpu_stats, &cpu);
	struct aios_task_stats *ts = NULL;
	struct aios_wakeup_event *e;
	s32 target;
	u64 now, clock;

	if (!pid || !cs)
		return 0;
	now = wake_now(cs, p, &clock);
	if (is_new || !kernel_waits) {
		/* Forks are rare: a new task's entry is made here, so that its
		 * first run counts as a wakeup and its first wait is measured. */
		ts = task_entry(p, pid);
		if (ts && is_new)
			ts->flags |= AIOS_TASK_ASLEEP;
		/* A task woken while still on its CPU (before it reached
		 * schedule()) does not wait; its switch-out decides. */
		if (ts && !kernel_waits && !ts->oncpu_since_ns) {
			ts->wait_since_ns = now;
			ts->wait_since_clock = clock;
		}
	}
	if (!wakeup_events)
		return 0;
	if (ignore_tgid && p->tgid == ignore_tgid)
		return 0;
	weight = stream_sample(cs, AIOS_STREAM_WAKEUPS, now);
	if (!weight)
		return 0;
	if (wakeup_sample > 1 && bpf_get_prandom_u32() % wakeup_sample)
		return 0;
	e = bpf_ringbuf_reserve(&wakeup_ring, sizeof(*e), 0);
	if (!e) {
		drop(AIOS_DROP_WAKEUP_RING);
		return 0;
	}
	cs->stream[AIOS_STREAM_WAKEUPS].recorded++;
	if (!ts)	/* only recorded wakeups need the entry (kernel_waits) */
		ts = bpf_map_lookup_elem(&task_stats, &pid);
	target = aios_task_cpu(p);
	e->ts_ns = now;
	e->pid = pid;
	e->tgid = p->tgid;
	__builtin_memcpy(e->comm, p->comm, sizeof(e->comm));
	e->target_cpu = target;
	e->prev_cpu = ts && !is_new ? ts->last_cpu : -1;
	e->waker_cpu = cpu;
	e->target_nr_running = rq_nr_running(target);
	e->since_last_ran_ns = ts && ts->last_switch_out_ns && now >= ts->last_switch_out_ns ?
			       (s64)(now - ts->last_switch_out_ns) : -1;
	e->weight = p->se.load.weight;
	e->is_new = is_new;
	e->sample_weight = weight * wakeup_sample;
	submit(&wakeup_ring, e, sizeof(*e));
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(tel_wakeup, struct task_struct *p)
{
	return on_wake(p, 0);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(tel_wakeup_new, struct task_struct *p)
{
	return on_wake(p, 1);
}

SEC("tp_btf/sched_migrate_task")
int BPF_PROG(tel_migrate, struct task_struct *p, int dest_cpu)
{
	u32 pid = p->pid;
	u64 now = bpf_ktime_get_ns();
	s32 src = aios_task_cpu(p);
	u32 key;
	struct aios_cpu_stats *cs;
	struct aios_task_stats *ts;
	struct aios_migration_event *e;

	/* The migrating CPU is often neither source nor destination. */
	key = src;
	cs = bpf_map_lookup_elem(&cpu_stats, &key);
	if (cs)
		__sync_fetch_and_add(&cs->migrations_out, 1);
	key = dest_cpu;
	cs = bpf_map_lookup_elem(&cpu_stats, &key);
	if (cs)
		__sync_fetch_and_add(&cs->migrations_in, 1);
	if (!pid)
		return 0;
	ts = task_entry(p, pid);
	if (ts)
		ts->migrations++;
	if (ignore_tgid && p->tgid == ignore_tgid)
		return 0;

	e = bpf_ringbuf_reserve(&migration_ring, sizeof(*e), 0);
	if (!e) {
		drop(AIOS_DROP_MIGRATION_RING);
		return 0;
	}
	e->ts_ns = now;
	e->pid = pid;
	e->tgid = p->tgid;
	__builtin_memcpy(e->comm, p->comm, sizeof(e->comm));
	e->src_cpu = src;
	e->dst_cpu = dest_cpu;
	e->src_nr_running = rq_nr_running(src);
	e->dst_nr_running = rq_nr_running(dest_cpu);
	e->src_load = rq_load(src);
	e->dst_load = rq_load(dest_cpu);
	e->runtime_ns = ts && ts->last_run_ns ? (s64)ts->last_run_ns : -1;
	e->since_last_ran_ns = ts && ts->last_switch_out_ns && now >= ts->last_switch_out_ns ?
			       (s64)(now - ts->last_switch_out_ns) : -1;
	e->weight = p->se.load.weight;
	e->nr_migrations = p->se.nr_migrations;
	submit(&migration_ring, e, sizeof(*e));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tel_exit, struct task_struct *p)
{
	u32 pid = BPF_CORE_READ(p, pid);
	struct aios_task_stats *ts = bpf_map_lookup_elem(&task_stats, &pid);

	if (ts && ts->start_ns == BPF_CORE_READ(p, start_time)) {
		ts->flags |= AIOS_TASK_EXITING;
		/* Before the parent can learn of the exit: its last waits
		 * are in the entry when it reads ours. */
		catch_up_waits(ts, p, cur_epoch());
	}
	return 0;
}

/* Fired after an RCU grace period once the task is reaped, which is after
 * its final switch-out: the entry can no longer change. */
SEC("tp_btf/sched_process_free")
int BPF_PROG(tel_free, struct task_struct *p)
{
	u32 pid = BPF_CORE_READ(p, pid);
	struct aios_task_stats *ts = bpf_map_lookup_elem(&task_stats, &pid);

	if (ts && ts->start_ns == BPF_CORE_READ(p, start_time))
		ts->flags |= AIOS_TASK_EXITED;
	return 0;
}
