/* corpus: rejected by the kernel verifier.
 *
 * A global FIFO that also counts enqueues per CPU in a fixed array, indexed
 * by the task's CPU without a bounds check: the verifier cannot prove the
 * index is below 16 and refuses the program ("invalid access to map value"
 * or an unbounded-offset complaint). Compiles cleanly with -Werror: only the
 * kernel catches it.
 */
#include "aios/scx.bpf.h"

#define SHARED_DSQ 0

const volatile u64 slice_ns = 5000000;
u64 enq_per_cpu[16];

void BPF_STRUCT_OPS(reject_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 cpu = p->thread_info.cpu;

	enq_per_cpu[cpu]++;		/* the bug: cpu is not checked against 16 */
	aios_dsq_insert(p, SHARED_DSQ, slice_ns, enq_flags);
}

void BPF_STRUCT_OPS(reject_dispatch, s32 cpu, struct task_struct *prev)
{
	aios_dsq_move_to_local(SHARED_DSQ);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(reject_init)
{
	return scx_bpf_create_dsq(SHARED_DSQ, -1);
}

void BPF_STRUCT_OPS(reject_exit, struct scx_exit_info *ei)
{
	aios_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops reject_ops = {
	.enqueue	= (void *)reject_enqueue,
	.dispatch	= (void *)reject_dispatch,
	.init		= (void *)reject_init,
	.exit		= (void *)reject_exit,
	.name		= "corpus_reject",
};
