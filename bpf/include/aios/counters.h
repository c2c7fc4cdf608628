/* Scheduler event counters: shared by bpf/counters.bpf.c and Python. */
#ifndef AIOS_COUNTERS_H
#define AIOS_COUNTERS_H

enum aios_counter {
	AIOS_CNT_SWITCH = 0,	/* sched_switch */
	AIOS_CNT_MIGRATE,	/* sched_migrate_task */
	AIOS_CNT_WAKEUP,	/* sched_wakeup */
	AIOS_CNT_WAKEUP_NEW,	/* sched_wakeup_new */
	AIOS_NR_COUNTERS,
};

#endif
