/* sched_ext declarations for aios-lab policies, written for CO-RE.
 *
 * Every kfunc a policy calls is declared here and nowhere else, __weak so
 * that an object loads on a kernel lacking some of them (a policy tests
 * bpf_ksym_exists() before calling one that may be missing). What differs
 * between kernel versions (renamed kfuncs, struct fields that come and go)
 * is handled in aios/core_fixes.bpf.h, which this header includes.
 */
#ifndef AIOS_SCX_BPF_H
#define AIOS_SCX_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "aios/exit_info.h"

char _license[] SEC("license") = "GPL";

/* ---- sched_ext kfuncs ---- */
s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __ksym __weak;
s32 scx_bpf_select_cpu_dfl(struct task_struct *p, s32 prev_cpu, u64 wake_flags, bool *is_idle) __ksym __weak;
s32 scx_bpf_dsq_nr_queued(u64 dsq_id) __ksym __weak;
struct task_struct *scx_bpf_dsq_peek(u64 dsq_id) __ksym __weak;
void scx_bpf_kick_cpu(s32 cpu, u64 flags) __ksym __weak;
void scx_bpf_error_bstr(char *fmt, unsigned long long *data, u32 data__sz) __ksym __weak;
void scx_bpf_exit_bstr(s64 exit_code, char *fmt, unsigned long long *data, u32 data__sz) __ksym __weak;
u64 scx_bpf_now(void) __ksym __weak;
s32 scx_bpf_pick_idle_cpu(const struct cpumask *cpus_allowed, u64 flags) __ksym __weak;
const struct cpumask *scx_bpf_get_idle_cpumask(void) __ksym __weak;
void scx_bpf_put_idle_cpumask(const struct cpumask *cpumask) __ksym __weak;
bool scx_bpf_test_and_clear_cpu_idle(s32 cpu) __ksym __weak;
s32 scx_bpf_task_cpu(const struct task_struct *p) __ksym __weak;
u32 scx_bpf_nr_cpu_ids(void) __ksym __weak;
u32 scx_bpf_cpuperf_cap(s32 cpu) __ksym __weak;
u32 scx_bpf_cpuperf_cur(s32 cpu) __ksym __weak;
void scx_bpf_cpuperf_set(s32 cpu, u32 perf) __ksym __weak;

/* Queue insertion and moving, under every name a kernel may have; call them
 * through aios_dsq_insert() and friends (aios/core_fixes.bpf.h). A
 * "___aios" suffix makes libbpf look up the name before it, which lets us
 * ask for the literal "___v2" symbols. */
void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
bool scx_bpf_dsq_insert___v2___aios(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
void scx_bpf_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime, u64 enq_flags) __ksym __weak;
bool scx_bpf_dsq_move_to_local(u64 dsq_id) __ksym __weak;
bool scx_bpf_dsq_move_to_local___v2___aios(u64 dsq_id, u64 enq_flags) __ksym __weak;
void scx_bpf_dispatch(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
void scx_bpf_dispatch_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime, u64 enq_flags) __ksym __weak;
bool scx_bpf_consume(u64 dsq_id) __ksym __weak;

/* ---- generic kfuncs ---- */
bool bpf_cpumask_test_cpu(u32 cpu, const struct cpumask *cpumask) __ksym __weak;

#include "aios/core_fixes.bpf.h"

/* Open-coded numeric iterator (6.4+): the verifier checks the loop body once
 * per distinct state instead of once per iteration, which is what lets a
 * policy scan every CPU inside select_cpu without hitting the 1M-insn limit. */
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __weak __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __weak __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __weak __ksym;

/* for (i = start; i < end; i++) over the iterator `it`, with i known to the
 * verifier to be in range. The caller declares `struct bpf_iter_num it`,
 * leaves the loop only by break (never return: the iterator must be
 * released) and calls bpf_iter_num_destroy(&it) after it. Not a cleanup()
 * attribute: clang 14 emits no BTF for an extern called only from one. */
#define aios_for(i, start, end, it)							\
	for (bpf_iter_num_new(&(it), (start), (end));					\
	     ({ int *___v = bpf_iter_num_next(&(it)); ___v ? ((i) = *___v, 1) : 0; });	\
	     )

/* scx_bpf_error("fmt", args...): eject the scheduler with a message. */
#define aios_error(fmt, args...)						\
({										\
	static char ___fmt[] = fmt;						\
	unsigned long long ___param[___bpf_narg(args)];				\
	_Pragma("GCC diagnostic push")						\
	_Pragma("GCC diagnostic ignored \"-Wint-conversion\"")			\
	___bpf_fill(___param, args);						\
	_Pragma("GCC diagnostic pop")						\
	scx_bpf_error_bstr(___fmt, ___param, sizeof(___param));			\
})

/* clang puts a type into BTF only when something uses it, and user space
 * reads shared enums (stat names) from BTF: anchor them with a global. */
#define AIOS_BTF_EXPORT_ENUM(name) enum name __aios_btf_##name __attribute__((unused))

#define BPF_STRUCT_OPS(name, args...) SEC("struct_ops/" #name) BPF_PROG(name, ##args)
#define BPF_STRUCT_OPS_SLEEPABLE(name, args...) SEC("struct_ops.s/" #name) BPF_PROG(name, ##args)

/* Filled in ops.exit; user space reads it from .bss after the kernel says
 * the scheduler is gone, and reports kind, reason and message. */
struct aios_exit_info aios_exit = {};

static __always_inline void aios_record_exit(struct scx_exit_info *ei)
{
	aios_exit.kind = ei->kind;
	aios_exit.exit_code = ei->exit_code;
	aios_exit.exit_cpu = aios_exit_info_cpu(ei);
	aios_exit.flags = aios_exit_info_flags(ei);
	/* when the kernel disabled us: how long a rollback took is measured from here */
	aios_exit.at_ns = bpf_ktime_get_ns();
	bpf_probe_read_kernel_str(aios_exit.reason, sizeof(aios_exit.reason), ei->reason);
	bpf_probe_read_kernel_str(aios_exit.msg, sizeof(aios_exit.msg), ei->msg);
	bpf_probe_read_kernel_str(aios_exit.dump, sizeof(aios_exit.dump), ei->dump);
	__sync_fetch_and_add(&aios_exit.nr_exits, 1);
}

/* Per-CPU statistics: an array indexed by a policy's stat enum, summed in
 * user space. */
#define AIOS_STATS_MAP(nr)							\
struct {									\
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);				\
	__uint(key_size, sizeof(u32));						\
	__uint(value_size, sizeof(u64));					\
	__uint(max_entries, nr);						\
} stats SEC(".maps")

static __always_inline void aios_stat_inc(void *map, u32 idx)
{
	u64 *cnt = bpf_map_lookup_elem(map, &idx);

	if (cnt)
		(*cnt)++;
}

#endif /* AIOS_SCX_BPF_H */
