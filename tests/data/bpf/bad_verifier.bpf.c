// SPDX-License-Identifier: GPL-2.0
/* Must be rejected by the verifier: reads past the end of a map value. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} arr SEC(".maps");

SEC("tp_btf/sched_switch")
int BPF_PROG(read_oob, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 zero = 0;
	volatile __u64 *v = bpf_map_lookup_elem(&arr, &zero);

	if (!v)
		return 0;
	return v[16];	/* 128 bytes past an 8-byte value */
}
