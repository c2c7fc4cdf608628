"""The written pass criteria of `aios-lab verify`, as numbers.

docs/verifier.md states each one and why; tests read them from here, so the
documentation, the code and the tests cannot drift apart silently.
"""
from __future__ import annotations

# -- kernel verifier ----------------------------------------------------------------------
# The verifier gives up at 1M processed instructions (BPF_COMPLEXITY_LIMIT_INSNS).
# A program that already needs a quarter of it is one refactor, one clang
# version or one kernel away from being rejected.
INSN_LIMIT = 1_000_000
MAX_INSN_FRACTION = 0.25
# Against a parent report (--parent): a program may grow its processed
# instructions by at most this factor (and by at least SLACK instructions,
# so that tiny programs may change shape).
MAX_INSN_GROWTH = 1.5
INSN_GROWTH_SLACK = 2_000

# -- liveness ----------------------------------------------------------------------------
# The watchdog timeout the policy runs under during liveness, unless the
# policy sets a shorter one itself (struct sched_ext_ops.timeout_ms). The
# kernel's default is 30 s: far too long to notice a stall in a short run.
# 3 s ejected fifo (weighted vtime, 20 ms slices) under TCG: a nice-19 task
# legitimately waited 3.8 s; at 5 s, fifo left khugepaged (nice 19) waiting
# 5.35 s under the stress mix. 10 s keeps a 2x margin over that and still
# catches a real starvation, which never ends.
WATCHDOG_MS = 10000
# How long the stress mix runs before the CPU hotplug cycle. The kernel's
# watchdog looks every timeout/2 and ejects for a task runnable for longer
# than the timeout, so a stall that starts at the attach is seen between 1x
# and 1.5x the timeout after it; the hotplug cycle then re-attaches a policy
# without cpu_offline and starts the clock again. At 12 s (1.2x) CI once saw
# corpus_starve pass. 1.5x plus 2 s of margin for a slow attach under TCG.
STRESS_S = 1.5 * WATCHDOG_MS / 1000 + 2.0
# After the hotplug cycle, the policy must keep running this long.
SETTLE_S = 2.0
# sched_ext's own event counters (/sys/kernel/sched_ext/root/events), summed
# over the attachments of one liveness run: the most each may reach. Bypass
# mode (the kernel scheduling in its place because it misbehaved or is being
# torn down) must never be entered while the policy is live; falling back
# from a failed CPU selection or dispatching to an offline CPU's queue a few
# times under hotplug is normal.
EVENT_LIMITS = {
    "SCX_EV_BYPASS_ACTIVATE": 0,
    "SCX_EV_BYPASS_DISPATCH": 0,
    "SCX_EV_BYPASS_DURATION": 0,
    "SCX_EV_SELECT_CPU_FALLBACK": 1000,
    "SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE": 100,
}
# dmesg lines mentioning sched_ext that mean trouble.
DMESG_ERROR_WORDS = ("error", "stall", "WARNING", "BUG", "Oops", "failed")

# -- deploy ---------------------------------------------------------------------------------
# A deploy (policy deploy, the root service) admits an entry whose latest
# verify run passed *and ran at least these stages*: a report of the static
# stage alone says nothing about how the object behaves in a kernel. The
# performance stage is not required: on a platform that cannot judge
# placement (a TCG guest on a busy host without --rt) it cannot pass, and
# its verdict, where it ran, is in the run's pass or fail already.
DEPLOY_STAGES = ("static", "verifier", "liveness")

# -- performance ---------------------------------------------------------------------------
# The workload the candidate is compared on unless the caller names another
# (workloads/<name>.toml): a CPU-bound batch, 2 spinners per CPU. It is what
# the load-balancing policies (fifo, mllb) are for: keeping every CPU busy.
PERF_WORKLOAD = "batch-small"
# Interleaved runs per arm (candidate, eevdf, and the deployed policy when
# given); the minimum is 5.
PERF_RUNS = 5
PERF_MIN_RUNS = 5
# Family-wise error rate of the stage, Bonferroni-corrected over every
# (metric, reference arm) comparison it makes: each comparison's interval
# has level 1 - PERF_ALPHA / k.
PERF_ALPHA = 0.05
# The metrics judged (lower is better for each) and their non-inferiority
# margins: a comparison is "worse" only when its whole interval on the ratio
# candidate / reference lies above 1 + margin.
PERF_MARGINS = {
    "makespan_s": 0.05,      # the workload's wall time (the primary metric)
    "runq_wait_s": 0.05,     # run-queue wait of all tasks, summed, from /proc/schedstat (a guard)
}
PERF_PRIMARY = "makespan_s"
# The placement control (bench.control) run once per boot before the first
# performance stage: spinners pinned to one CPU vs free must differ by at
# least bench.control.THRESHOLD, or this platform cannot tell a policy that
# balances from one that does not, and the stage cannot pass.
PERF_CONTROL_LOOPS = 15000
PERF_CONTROL_REPEAT = 2
