/* corpus: needs a kfunc the target kernel lacks.
 *
 * Written against the out-of-tree sched_ext patch set of 2023, whose
 * schedulers called scx_bpf_switch_all() from ops.init to move every task
 * to the BPF scheduler. Mainline never had that kfunc (SCX_OPS_SWITCH_PARTIAL
 * replaced it), and the declaration here is strong, not __weak: libbpf
 * would refuse the load with a relocation error. The static stage names the
 * missing kfunc before anything is loaded.
 */
#include "aios/scx.bpf.h"

#define SHARED_DSQ 0

void scx_bpf_switch_all(void) __ksym;

const volatile u64 slice_ns = 5000000;

void BPF_STRUCT_OPS(oldapi_enqueue, struct task_struct *p, u64 enq_flags)
{
	aios_dsq_insert(p, SHARED_DSQ, slice_ns, enq_flags);
}

void BPF_STRUCT_OPS(oldapi_dispatch, s32 cpu, struct task_struct *prev)
{
	aios_dsq_move_to_local(SHARED_DSQ);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(oldapi_init)
{
	scx_bpf_switch_all();
	return scx_bpf_create_dsq(SHARED_DSQ, -1);
}

void BPF_STRUCT_OPS(oldapi_exit, struct scx_exit_info *ei)
{
	aios_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops oldapi_ops = {
	.enqueue	= (void *)oldapi_enqueue,
	.dispatch	= (void *)oldapi_dispatch,
	.init		= (void *)oldapi_init,
	.exit		= (void *)oldapi_exit,
	.name		= "corpus_oldapi",
};
