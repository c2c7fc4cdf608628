/* stall: a deliberately broken policy, for tests only.
 *
 * It schedules like a minimal global FIFO, except for tasks whose comm equals
 * the `victim` tunable. With mode = 0 (stall) those are queued on a DSQ that
 * dispatch never consumes, so the kernel's watchdog must eject the scheduler
 * after timeout_ms ("runnable task stall"). With mode = 1 (error) enqueueing
 * a victim calls scx_bpf_error(), which ejects it with our message. Either
 * way the system must fall back to the fair class and keep running.
 */
#include "aios/scx.bpf.h"

#define SHARED_DSQ 0
#define BLACKHOLE_DSQ 1
#define COMM_LEN 16

const volatile u32 mode = 0;
const volatile char victim[COMM_LEN] = "aios-stallme";

static __always_inline bool is_victim(struct task_struct *p)
{
	char comm[COMM_LEN];
	int i;

	if (bpf_probe_read_kernel_str(comm, sizeof(comm), p->comm) < 0)
		return false;
	for (i = 0; i < COMM_LEN; i++) {
		if (comm[i] != victim[i])
			return false;
		if (!comm[i])
			return true;
	}
	return true;
}

void BPF_STRUCT_OPS(stall_enqueue, struct task_struct *p, u64 enq_flags)
{
	if (is_victim(p)) {
		if (mode == 1) {
			aios_error("stall policy: deliberate error on %s[%d]", p->comm, p->pid);
			return;
		}
		aios_dsq_insert(p, BLACKHOLE_DSQ, 5000000, enq_flags);
		return;
	}
	aios_dsq_insert(p, SHARED_DSQ, 5000000, enq_flags);
}

void BPF_STRUCT_OPS(stall_dispatch, s32 cpu, struct task_struct *prev)
{
	aios_dsq_move_to_local(SHARED_DSQ);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(stall_init)
{
	s32 ret = scx_bpf_create_dsq(SHARED_DSQ, -1);

	return ret ? ret : scx_bpf_create_dsq(BLACKHOLE_DSQ, -1);
}

void BPF_STRUCT_OPS(stall_exit, struct scx_exit_info *ei)
{
	aios_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops stall_ops = {
	.enqueue	= (void *)stall_enqueue,
	.dispatch	= (void *)stall_dispatch,
	.init		= (void *)stall_init,
	.exit		= (void *)stall_exit,
	/* Short watchdog so tests see the ejection within seconds. */
	.timeout_ms	= 1500,
	.name		= "stall",
};
