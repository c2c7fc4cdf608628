// SPDX-License-Identifier: GPL-2.0
/* Host-kernel probe for the aios_lab.bpf tests: counts context switches in a
 * PERCPU_ARRAY, reports execs (and optionally every Nth switch) through a ring
 * buffer, and has rodata tunables whose effect the tests can observe. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "host_probe.h"

char LICENSE[] SEC("license") = "GPL";

/* Tunables, set from Python before load. */
const volatile __u64 magic = 0;
const volatile __u32 switch_weight = 1;	/* added to the counter per switch */
const volatile __u32 switch_every = 0;	/* emit a record every N switches; 0 = never */
const volatile bool exec_events = true;
const volatile char label[8] = "default";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} switches SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Only touched from user space (CRUD and batch tests). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct hp_key);
	__type(value, struct hp_val);
} table SEC(".maps");

/* Never written by the kernel side: it only makes clang emit struct hp_event
 * and enum hp_kind into BTF (types of locals are not always emitted). */
struct hp_event last_event = {};
enum hp_kind last_kind = HP_EXEC;

static __always_inline void fill_label(struct hp_event *e)
{
	for (int i = 0; i < 8; i++)
		e->label[i] = label[i];
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 zero = 0;
	__u64 *cnt = bpf_map_lookup_elem(&switches, &zero);
	struct hp_event *e;

	if (!cnt)
		return 0;
	*cnt += switch_weight;
	if (!switch_every || (*cnt / switch_weight) % switch_every)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = HP_SWITCH;
	e->pid = BPF_CORE_READ(next, tgid);
	e->ts_ns = bpf_ktime_get_ns();
	e->magic = magic;
	e->u.switches = *cnt;
	fill_label(e);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct hp_event *e;

	if (!exec_events)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = HP_EXEC;
	e->pid = BPF_CORE_READ(p, tgid);
	e->ts_ns = bpf_ktime_get_ns();
	e->magic = magic;
	e->cpu_lo = bpf_get_smp_processor_id() & 0xff;
	e->seq = -1;
	e->pairs[2].a = 0xbeef;
	e->pairs[2].b = 0x7f;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	fill_label(e);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
