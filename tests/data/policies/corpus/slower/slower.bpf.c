/* corpus: correct, live, and slower than EEVDF.
 *
 * Every task that may run on CPU 0 is queued on one FIFO that only CPU 0
 * takes from; a task whose affinity excludes CPU 0 (a per-CPU kthread, a
 * task pinned elsewhere) runs on the CPU it is on. Nothing starves (one
 * FIFO, a fixed slice), nothing errors, CPU hotplug of any other CPU is
 * harmless: it passes the static, kernel-verifier and liveness stages. But
 * with more runnable tasks than one CPU can serve, the other CPUs idle
 * while work waits, so a CPU-bound batch takes about as long as it would
 * on one CPU: the performance stage must say "worse".
 */
#include "aios/scx.bpf.h"

#define CPU0_DSQ 0

const volatile u64 slice_ns = 5000000;

static __always_inline bool may_run_on_cpu0(struct task_struct *p)
{
	return bpf_cpumask_test_cpu(0, p->cpus_ptr);
}

s32 BPF_STRUCT_OPS(slower_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	return may_run_on_cpu0(p) ? 0 : prev_cpu;
}

void BPF_STRUCT_OPS(slower_enqueue, struct task_struct *p, u64 enq_flags)
{
	if (!may_run_on_cpu0(p)) {
		aios_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		return;
	}
	aios_dsq_insert(p, CPU0_DSQ, slice_ns, enq_flags);
	/* Enqueued from another CPU's run queue (a slice expired there): an
	 * idle CPU 0 would not look at its queue until its next wakeup. */
	scx_bpf_kick_cpu(0, SCX_KICK_IDLE);
}

void BPF_STRUCT_OPS(slower_dispatch, s32 cpu, struct task_struct *prev)
{
	if (cpu == 0)
		aios_dsq_move_to_local(CPU0_DSQ);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(slower_init)
{
	return scx_bpf_create_dsq(CPU0_DSQ, -1);
}

void BPF_STRUCT_OPS(slower_exit, struct scx_exit_info *ei)
{
	aios_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops slower_ops = {
	.select_cpu	= (void *)slower_select_cpu,
	.enqueue	= (void *)slower_enqueue,
	.dispatch	= (void *)slower_dispatch,
	.init		= (void *)slower_init,
	.exit		= (void *)slower_exit,
	.name		= "corpus_slower",
};
