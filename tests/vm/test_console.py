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


# Lines of the real emulator fault (a CI guest suite on QEMU 10 multi-threaded
# TCG, 2026-12-03): the int3 trapped at the byte before "<90>", which memory
# now holds as 66 (the first byte of a patched 2-byte NOP), not cc.
STALE_INT3 = """[  233.849217] sched_ext: BPF scheduler "freq" enabled
[  239.083687] Oops: int3: 0000 [#1] SMP NOPTI
[  239.084555] CPU: 1 UID: 0 PID: 0 Comm: swapper/1 Not tainted 7.3.4+deb13-amd64 #1 PREEMPT(lazy)
[  239.085271] RIP: 0010:sched_balance_update_blocked_averages+0x45/0x90
[  239.085919] Code: 03 1c ed e0 b0 3d b1 48 89 df e8 06 b3 ff ff 83 a3 a0 0f 00 00 03 48 89 df 48 89 c5 e8 44 17 ff ff 48 89 df e8 7c f8 ff ff 66 <90> 48 8d 7b 48 e8 71 12 e0 00 f7 c5 00 02 00 00 74 06 fb 0f 1f 44
[  239.086827] RIP: 0010:pv_native_safe_halt+0xf/0x20
[  239.086827] Code: 20 d0 c3 cc cc cc cc 0f 1f 40 00 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 f3 0f 1e fa eb 07 0f 00 2d a5 15 05 00 fb f4 <c3> cc cc cc cc 66 66 2e 0f 1f 84 00 00 00 00 00 90 90 90 90 90 90
[  239.086804] Oops: int3: 0000 [#2] SMP NOPTI
[  239.086827] RIP: 0010:sched_balance_update_blocked_averages+0x45/0x90
[  239.086827] Code: 03 1c ed e0 b0 3d b1 48 89 df e8 06 b3 ff ff 83 a3 a0 0f 00 00 03 48 89 df 48 89 c5 e8 44 17 ff ff 48 89 df e8 7c f8 ff ff 66 <90> 48 8d 7b 48 e8 71 12 e0 00 f7 c5 00 02 00 00 74 06 fb 0f 1f 44
[  239.086827] Kernel panic - not syncing: Fatal exception in interrupt
"""


def test_an_int3_on_code_memory_no_longer_holds_is_an_emulator_fault():
    rep = scan(STALE_INT3)
    assert rep.failed and rep.emulator_fault and len(rep.stale_code) == 2
    assert "sched_balance_update_blocked_averages+0x45/0x90 where memory holds 66" in rep.stale_code[0]
    assert rep.summary().startswith("emulator fault")


def test_an_int3_still_in_memory_is_a_kernel_oops():
    # Same trap, but the byte before the ip is still cc: the kernel really
    # has an int3 there (a breakpoint, a patch in progress): not the emulator.
    rep = scan(STALE_INT3.replace("ff ff 66 <90>", "ff ff cc <90>"))
    assert rep.failed and not rep.emulator_fault and rep.stale_code == []
    assert rep.summary().startswith("guest kernel panic")


def test_a_stale_int3_beside_another_oops_is_not_excused():
    rep = scan(STALE_INT3 + "[  240.0] general protection fault, probably for non-canonical address\n")
    assert rep.failed and not rep.emulator_fault


def test_an_int3_oops_without_a_code_line_is_a_kernel_oops():
    rep = scan(OOPS)
    assert rep.failed and not rep.emulator_fault
