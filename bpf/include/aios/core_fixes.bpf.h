/* Kernel drift, handled in one place with CO-RE.
 *
 * Every object is compiled once against one vmlinux.h and loaded on kernels
 * whose structs and kfuncs differ from it. Each difference we depend on is
 * fixed here, once, by a helper that asks the running kernel (through CO-RE
 * relocations or bpf_ksym_exists(), both resolved at load time, so the dead
 * branch costs nothing) instead of by #if on a version. Every fix names the
 * kernel change it follows. Objects call the aios_* helpers below and never
 * test a field or a kfunc's existence themselves.
 *
 * The first part needs only vmlinux.h (any object may include this header);
 * the second needs the sched_ext kfuncs and is compiled in when
 * aios/scx.bpf.h, which declares them, includes this header.
 */
#ifndef AIOS_CORE_FIXES_BPF_H
#define AIOS_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* ---- task_struct ---- */

/* Linux 5.14, "sched: Change task_struct::state": `long state` became
 * `unsigned int __state`. */
struct task_struct___pre_5_14 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline long aios_task_state(struct task_struct *p)
{
	/* Direct loads: tp_btf arguments are BTF pointers, so the verifier
	 * lets us read through them without a bpf_probe_read_kernel call each
	 * (a third of the telemetry switch program's time when it used one). */
	if (bpf_core_field_exists(p->__state))
		return p->__state;
	return BPF_CORE_READ((struct task_struct___pre_5_14 *)p, state);
}

/* Linux 5.16, "sched: move CPU field back into thread_info if
 * THREAD_INFO_IN_TASK=y": task_cpu() reads thread_info.cpu there (x86 and
 * most arches), task_struct.cpu before it. */
struct task_struct___cpu {
	unsigned int cpu;
} __attribute__((preserve_access_index));

static __always_inline s32 aios_task_cpu(struct task_struct *p)
{
	if (bpf_core_field_exists(p->thread_info.cpu))
		return p->thread_info.cpu;
	return BPF_CORE_READ((struct task_struct___cpu *)p, cpu);
}

/* Not a version but a config: the run queue a task is on, p->se.cfs_rq->rq
 * (every task has se.cfs_rq set to its CPU's cfs_rq by set_task_rq(),
 * whatever its class), exists only with CONFIG_FAIR_GROUP_SCHED; NULL
 * without it. We do not use `extern struct rq runqueues __ksym`: the kernel
 * resolves per-CPU ksyms through kallsyms, and kernels without
 * CONFIG_KALLSYMS_ALL (our 6.18 host) refuse the whole object with ENOENT. */
static __always_inline struct rq *aios_task_rq(struct task_struct *p)
{
	struct cfs_rq *cq = NULL;

	if (!bpf_core_field_exists(p->se.cfs_rq) || !bpf_core_field_exists(cq->rq))
		return NULL;
	return p->se.cfs_rq->rq;
}

/* Not a version but a config: p->sched_info (run_delay, the run-queue wait
 * so far; last_queued, when the current wait began, in rq clock) exists with
 * CONFIG_SCHED_INFO (SCHEDSTATS or TASK_DELAY_ACCT). Without it both read 0
 * and aios_has_sched_info() is false: the caller times waits itself. */
static __always_inline bool aios_has_sched_info(struct task_struct *p)
{
	return bpf_core_field_exists(p->sched_info);
}

static __always_inline u64 aios_task_run_delay(struct task_struct *p)
{
	if (!bpf_core_field_exists(p->sched_info))
		return 0;
	return p->sched_info.run_delay;
}

static __always_inline u64 aios_task_last_queued(struct task_struct *p)
{
	if (!bpf_core_field_exists(p->sched_info))
		return 0;
	return p->sched_info.last_queued;
}

#endif /* AIOS_CORE_FIXES_BPF_H */

/* ---- sched_ext (objects that include aios/scx.bpf.h) ---- */
#if defined(AIOS_SCX_BPF_H) && !defined(AIOS_CORE_FIXES_SCX)
#define AIOS_CORE_FIXES_SCX

/* struct scx_exit_info gained exit_cpu and flags after 6.12 (whose struct
 * has neither; the pinned 7.3.4 has both): -1 / 0 where absent. */
static __always_inline s32 aios_exit_info_cpu(struct scx_exit_info *ei)
{
	if (bpf_core_field_exists(ei->exit_cpu))
		return BPF_CORE_READ(ei, exit_cpu);
	return -1;
}

static __always_inline u64 aios_exit_info_flags(struct scx_exit_info *ei)
{
	if (bpf_core_field_exists(ei->flags))
		return BPF_CORE_READ(ei, flags);
	return 0;
}

/* Linux 6.13, "sched_ext: Rename scx_bpf_dispatch[_vtime]() to
 * scx_bpf_dsq_insert[_vtime]()" and "sched_ext: Rename scx_bpf_consume() to
 * scx_bpf_dsq_move_to_local()"; 7.x then added the bool-returning ___v2
 * variants that take enqueue flags. The newest name the kernel has wins. */
static __always_inline void aios_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_insert___v2___aios))
		scx_bpf_dsq_insert___v2___aios(p, dsq_id, slice, enq_flags);
	else if (bpf_ksym_exists(scx_bpf_dsq_insert))
		scx_bpf_dsq_insert(p, dsq_id, slice, enq_flags);
	else
		scx_bpf_dispatch(p, dsq_id, slice, enq_flags);
}

static __always_inline void aios_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime,
						  u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_insert_vtime))
		scx_bpf_dsq_insert_vtime(p, dsq_id, slice, vtime, enq_flags);
	else
		scx_bpf_dispatch_vtime(p, dsq_id, slice, vtime, enq_flags);
}

static __always_inline bool aios_dsq_move_to_local(u64 dsq_id)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local___v2___aios))
		return scx_bpf_dsq_move_to_local___v2___aios(dsq_id, 0);
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local))
		return scx_bpf_dsq_move_to_local(dsq_id);
	return scx_bpf_consume(dsq_id);
}

/* scx_bpf_dsq_peek() came after 6.12 (the pinned 7.3.4 has it): a caller
 * that cannot look at a queue's head without it asks first. */
static __always_inline bool aios_has_dsq_peek(void)
{
	return bpf_ksym_exists(scx_bpf_dsq_peek);
}

#endif /* AIOS_CORE_FIXES_SCX */
