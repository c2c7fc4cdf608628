/* Exit information a sched_ext policy records when the kernel disables it.
 *
 * Shared by BPF (policies include scx.bpf.h, which fills it from
 * struct scx_exit_info in ops.exit) and Python (aios_lab.sched reads it
 * from the policy's .bss after detach). Python mirrors it from the object's
 * BTF; tests check the mirror against the C compiler.
 */
#ifndef AIOS_EXIT_INFO_H
#define AIOS_EXIT_INFO_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define AIOS_EXIT_REASON_LEN 128
#define AIOS_EXIT_MSG_LEN 1024
/* The head of the kernel's debug dump (scx_dump_state: the exiting CPU's
 * run queue and tasks): the evidence a rollback keeps with an ejection. */
#define AIOS_EXIT_DUMP_LEN 8192

struct aios_exit_info {
	__s32 kind;		/* enum scx_exit_kind; 0 until the policy exits */
	__s32 exit_cpu;
	__s64 exit_code;
	__u64 flags;
	__u64 at_ns;		/* bpf_ktime_get_ns() in ops.exit: CLOCK_MONOTONIC, as user space's */
	__u64 nr_exits;		/* bumped last: nonzero means the record is complete */
	char reason[AIOS_EXIT_REASON_LEN];
	char msg[AIOS_EXIT_MSG_LEN];
	char dump[AIOS_EXIT_DUMP_LEN];
};

#endif /* AIOS_EXIT_INFO_H */
