/* counters: per-CPU counts of scheduler events, for experiment summaries.
 *
 * tp_btf programs on the sched tracepoints; no sched_ext needed, so this
 * runs on the host kernel and in the VM alike. Counting happens in a
 * per-CPU array (no atomics, no contention); user space sums the CPUs.
 * The full per-task telemetry lives elsewhere; this is the cheap summary.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "aios/counters.h"

char _license[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u64));
	__uint(max_entries, AIOS_NR_COUNTERS);
} counters SEC(".maps");

/* Anchor the enum in BTF: user space reads the counter names from it. */
enum aios_counter __aios_btf_aios_counter __attribute__((unused));

static __always_inline void bump(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		(*v)++;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	bump(AIOS_CNT_SWITCH);
	return 0;
}

SEC("tp_btf/sched_migrate_task")
int BPF_PROG(on_migrate, struct task_struct *p, int dest_cpu)
{
	bump(AIOS_CNT_MIGRATE);
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_wakeup, struct task_struct *p)
{
	bump(AIOS_CNT_WAKEUP);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(on_wakeup_new, struct task_struct *p)
{
	bump(AIOS_CNT_WAKEUP_NEW);
	return 0;
}
