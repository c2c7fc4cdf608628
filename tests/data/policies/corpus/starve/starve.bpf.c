/* corpus: stalls under load; the watchdog must eject it.
 *
 * Two queues with strict priority: tasks at nice 0 or better go to HIGH,
 * niced tasks to LOW, and a CPU takes from LOW only when HIGH is empty
 * (anywhere: a HIGH task this CPU may not run still blocks LOW). With
 * no aging, a niced task waits as long as nice-0 work keeps every CPU busy:
 * under a CPU-bound mix that is forever, and the kernel's watchdog ejects
 * the scheduler ("runnable task stall"). Idle or lightly loaded, it runs fine,
 * which is why a verifier that only loads a policy without a workload (or
 * with a workload of one nice level) passes it.
 */
#include "aios/scx.bpf.h"

#define HIGH_DSQ 0
#define LOW_DSQ 1
#define NICE_0_PRIO 120

const volatile u64 slice_ns = 5000000;

void BPF_STRUCT_OPS(starve_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 dsq = p->static_prio > NICE_0_PRIO ? LOW_DSQ : HIGH_DSQ;

	aios_dsq_insert(p, dsq, slice_ns, enq_flags);
}

void BPF_STRUCT_OPS(starve_dispatch, s32 cpu, struct task_struct *prev)
{
	if (aios_dsq_move_to_local(HIGH_DSQ) || scx_bpf_dsq_nr_queued(HIGH_DSQ))
		return;
	aios_dsq_move_to_local(LOW_DSQ);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(starve_init)
{
	s32 ret = scx_bpf_create_dsq(HIGH_DSQ, -1);

	return ret ? ret : scx_bpf_create_dsq(LOW_DSQ, -1);
}

void BPF_STRUCT_OPS(starve_exit, struct scx_exit_info *ei)
{
	aios_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops starve_ops = {
	.enqueue	= (void *)starve_enqueue,
	.dispatch	= (void *)starve_dispatch,
	.init		= (void *)starve_init,
	.exit		= (void *)starve_exit,
	.name		= "corpus_starve",
};
