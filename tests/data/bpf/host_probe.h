/* Types shared by host_probe.bpf.c and the Python tests.
 *
 * Python never re-declares these: it reads them back from the object's BTF
 * (aios_lab.bpf.btf), and tests/bpf/test_btf.py checks that the result agrees
 * with the C compiler's sizeof/offsetof.
 */
#ifndef AIOS_HOST_PROBE_H
#define AIOS_HOST_PROBE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define HP_COMM_LEN 16

enum hp_kind {
	HP_EXEC = 1,
	HP_SWITCH = 2,
};

/* Deliberately irregular: padding holes, a nested union, an array of
 * structs with tail padding, so layout mirroring is really exercised. */
struct hp_pair {
	__u16 a;
	__u8 b;
};

struct hp_event {
	__u32 kind;		/* enum hp_kind */
	__u32 pid;
	__u64 ts_ns;
	__u64 magic;		/* copied from the `magic` rodata tunable */
	char comm[HP_COMM_LEN];
	__u8 cpu_lo;
	__u16 flags;
	__s32 seq;
	union {
		__u64 switches;
		__u32 halves[2];
	} u;
	struct hp_pair pairs[3];
	char label[8];		/* copied from the `label` rodata tunable */
};

struct hp_key {
	__u32 pid;
	__u32 slot;
};

struct hp_val {
	__u64 count;
	__s64 delta;
};

#endif
