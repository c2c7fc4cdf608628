/* Layouts shared by fifo.bpf.c and Python (mirrored from the object's BTF). */
#ifndef FIFO_INTF_H
#define FIFO_INTF_H

/* Index of each per-CPU counter in the `stats` map. Python reads the names
 * and their count from this enum in BTF; descriptions live in manifest.toml. */
enum fifo_stat {
	FIFO_STAT_DIRECT = 0,	/* woken task placed straight on an idle CPU's local DSQ */
	FIFO_STAT_QUEUED,	/* task queued on the shared DSQ */
	FIFO_STAT_DISPATCHED,	/* task moved from the shared DSQ to a CPU */
	FIFO_NR_STATS,
};

#define FIFO_SHARED_DSQ 0

#endif
