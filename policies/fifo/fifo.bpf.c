/* fifo: the aios-lab baseline, a global virtual-time scheduler.
 *
 * Every runnable task goes through one shared dispatch queue (DSQ) ordered
 * by virtual time: a task's vtime grows with the CPU time it used divided by
 * its weight, so nice levels are honoured and a task that slept does not
 * come back with an unbounded credit (its vtime is clamped to one slice
 * behind the global clock). With strict_fifo set, the queue is plain
 * arrival order instead. A waking task whose previous CPU (or any CPU) is
 * idle goes straight to that CPU's local DSQ and skips the shared queue.
 *
 * Where it fails: a single shared queue is a scalability bottleneck past a
 * few dozen CPUs, it ignores cache and NUMA locality when it picks a CPU
 * from the shared queue (any CPU takes the head), and with strict_fifo a
 * CPU hog delays interactive tasks by a full slice. It exists as the simple,
 * well-understood sched_ext baseline that learned policies are compared to.
 */
#include "aios/scx.bpf.h"
#include "intf.h"

/* Tunables, set by the loader before load (rodata). */
const volatile u64 slice_ns = 20000000;	/* 20 ms, sched_ext's default slice */
const volatile bool strict_fifo = false;

AIOS_STATS_MAP(FIFO_NR_STATS);
AIOS_BTF_EXPORT_ENUM(fifo_stat);

/* Global virtual clock: the largest vtime of a task that started running. */
static u64 vtime_now;
/* How far ahead of the clock a task's vtime may be when it is queued, in slices. */
#define FIFO_MAX_LEAD 8

s32 BPF_STRUCT_OPS(fifo_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle) {
		aios_stat_inc(&stats, FIFO_STAT_DIRECT);
		aios_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return cpu;
}

void BPF_STRUCT_OPS(fifo_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 vtime = p->scx.dsq_vtime;

	aios_stat_inc(&stats, FIFO_STAT_QUEUED);
	if (strict_fifo) {
		aios_dsq_insert(p, FIFO_SHARED_DSQ, slice_ns, enq_flags);
		return;
	}
	/* A sleeper may bank at most one slice of credit. */
	if ((s64)(vtime - (vtime_now - slice_ns)) < 0)
		vtime = vtime_now - slice_ns;
	/* ... and a low-weight task may fall at most FIFO_MAX_LEAD slices
	 * behind: one full slice at nice 19 (weight 1) is 100 slices of vtime,
	 * so under sustained load it could wait longer than the RCU stall
	 * timeout while preempted inside an RCU read section, and the kernel
	 * ejects the scheduler for the stall (found by `aios-lab verify`'s
	 * liveness stage under CPU hotplug). Bounded wait over exact weights. */
	if ((s64)(vtime - (vtime_now + FIFO_MAX_LEAD * slice_ns)) > 0)
		vtime = vtime_now + FIFO_MAX_LEAD * slice_ns;
	aios_dsq_insert_vtime(p, FIFO_SHARED_DSQ, slice_ns, vtime, enq_flags);
}

void BPF_STRUCT_OPS(fifo_dispatch, s32 cpu, struct task_struct *prev)
{
	if (aios_dsq_move_to_local(FIFO_SHARED_DSQ))
		aios_stat_inc(&stats, FIFO_STAT_DISPATCHED);
}

void BPF_STRUCT_OPS(fifo_running, struct task_struct *p)
{
	if (strict_fifo)
		return;
	if ((s64)(p->scx.dsq_vtime - vtime_now) > 0)
		vtime_now = p->scx.dsq_vtime;
}

void BPF_STRUCT_OPS(fifo_stopping, struct task_struct *p, bool runnable)
{
	if (strict_fifo)
		return;
	/* Charge the slice actually used, scaled by the inverse of the weight
	 * (100 is the weight of nice 0). */
	p->scx.dsq_vtime += (slice_ns - p->scx.slice) * 100 / p->scx.weight;
}

void BPF_STRUCT_OPS(fifo_enable, struct task_struct *p)
{
	p->scx.dsq_vtime = vtime_now;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(fifo_init)
{
	return scx_bpf_create_dsq(FIFO_SHARED_DSQ, -1);
}

void BPF_STRUCT_OPS(fifo_exit, struct scx_exit_info *ei)
{
	aios_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops fifo_ops = {
	.select_cpu	= (void *)fifo_select_cpu,
	.enqueue	= (void *)fifo_enqueue,
	.dispatch	= (void *)fifo_dispatch,
	.running	= (void *)fifo_running,
	.stopping	= (void *)fifo_stopping,
	.enable		= (void *)fifo_enable,
	.init		= (void *)fifo_init,
	.exit		= (void *)fifo_exit,
	.name		= "fifo",
};
