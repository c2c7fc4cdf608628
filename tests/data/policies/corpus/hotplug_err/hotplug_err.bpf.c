/* corpus: errors only under CPU hotplug.
 *
 * A global FIFO that implements ops.cpu_online/cpu_offline, which tells the
 * kernel it handles hotplug itself (so the kernel does not simply restart
 * it), but whose offline handler treats a CPU going away as impossible and
 * calls scx_bpf_error(). Under any workload without hotplug it is a correct
 * scheduler; only a hotplug cycle exposes it.
 */
#include "aios/scx.bpf.h"

#define SHARED_DSQ 0

const volatile u64 slice_ns = 5000000;

void BPF_STRUCT_OPS(hotplug_err_enqueue, struct task_struct *p, u64 enq_flags)
{
	aios_dsq_insert(p, SHARED_DSQ, slice_ns, enq_flags);
}

void BPF_STRUCT_OPS(hotplug_err_dispatch, s32 cpu, struct task_struct *prev)
{
	aios_dsq_move_to_local(SHARED_DSQ);
}

void BPF_STRUCT_OPS(hotplug_err_cpu_online, s32 cpu)
{
}

void BPF_STRUCT_OPS(hotplug_err_cpu_offline, s32 cpu)
{
	aios_error("cpu %d went offline: this policy assumes a fixed set of CPUs", cpu);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(hotplug_err_init)
{
	return scx_bpf_create_dsq(SHARED_DSQ, -1);
}

void BPF_STRUCT_OPS(hotplug_err_exit, struct scx_exit_info *ei)
{
	aios_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops hotplug_err_ops = {
	.enqueue	= (void *)hotplug_err_enqueue,
	.dispatch	= (void *)hotplug_err_dispatch,
	.cpu_online	= (void *)hotplug_err_cpu_online,
	.cpu_offline	= (void *)hotplug_err_cpu_offline,
	.init		= (void *)hotplug_err_init,
	.exit		= (void *)hotplug_err_exit,
	.name		= "corpus_hotplug_err",
};
