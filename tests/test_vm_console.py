from aios_lab.vm.console import scan

BOOT = """[    0.000000] Linux version 7.3.4+deb13-amd64
[    1.234567] sched_ext: BPF scheduler "stall" disabled (runnable task stall)
[    1.234600] sched_ext: stall: aios-stallme[211] failed to run for 1.512s
"""
PANIC = BOOT + """[    9.100000] sysrq: Trigger a crash
[    9.100100] Kernel panic - not syncing: sysrq triggered crash
"""
OOPS = BOOT + """[    5.000000] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI
[    5.000001] RIP: 0010:sched_clock_cpu+0x10/0x190
"""
LOCKUP = "[   30.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [sh:99]\n"


def test_clean_console_with_sched_ext_exit():
    rep = scan(BOOT)
    assert not rep.failed and rep.panic is None and rep.oopses == []
    assert any("runnable task stall" in s for s in rep.sched_ext)


def test_panic_is_failure():
    rep = scan(PANIC)
    assert rep.failed and "sysrq triggered crash" in rep.panic
    assert rep.summary().startswith("guest kernel panic")


def test_oops_is_failure_even_without_panic():
    rep = scan(OOPS)
    assert rep.failed and rep.oopses[0].startswith("Oops: int3")


def test_soft_lockup_is_a_hang_report_not_an_oops():
    rep = scan(LOCKUP)
    assert rep.hangs and not rep.oopses and not rep.failed
